"""FP8 quantization: both backends quantize, reload through from_pretrained, stay accurate and small."""

import json

import pytest
import torch
import toy
from click.testing import CliRunner

from aiprod_core import registry
from aiprod_core.errors import AiprodError
from aiprod_core.quantize import FP8Linear, relative_l2


@pytest.fixture(autouse=True)
def toy_registry(monkeypatch):
    reg = registry.Registry()
    reg.register_module(toy, "toy", distribution="toy-dist")
    monkeypatch.setattr(registry, "_REGISTRY", reg)


def _size(folder):
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


@pytest.mark.parametrize("backend", ["torch-fp8", "quanto"])
def test_quantize_reload_and_error(tmp_path, backend):
    if backend == "quanto":
        pytest.importorskip("optimum.quanto")
    torch.manual_seed(0)
    model = toy.Toy(dim=256, depth=4)
    src = model.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    res = CliRunner().invoke(
        __import__("aiprod_core.cli", fromlist=["cli"]).cli,
        ["--quiet", "quantize", str(src), str(tmp_path / "fp8"), "--backend", backend, "--max-shard-size", "100KB"],
    )
    assert res.exit_code == 0, res.output + str(res.exception)
    dst = tmp_path / "fp8"
    qmap = json.loads((dst / "quantization_map.json").read_text())
    assert sorted(qmap) == [f"blocks.{i}" for i in range(4)]  # head excluded by default
    assert _size(dst) <= 0.55 * _size(src)
    assert len(list(dst.glob("model-*.safetensors"))) > 1  # streamed into several shards
    loaded = toy.Toy.from_pretrained(dst)  # same path as any component, verified first
    ref = toy.Toy.from_pretrained(src)
    x = torch.randn(32, 256, generator=torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    with torch.no_grad():
        err = relative_l2(loaded(x), ref(x))
    print(f"{backend}: relative L2 vs bf16 = {err:.4f}, size ratio {_size(dst) / _size(src):.3f}")
    assert err <= 0.05
    if backend == "torch-fp8":
        assert isinstance(loaded.blocks[0], FP8Linear) and loaded.blocks[0].weight.dtype == torch.float8_e4m3fn


def test_refuses_existing_output_and_unknown_backend(tmp_path):
    from aiprod_core.quantize import get_quantizer

    src = toy.Toy(dim=16).save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    with pytest.raises(AiprodError, match="already exists"):
        get_quantizer("torch-fp8").quantize_folder(src, tmp_path / "out", progress=False)
    with pytest.raises(AiprodError, match="unknown quantization backend"):
        get_quantizer("int3")


def test_exclude_patterns_keep_layers_in_high_precision(tmp_path):
    from aiprod_core.quantize import get_quantizer

    src = toy.Toy(dim=16, depth=3).save_pretrained(tmp_path / "src")
    dst = get_quantizer("torch-fp8").quantize_folder(src, tmp_path / "dst", exclude=["blocks.1"], progress=False)
    assert sorted(json.loads((dst / "quantization_map.json").read_text())) == ["blocks.0", "blocks.2"]
    loaded = toy.Toy.from_pretrained(dst)
    assert isinstance(loaded.blocks[1], torch.nn.Linear) and isinstance(loaded.blocks[0], FP8Linear)


def test_quantized_weights_run_in_a_pipeline_and_stay_fp8(tmp_path):
    from aiprod_core.pipeline import ComponentRef, RunContext
    from aiprod_core.quantize import get_quantizer

    src = toy.Toy(dim=16).save_pretrained(tmp_path / "src")
    dst = get_quantizer("torch-fp8").quantize_folder(src, tmp_path / "fp8", progress=False)
    ctx = RunContext(source=tmp_path / "p.yaml", device=torch.device("cpu"), dtype=torch.bfloat16,
                     registry=registry.get_registry())
    model = ComponentRef(name="toy", weights=str(dst)).load(ctx)
    assert model.blocks[0].weight.dtype == torch.float8_e4m3fn
    assert model(torch.randn(2, 16)).shape == (2, 1)
