"""Inference fast paths of SHDT (issue 21) compute what the training-time ops compute."""

from __future__ import annotations

import pytest
import torch

from aiprod_shdt.model import SHDT, Modulation, _prefix_groups
from aiprod_shdt.rope import apply_rope, rope_angles


def _model() -> SHDT:
    torch.manual_seed(0)
    m = SHDT(in_channels=4, patch_size=2, hidden_size=64, num_heads=4, depth_double=2, depth_single=2, text_dim=32,
             rope_axes_dim=(4, 6, 6), guidance_embed=True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)  # AdaLN-zero would make every block the identity
    return m


def _inputs(b: int = 3):
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(b, 4, 2, 8, 8, generator=g), torch.randn(b, 10, 32, generator=g)
    mask = torch.ones(b, 10, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1 % b, 3:] = False
    return x, torch.rand(b, generator=g), text, mask, torch.full((b,), 4.0)


def test_inference_path_equals_autograd_path_with_padded_text():
    m = _model()
    x, s, text, mask, g = _inputs()
    with torch.enable_grad():
        ref = m(x, s, text, mask, g)
    with torch.no_grad():
        out = m(x, s, text, mask, g)
    assert torch.allclose(out, ref, atol=1e-5)
    assert not any("_fused" in mod.__dict__ for mod in m.modules() if isinstance(mod, Modulation))
    for i in range(3):  # padding handled by cutting keys equals the item run alone, unpadded
        n = int(mask[i].sum())
        with torch.no_grad():
            alone = m(x[i : i + 1], s[i : i + 1], text[i : i + 1, :n], mask[i : i + 1, :n], g[i : i + 1])
        assert torch.allclose(alone, out[i : i + 1], atol=1e-5)


def test_mask_with_holes_falls_back_to_dense_mask():
    m = _model()
    x, s, text, mask, g = _inputs()
    mask[2, 4] = False
    assert _prefix_groups(torch.cat([torch.ones(3, 5, dtype=torch.bool), mask], 1)) is None
    with torch.enable_grad():
        ref = m(x, s, text, mask, g)
    with torch.no_grad():
        assert torch.allclose(m(x, s, text, mask, g), ref, atol=1e-5)


def test_prefix_groups():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    groups = _prefix_groups(mask)
    assert [(n, idx.tolist()) for n, idx in groups] == [(2, [0, 2]), (3, [1])]


def test_fused_modulation_cache_follows_weight_changes():
    m = _model()
    x, s, text, mask, g = _inputs(1)
    with torch.no_grad():
        before = m(x, s, text, mask, g)
        m.single_blocks[0].mod.lin.weight.mul_(2.0)  # in place: version counter moves
        after = m(x, s, text, mask, g)
    with torch.enable_grad():
        ref = m(x, s, text, mask, g)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, ref, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_without_float_copy_matches_float32_reference(dtype):
    a = rope_angles((3, 4, 5), (4, 6, 6), 10_000.0)
    x = torch.randn(2, 3, 60, 16, generator=torch.Generator().manual_seed(0))
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = a.cos(), a.sin()
    ref = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)
    with torch.no_grad():
        out = apply_rope(x.to(dtype), c, s)
    assert out.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 3e-2  # bf16: a few ulps of values up to ~4
    assert (out.float() - ref).abs().max() < tol


def test_compile_option_compiles_every_block_and_keeps_the_state_dict():
    kw = dict(in_channels=4, patch_size=2, hidden_size=64, num_heads=4, depth_double=1, depth_single=1, text_dim=32,
              rope_axes_dim=(4, 6, 6))
    plain, compiled = SHDT(**kw), SHDT(**kw, compile=True)
    assert all(b._compiled_call_impl is not None for b in [*compiled.double_blocks, *compiled.single_blocks])
    assert plain.single_blocks[0]._compiled_call_impl is None
    assert plain.state_dict().keys() == compiled.state_dict().keys()


def test_gelu_tanh_fast_path_equals_torch():
    import torch.nn.functional as F

    from aiprod_shdt.model import gelu_tanh

    x = torch.cat([torch.linspace(-60, 60, 10_001), torch.randn(4096) * 3])
    with torch.no_grad():
        fast = gelu_tanh(x)
    ref = F.gelu(x, approximate="tanh")
    assert torch.allclose(fast, ref, atol=2e-6, rtol=1e-6), (fast - ref).abs().max()
    assert torch.isfinite(fast).all()
    y = x.clone().requires_grad_(True)  # with autograd: torch's op (differentiable, same values)
    out = gelu_tanh(y)
    out.sum().backward()
    assert out.grad_fn is not None and torch.equal(out.detach(), ref)
