"""LoRA at inference: the peft adapters the shdt trainer exports, loaded, fused, unfused, verified."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from aiprod_core.errors import AiprodError, VerificationError
from aiprod_core.store import write_manifest
from aiprod_pipelines.lora import load_lora

peft = pytest.importorskip("peft")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([nn.ModuleDict({"qkv": nn.Linear(8, 24), "proj": nn.Linear(8, 8)})
                                     for _ in range(2)])

    def forward(self, x):
        for b in self.blocks:
            x = x + b["proj"](b["qkv"](x)[..., :8])
        return x


def export_adapter(tmp_path, r=4, alpha=8.0):
    """What aiprod_shdt.train exports: peft-injected tensors by their peft names + adapter_config.json."""
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["qkv", "proj"]),
                                         Tiny(), adapter_name="default")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x = torch.randn(3, 8, generator=g)
    expected = model(x)  # peft's own forward: the reference
    folder = tmp_path / "lora"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if ".lora_" in k},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": alpha,
                                                            "target_modules": ["qkv", "proj"]}))
    write_manifest(folder)
    return folder, x, expected


def test_unfused_fused_unfused_match_peft(tmp_path):
    folder, x, expected = export_adapter(tmp_path)
    base = Tiny()
    plain = base(x)
    lora = load_lora(base, folder, scale=1.0)
    assert len(lora.layers) == 4
    assert torch.allclose(base(x), expected, atol=1e-5)
    lora.fuse()
    assert not lora._deltas and torch.allclose(base(x), expected, atol=1e-5)
    lora.unfuse()
    assert torch.allclose(base(x), expected, atol=1e-5)
    lora.remove()
    assert torch.allclose(base(x), plain, atol=1e-5)


def test_scale_zero_is_the_base_and_half_is_between(tmp_path):
    folder, x, expected = export_adapter(tmp_path)
    base = Tiny()
    plain = base(x)
    lora = load_lora(base, folder, scale=0.0)
    assert torch.allclose(base(x), plain, atol=1e-6)
    lora.remove()
    load_lora(base, folder, scale=0.5)
    half = base(x)
    assert not torch.allclose(half, plain, atol=1e-3) and not torch.allclose(half, expected, atol=1e-3)


def test_adapter_is_verified_and_must_fit(tmp_path):
    folder, _, _ = export_adapter(tmp_path)
    data = bytearray((folder / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "adapter_model.safetensors").write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="sha256"):
        load_lora(Tiny(), folder)
    folder2, _, _ = export_adapter(tmp_path / "b")
    other = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(AiprodError, match="not a module of Sequential"):
        load_lora(other, folder2)
    (folder2 / "MANIFEST.json").unlink()
    with pytest.raises(VerificationError, match="aiprod manifest"):
        load_lora(Tiny(), folder2)


def test_pipeline_load_fuse_unfuse_with_demo_shdt(tmp_path):
    """A LoRA on the demo SHDT through TextToVideoPipeline: fused and unfused give the same clip, unload restores."""
    import aiprod_core.registry as registry_mod

    if ("video-denoiser", "shdt") not in registry_mod.get_registry().components:
        pytest.skip("aiprod-shdt not installed")
    REPO = __import__("pathlib").Path(__file__).resolve().parents[3]  # not `from conftest`: another package's conftest may hold that name in the full run

    from aiprod_pipelines.api import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(REPO / "weights/tiny", speech=None, upsampler=None)
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_alpha=2.0, target_modules=["qkv", "linear1"]),
                                         type(pipe.denoiser).from_config(pipe.denoiser.config), adapter_name="default")
    g = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.state_dict().items() if ".lora_" in k}
    folder = tmp_path / "shdt-lora"
    folder.mkdir()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2.0}))
    write_manifest(folder)
    kw = dict(num_inference_steps=2, seed=0, progress=False)
    base = pipe.generate_videos(["a red circle"], **kw)[0]
    pipe.load_lora(folder, scale=1.0)
    unfused = pipe.generate_videos(["a red circle"], **kw)[0]
    fused = pipe.fuse_lora().generate_videos(["a red circle"], **kw)[0]
    assert (unfused - base).abs().mean() > 1e-3  # the adapter changes the clip
    assert (fused - unfused).abs().max() < 1e-3
    pipe.unload_lora()
    assert (pipe.generate_videos(["a red circle"], **kw)[0] - base).abs().max() < 1e-4
    # the same adapter through a YAML: loras: [{path, scale}]
    import yaml

    from aiprod_core.pipeline import run_document
    from aiprod_pipelines.media import read_mp4

    doc = {"pipeline": "text-to-video", "prompt": "a red circle", "steps": 2, "guidance_scale": 4.0,
           "text_encoder": {"name": "gemma3-lora", "weights": str(REPO / "weights/tiny/text_encoder")},
           "denoiser": {"name": "shdt", "weights": str(REPO / "weights/tiny/shdt")},
           "autoencoder": {"name": "hwvae", "weights": str(REPO / "weights/tiny/hwvae")}}
    clips = {}
    for name, loras in (("plain", []), ("lora", [{"path": str(folder), "scale": 1.0}])):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**doc, "output": str(tmp_path / f"{name}.mp4"),
                                                               "loras": loras}))
        clips[name] = read_mp4(run_document(tmp_path / f"{name}.yaml", device="cpu", quiet=True)).frames
    diff = float(abs(clips["plain"].astype(float) - clips["lora"]).mean())
    assert diff > 0.5, diff  # the adapter shows in the written clip


def test_adapter_exported_by_the_shdt_trainer_loads_and_matches_its_merged_model(tmp_path):
    """`aiprod train` (mode lora) exports final/model (merged) and final/lora (peft): base + load_lora(final/lora)
    gives the merged model's output, verified by the manifest the trainer now writes."""
    shdt_train = pytest.importorskip("aiprod_shdt.train")
    import yaml
    REPO = __import__("pathlib").Path(__file__).resolve().parents[3]  # not `from conftest`: another package's conftest may hold that name in the full run

    from aiprod_core.training import Trainer
    from aiprod_shdt.model import SHDT
    from aiprod_shdt.presets import PRESETS

    torch.manual_seed(0)
    base = SHDT(**PRESETS["tiny"])
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05)  # zero-initialised outputs would hide the adapters
    base.save_pretrained(tmp_path / "base")
    data = yaml.safe_load((REPO / "configs/train/tiny/shdt.yaml").read_text())
    data.pop("recipe")
    data.update(mode="lora", model={"preset": "tiny", "init_weights": str(tmp_path / "base")},
                lora={"rank": 4, "alpha": 8}, curriculum=[{"resolution": 32, "frames": 1, "steps": 6, "batch_size": 2}])
    data["train"].update(output_dir=str(tmp_path / "run"), max_steps=6, export_dtype="fp32", lr=1e-2,
                         checkpoint_every=6, log_every=6)
    cfg = shdt_train.SHDTTrainConfig.model_validate(data)
    task = shdt_train.SHDTTask(cfg)
    Trainer(cfg.train, task).fit()
    final = tmp_path / "run" / "final"
    assert (final / "lora" / "MANIFEST.json").is_file()
    merged = SHDT.from_pretrained(final / "model").eval()
    plain = SHDT.from_pretrained(tmp_path / "base").eval()
    batch = task.eval_batch(torch.device("cpu"))
    args = (batch["latents"], batch["sigma"], batch["text"], batch["text_mask"])
    with torch.no_grad():
        before = plain(*args)
        lora = load_lora(plain, final / "lora", scale=1.0)
        assert (plain(*args) - before).abs().max() > 1e-4  # the adapters moved
        assert torch.allclose(plain(*args), merged(*args), atol=1e-5)
        lora.fuse()
        assert torch.allclose(plain(*args), merged(*args), atol=1e-5)


def test_two_adapters_stack_and_come_off_independently(tmp_path):
    f1, x, _ = export_adapter(tmp_path / "one")
    f2, _, _ = export_adapter(tmp_path / "two", r=2, alpha=1.0)
    base = Tiny()
    plain = base(x)
    l1 = load_lora(base, f1, 1.0)
    only1 = base(x)
    l2 = load_lora(base, f2, 1.0)
    both = base(x)
    l1.fuse()
    assert torch.allclose(base(x), both, atol=1e-5)
    l1.remove()  # unfuses l1; l2 stays applied
    l2.remove()
    assert torch.allclose(base(x), plain, atol=1e-5) and not torch.allclose(only1, both, atol=1e-4)
    assert not any("parametrizations" in k for k in base.state_dict())
