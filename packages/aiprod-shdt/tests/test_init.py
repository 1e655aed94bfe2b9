"""Sharded start (aiprod_shdt.init) under torchrun x2 (gloo): a ~1B-parameter SHDT materialised shard
by shard keeps each rank's peak RSS below the model's fp32 size; random init and loading a component
folder give the same weights whatever the world size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aiprod_core.store import write_manifest
from aiprod_shdt.init import init_parameters_, init_rule, load_shards_, materialize
from aiprod_shdt.model import SHDT, Modulation
from aiprod_shdt.presets import PRESETS


def _tiny_meta(**over) -> SHDT:
    with torch.device("meta"):
        return SHDT(**{**PRESETS["tiny"], **over})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("init")
    torch.manual_seed(5)
    ref = SHDT(**PRESETS["tiny"])
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p))
    ref.save_pretrained(out / "store" / "tiny")
    write_manifest(out / "store")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).parent / "init_worker.py"), str(out), str(out / "store" / "tiny")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, ref, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_each_rank_stays_below_the_full_fp32_model(run):
    _, _, reports = run
    full_bytes = reports[0]["parameters"] * 4
    assert reports[0]["parameters"] > 0.9e9
    assert reports[0]["local_parameters"] + reports[1]["local_parameters"] == reports[0]["parameters"]
    print(f"fp32 model {full_bytes / 2**30:.2f} GiB; peak RSS per rank "
          + ", ".join(f"{r['peak_rss_bytes'] / 2**30:.2f} GiB" for r in reports))
    for r in reports:
        assert r["peak_rss_bytes"] < full_bytes, (r["peak_rss_bytes"] / 2**30, full_bytes / 2**30)
        assert 0.3 < r["nonzero_fraction"] < 0.95  # filled (Xavier), with AdaLN-zero rows left at zero


@pytest.mark.slow
def test_random_init_does_not_depend_on_the_world_size(run):
    out, _, _ = run
    two = load_file(str(out / "init_ws2.safetensors"))
    one = materialize(_tiny_meta(), "cpu", seed=3).state_dict()
    assert two.keys() == one.keys()
    for k in one:
        assert torch.equal(one[k], two[k]), k
    other = materialize(_tiny_meta(), "cpu", seed=4).state_dict()
    assert not torch.equal(other["double_blocks.0.video.qkv.weight"], one["double_blocks.0.video.qkv.weight"])


@pytest.mark.slow
def test_sharded_load_equals_the_folder(run):
    out, ref, _ = run
    loaded = load_file(str(out / "loaded_ws2.safetensors"))
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded[k], v), k
    single = _tiny_meta().to_empty(device="cpu")
    load_shards_(single, out / "store" / "tiny")
    for k, v in ref.state_dict().items():
        assert torch.equal(single.state_dict()[k], v), k


@pytest.mark.slow
def test_a_convolution_head_grown_on_a_folder_does_not_depend_on_the_world_size(run, tmp_path, tiny_config):
    """torchrun x2 reads the folder and draws the head (init_worker.py, step 4) as the recipe does in one process."""
    from aiprod_shdt.train import build_model

    out, ref, _ = run
    two = load_file(str(out / "grown_ws2.safetensors"))
    cfg = tiny_config(tmp_path, model={"init_weights": str(out / "store" / "tiny"), "config": {"out_conv": 8}})
    assert cfg.train.seed == 0  # init_worker.py draws the head with seed 0
    one = build_model(cfg).state_dict()
    assert two.keys() == one.keys() == {*ref.state_dict(), "out_conv.conv1.weight", "out_conv.conv1.bias",
                                        "out_conv.conv2.weight", "out_conv.conv2.bias"}
    for k in one:
        assert torch.equal(one[k], two[k]), k
    for k, v in ref.state_dict().items():
        assert torch.equal(one[k], v), k
    assert one["out_conv.conv1.weight"].abs().sum() > 0 and not one["out_conv.conv2.weight"].any()


@pytest.mark.slow
def test_a_patch_size_grown_on_a_folder_does_not_depend_on_the_world_size(run, tmp_path, tiny_config):
    """torchrun x2 reads the folder into a patch-4 model (init_worker.py, step 5) as the recipe does in one
    process; only the patch embedding and the output layer differ from the folder's."""
    from aiprod_shdt.train import build_model

    out, ref, _ = run
    two = load_file(str(out / "repatched_ws2.safetensors"))
    cfg = tiny_config(tmp_path, model={"init_weights": str(out / "store" / "tiny"), "config": {"patch_size": 4}})
    one = build_model(cfg).state_dict()
    assert two.keys() == one.keys() == ref.state_dict().keys()
    for k in one:
        assert torch.equal(one[k], two[k]), k
    changed = {k for k, v in ref.state_dict().items() if v.shape != one[k].shape or not torch.equal(one[k], v)}
    assert changed == {"video_in.weight", "final.linear.weight", "final.linear.bias"}
    assert one["video_in.weight"].shape == (64, 16 * 4 * 4)


@pytest.mark.parametrize("over", [{}, {"out_conv": 8}])
def test_init_rules_mirror_reset_parameters(over):
    torch.manual_seed(0)
    ref = SHDT(**{**PRESETS["tiny"], **over})  # reset_parameters
    ours = materialize(_tiny_meta(**over), "cpu", seed=0)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        kind, scale = init_rule(ours, name)
        assert bool((p == 0).all()) == bool((q == 0).all()), name
        assert bool((p == 1).all()) == bool((q == 1).all()), name
        if kind == "uniform":
            assert p.abs().max() <= scale and q.abs().max() <= scale, name
            assert float(p.std()) == pytest.approx(float(q.std()), rel=0.25), name
    assert any(isinstance(m, Modulation) for m in ours.modules())
    init_parameters_(ours, seed=0, names={"video_in.weight"})  # a subset is allowed


def test_missing_tensors_are_one_clear_error(tmp_path):
    from aiprod_core.errors import AiprodError

    ref = SHDT(**PRESETS["tiny"])
    ref.save_pretrained(tmp_path / "store" / "tiny")
    write_manifest(tmp_path / "store")
    with torch.device("meta"):
        bigger = SHDT(**{**PRESETS["tiny"], "depth_single": 3})
    bigger.to_empty(device="cpu")
    with pytest.raises(AiprodError, match="not in the weights"):
        load_shards_(bigger, tmp_path / "store" / "tiny")
