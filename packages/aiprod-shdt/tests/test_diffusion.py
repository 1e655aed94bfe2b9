"""Rectified flow: shift, samplers against analytic velocity fields, CFG, first frame, seeds."""

import pytest
import torch
from torch import nn

from aiprod_shdt.diffusion import FlowSampler, sample, sampling_sigmas, token_shift, training_sigmas
from aiprod_shdt.model import SHDT
from aiprod_shdt.presets import PRESETS


def test_token_shift_grows_with_tokens():
    assert token_shift(1024) == pytest.approx(1.0)
    assert token_shift(57_600) == pytest.approx(7.5)
    s = sampling_sigmas(10, 57_600)
    assert s[0] == 1 and s[-1] == 0 and (s[1:] < s[:-1]).all()
    assert (s[1:-1] > sampling_sigmas(10, 1024)[1:-1]).all()  # more tokens: more time at high noise
    g = torch.Generator().manual_seed(0)
    lo, hi = training_sigmas(4000, 1024, g).median(), training_sigmas(4000, 57_600, g).median()
    assert lo == pytest.approx(0.5, abs=0.05) and hi > 0.8


def gaussian_velocity(std: float):
    """Exact rectified-flow velocity for data ~ N(0, std^2): E[noise - x0 | x_sigma]."""
    def v(x, sigma):
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        return x * (s - (1 - s) * std**2) / ((1 - s) ** 2 * std**2 + s**2)
    return v


def test_euler_and_heun_converge_heun_more_accurate():
    noise = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    exact = 0.5 * noise  # the flow maps N(0,1) to N(0, 0.25) by scaling
    sig = torch.linspace(1, 0, 9)
    err = {m: (FlowSampler(m).sample(gaussian_velocity(0.5), noise, sig) - exact).abs().max() for m in ("euler", "heun")}
    assert err["heun"] < err["euler"] / 3
    assert err["heun"] < 0.1
    fine = FlowSampler("euler").sample(gaussian_velocity(0.5), noise, torch.linspace(1, 0, 400))
    assert (fine - exact).abs().max() < 0.01


class Oracle(nn.Module):
    """Velocity field of a point mass at +1 (prompt) or -1 (empty prompt) — a known CFG target."""

    in_channels, text_dim, patch_size = 4, 3, 2

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, x, sigma, text, text_mask, guidance=None):
        self.calls += 1
        target = torch.where(text_mask.any(1), 1.0, -1.0).view(-1, 1, 1, 1, 1)
        return (x - target) / sigma.view(-1, 1, 1, 1, 1)


def test_cfg_combines_conditional_and_unconditional():
    model = Oracle()
    text, mask = torch.ones(2, 5, 3), torch.ones(2, 5, dtype=torch.bool)
    out = sample(model, text, mask, (4, 2, 4, 4), steps=4, guidance_scale=1.0, progress=False)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)
    assert model.calls == 4
    out = sample(model, text, mask, (4, 2, 4, 4), steps=4, guidance_scale=3.0, progress=False)
    # v = v_u + 3 (v_c - v_u): the straight path ends at -1 + 3 * (1 - (-1)) = 5
    assert torch.allclose(out, torch.full_like(out, 5.0), atol=1e-4)


def test_sample_tiny_model_seeds_and_first_frame():
    torch.manual_seed(0)
    model = SHDT(**PRESETS["tiny"]).eval()
    with torch.no_grad():  # undo AdaLN-zero so frames interact through attention
        for p in model.parameters():
            if p.dim() > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(1)
    text, mask = torch.randn(1, 6, 32, generator=g), torch.ones(1, 6, dtype=torch.bool)
    a = sample(model, text, mask, (16, 3, 4, 4), steps=3, guidance_scale=4.0, seed=7, progress=False)
    b = sample(model, text, mask, (16, 3, 4, 4), steps=3, guidance_scale=4.0, seed=7, progress=False)
    c = sample(model, text, mask, (16, 3, 4, 4), steps=3, guidance_scale=4.0, seed=8, progress=False, method="heun")
    assert a.shape == (1, 16, 3, 4, 4) and torch.equal(a, b) and not torch.allclose(a, c)
    ff = torch.randn(1, 16, 1, 4, 4, generator=g)
    d = sample(model, text, mask, (16, 3, 4, 4), steps=3, guidance_scale=4.0, seed=7, progress=False, first_frame=ff)
    assert torch.allclose(d[:, :, :1], ff) and not torch.allclose(d[:, :, 1:], a[:, :, 1:])
