"""Samplers as components: registered under kind ``sampler``, accurate on an analytic flow, one source."""

import pytest
import torch

from aiprod_core.interfaces import Sampler
from aiprod_core.registry import Registry
from aiprod_shdt import plugin
from aiprod_shdt.diffusion import FlowSampler, sampling_sigmas
from aiprod_shdt.samplers import SAMPLERS, get_sampler


def gaussian_velocity(std: float, calls: list | None = None):
    """Exact rectified-flow velocity for data ~ N(0, std^2)."""
    def v(x, sigma):
        if calls is not None:
            calls.append(float(sigma[0]))
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        return x * (s - (1 - s) * std**2) / ((1 - s) ** 2 * std**2 + s**2)
    return v


@pytest.fixture(scope="module")
def registry():
    reg = Registry()
    reg.register_module(plugin, "shdt", "aiprod-shdt")
    return reg


def test_registered_under_the_core_sampler_kind(registry):
    names = {n for (k, n) in registry.components if k == "sampler"}
    assert names == {"euler", "heun", "dpm++2m"}
    for name in names:
        s = registry.component("sampler", name).build("default")
        assert isinstance(s, Sampler) and s.name == name
        sig = s.sigmas(8, 4096)
        assert sig.shape == (9,) and sig[0] == 1 and sig[-1] == 0
        assert torch.equal(sig, sampling_sigmas(8, 4096))


def test_unknown_name_is_refused():
    with pytest.raises(Exception, match="unknown"):
        get_sampler("no-such-sampler")


@pytest.mark.parametrize("steps", [6, 12])
def test_second_order_samplers_beat_euler(steps):
    noise = torch.randn(4, 2000, generator=torch.Generator().manual_seed(0))
    exact = 0.5 * noise  # the flow maps N(0, 1) onto N(0, 0.25) by scaling
    sig = sampling_sigmas(steps, 1024)
    err = {n: float((SAMPLERS[n]().sample(gaussian_velocity(0.5), noise, sig) - exact).abs().max()) for n in SAMPLERS}
    assert err["heun"] < err["euler"] / 3
    assert err["dpm++2m"] < err["euler"] / 2, err
    fine = SAMPLERS["euler"]().sample(gaussian_velocity(0.5), noise, torch.linspace(1, 0, 400))
    assert (fine - exact).abs().max() < 0.01


def test_model_calls_per_step():
    noise = torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
    sig = torch.linspace(1, 0, 6)
    for name, expected in (("euler", 5), ("heun", 9), ("dpm++2m", 5)):
        calls: list = []
        SAMPLERS[name]().sample(gaussian_velocity(0.5, calls), noise, sig)
        assert len(calls) == expected, name


def test_dpm_first_step_equals_euler():
    noise = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    sig = torch.tensor([1.0, 0.7])
    a = SAMPLERS["euler"]().sample(gaussian_velocity(0.3), noise, sig)
    b = SAMPLERS["dpm++2m"]().sample(gaussian_velocity(0.3), noise, sig)
    assert torch.allclose(a, b, atol=1e-6)


def test_on_step_sees_every_step_and_may_replace_the_state():
    noise = torch.randn(1, 4, generator=torch.Generator().manual_seed(3))
    seen = []

    def on_step(i, s, x):
        seen.append((i, round(s, 4)))
        return torch.zeros_like(x) if i == 2 else None

    out = SAMPLERS["euler"]().sample(lambda x, s: torch.zeros_like(x), noise, torch.linspace(1, 0, 4), on_step=on_step)
    assert [i for i, _ in seen] == [0, 1, 2] and seen[-1][1] == 0
    assert torch.equal(out, torch.zeros_like(noise))


def test_flowsampler_name_is_the_component():
    assert type(FlowSampler("heun")) is SAMPLERS["heun"]
    with pytest.raises(ValueError, match="sigmas must decrease"):
        FlowSampler("euler").sample(lambda x, s: x, torch.zeros(1, 2), torch.tensor([0.2, 0.5]))
