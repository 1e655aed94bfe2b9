"""FP8 SHDT (issue 9): quantize a tiny SHDT, reload it through from_pretrained and sample."""

import pytest
import torch

from aiprod_core.quantize import get_quantizer, relative_l2
from aiprod_shdt.diffusion import sample
from aiprod_shdt.model import SHDT


def _bytes(folder):
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _sample(model):
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 6, model.config.text_dim, generator=g)
    mask = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        return sample(model, text, mask, (16, 2, 8, 8), steps=4, guidance_scale=3.0, seed=1, progress=False)


@pytest.mark.parametrize("backend", ["quanto", "torch-fp8"])
@pytest.mark.parametrize("keep_modulation", [False, True], ids=["default", "modulation-bf16"])
def test_tiny_shdt_fp8_samples_close_to_bf16(tmp_path, monkeypatch, backend, keep_modulation):
    if backend == "quanto":
        pytest.importorskip("optimum.quanto")
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    # width 256 so the per-channel scales and the safetensors headers do not dominate the sizes
    model = SHDT(in_channels=16, patch_size=2, hidden_size=256, num_heads=4, depth_double=2, depth_single=2,
                 text_dim=32, rope_axes_dim=(16, 24, 24))
    for p in model.parameters():  # AdaLN-zero starts at zero: give every layer weight
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.05)
    torch.nn.init.zeros_(model.double_blocks[0].video.proj.weight)  # an all-zero layer must stay zero, not NaN
    src = model.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    exclude = ["*.mod.lin"] if keep_modulation else []
    dst = get_quantizer(backend).quantize_folder(src, tmp_path / "fp8", exclude=exclude, progress=False)
    ratio = _bytes(dst) / _bytes(src)
    ref = _sample(SHDT.from_pretrained(src))
    got = _sample(SHDT.from_pretrained(dst))
    err = relative_l2(got, ref)
    print(f"{backend} keep_modulation={keep_modulation}: size ratio {ratio:.3f}, sample relative L2 {err:.4f}")
    assert err <= 0.05
    if not keep_modulation:
        assert ratio <= 0.55
