"""Two-stage refinement (upsample → re-noise → Euler refine) and the ``upsample`` pipeline kind."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from aiprod_core import ComponentSpec
from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.pipeline import run_document
from aiprod_core.registry import get_registry
from aiprod_upsampler.model import LatentUpsampler, upsample_base
from aiprod_upsampler.presets import PRESETS
from aiprod_upsampler.two_stage import refine_sigmas, two_stage_refine


class OracleConfig(StrictModel):
    in_channels: int = 16
    text_dim: int = 8
    target: float = 0.5


class OracleDenoiser(nn.Module):
    """A video-denoiser that knows the clean latent ``x0 = target + mean(text)``.

    Rectified flow: ``x_s = (1 - s) x0 + s ε`` so ``v = ε - x0 = (x_s - x0) / s``; an exact
    Euler integration from any sigma then lands on x0 exactly. Records every call.
    """

    patch_size = 2

    def __init__(self, *, in_channels=16, text_dim=8, target=0.5):
        super().__init__()
        self.in_channels, self.text_dim = in_channels, text_dim
        self.target = nn.Parameter(torch.tensor(float(target)))
        self.calls = []

    def x0(self, text, text_mask):
        return self.target + (text * text_mask[..., None]).mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    def forward(self, latents, sigma, text, text_mask, guidance=None):
        assert sigma.shape == (latents.shape[0],) and text.shape[-1] == self.text_dim
        self.calls.append((latents.clone(), sigma.clone()))
        return (latents - self.x0(text, text_mask)) / sigma.view(-1, 1, 1, 1, 1)


def text_inputs(b=2, length=4, dim=8):
    g = torch.Generator().manual_seed(3)
    return torch.randn(b, length, dim, generator=g), torch.ones(b, length, dtype=torch.bool)


def tiny_upsampler():
    torch.manual_seed(0)
    return LatentUpsampler(**PRESETS["tiny"]).eval()


def test_refine_sigmas():
    assert torch.allclose(refine_sigmas(0.6, 3), torch.tensor([0.6, 0.4, 0.2, 0.0]))
    with pytest.raises(AiprodError, match=r"sigma must be in \(0, 1\], got 1.5"):
        refine_sigmas(1.5, 3)


def test_renoise_then_euler_lands_on_the_clean_latent():
    low = torch.randn(2, 16, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    text, mask = text_inputs()
    den, up = OracleDenoiser(), tiny_upsampler()
    noise = torch.randn(2, 16, 2, 8, 12, generator=torch.Generator().manual_seed(1))
    out = two_stage_refine(den, up, low, text, mask, sigma=0.6, steps=3, noise=noise)
    assert out.shape == (2, 16, 2, 8, 12)
    # the first denoiser input is the upsampled latent re-noised to sigma: (1 - s) up(low) + s noise
    first, s0 = den.calls[0]
    assert torch.allclose(first, 0.4 * upsample_base(low, "bilinear") + 0.6 * noise, atol=1e-6)
    assert [round(float(s[0]), 6) for _, s in den.calls] == [0.6, 0.4, 0.2]
    assert torch.allclose(out, den.x0(text, mask).expand_as(out), atol=1e-5)


def test_same_seed_same_result_and_seed_matters():
    low = torch.randn(1, 16, 1, 4, 4)
    text, mask = text_inputs(b=1)

    class Partial(OracleDenoiser):  # an imperfect denoiser keeps some noise: the seed shows
        def forward(self, latents, sigma, text, text_mask, guidance=None):
            return 0.5 * super().forward(latents, sigma, text, text_mask)

    den, up = Partial(), tiny_upsampler()
    run = lambda seed: two_stage_refine(den, up, low, text, mask, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_classifier_free_guidance_combines_velocities():
    low = torch.randn(1, 16, 1, 4, 4)
    text, mask = text_inputs(b=1)
    neg = torch.zeros_like(text)
    den, up = OracleDenoiser(), tiny_upsampler()
    out = two_stage_refine(
        den,
        up,
        low,
        text,
        mask,
        sigma=1.0,
        steps=1,
        noise=torch.zeros(1, 16, 1, 8, 8),
        negative_text=neg,
        negative_mask=mask,
        cfg_scale=3.0,
    )
    # one step from sigma=1, x=0: x0 guided = x0_neg + 3 (x0_pos - x0_neg)
    want = den.x0(neg, mask) + 3.0 * (den.x0(text, mask) - den.x0(neg, mask))
    assert torch.allclose(out, want.expand_as(out), atol=1e-5)
    with pytest.raises(AiprodError, match="needs negative_text"):
        two_stage_refine(den, up, low, text, mask, cfg_scale=3.0)


def test_a_sampler_component_can_integrate_instead_of_euler():
    class Midpoint:  # a stand-in `sampler` component (second-order midpoint rule)
        calls = 0

        def sample(self, fn, x, sigmas):
            Midpoint.calls += 1
            for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
                mid = x + 0.5 * (t - s) * fn(x, torch.full((x.shape[0],), s))
                x = x + (t - s) * fn(mid, torch.full((x.shape[0],), 0.5 * (s + t)))
            return x

    low = torch.randn(1, 16, 1, 4, 4)
    text, mask = text_inputs(b=1)
    den = OracleDenoiser()
    out = two_stage_refine(
        den,
        tiny_upsampler(),
        low,
        text,
        mask,
        sigmas=[0.9, 0.725, 0.421875, 0.0],
        generator=torch.Generator().manual_seed(0),
        sampler=Midpoint(),
    )
    assert Midpoint.calls == 1 and len(den.calls) == 6
    assert torch.allclose(out, den.x0(text, mask).expand_as(out), atol=1e-5)
    with pytest.raises(AiprodError, match="sigmas must decrease to 0"):
        two_stage_refine(den, None, low, text, mask, sigmas=[0.5, 0.6, 0.0])


# -- the `upsample` pipeline kind, driven from YAML ------------------------------------------
@pytest.fixture
def oracle_registered(temp_components):
    temp_components(
        ComponentSpec(
            kind="video-denoiser",
            name="test-oracle",
            factory=OracleDenoiser,
            config_model=OracleConfig,
            presets={"tiny": {}},
        )
    )


def write_input(path, with_text=True):
    tensors = {"latents": torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))}
    if with_text:
        text, mask = text_inputs(b=1)
        tensors.update(text=text, text_mask=mask)
    save_file(tensors, str(path))
    return tensors


def read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_upsample_pipeline_plain(tmp_path):
    src = write_input(tmp_path / "low.safetensors")
    yaml = tmp_path / "up.yaml"
    yaml.write_text(
        f"pipeline: upsample\ninput: {tmp_path / 'low.safetensors'}\noutput: {tmp_path / 'high.safetensors'}\n"
        "upsampler: {name: latent-x2, preset: tiny}\n"
    )
    run_document(yaml, device="cpu", dtype="float32", quiet=True)
    out, meta = read(tmp_path / "high.safetensors")
    assert out["latents"].shape == (1, 16, 2, 8, 8)
    assert torch.allclose(out["latents"], upsample_base(src["latents"], "bilinear"))  # untrained = bilinear
    assert torch.equal(out["text"], src["text"]) and meta["refined"] == "False"
    with pytest.raises(AiprodError, match="already exists; pass --overwrite"):
        run_document(yaml, device="cpu", dtype="float32", quiet=True)


def test_upsample_pipeline_with_refine(tmp_path, oracle_registered):
    src = write_input(tmp_path / "low.safetensors")
    yaml = tmp_path / "up.yaml"
    yaml.write_text(
        f"pipeline: upsample\ninput: {tmp_path / 'low.safetensors'}\noutput: {tmp_path / 'high.safetensors'}\n"
        "upsampler: {name: latent-x2, preset: tiny}\n"
        "refine:\n  denoiser: {name: test-oracle, preset: tiny}\n  sigma: 0.5\n  steps: 2\n"
    )
    run_document(yaml, device="cpu", dtype="float32", seed=7, quiet=True)
    out, meta = read(tmp_path / "high.safetensors")
    x0 = OracleDenoiser().x0(src["text"], src["text_mask"])
    assert out["latents"].shape == (1, 16, 2, 8, 8)
    assert torch.allclose(out["latents"], x0.expand(1, 16, 2, 8, 8), atol=1e-5)
    assert meta["sigma"] == "0.5" and meta["steps"] == "2" and meta["seed"] == "7"


def test_upsample_pipeline_refine_without_text_is_one_line_error(tmp_path, oracle_registered):
    write_input(tmp_path / "low.safetensors", with_text=False)
    yaml = tmp_path / "up.yaml"
    yaml.write_text(
        f"pipeline: upsample\ninput: {tmp_path / 'low.safetensors'}\noutput: {tmp_path / 'o.safetensors'}\n"
        "upsampler: {name: latent-x2, preset: tiny}\n"
        "refine:\n  denoiser: {name: test-oracle, preset: tiny}\n"
    )
    with pytest.raises(AiprodError, match="refine needs 'text' and 'text_mask' tensors in the input file"):
        run_document(yaml, device="cpu", dtype="float32", quiet=True)


def _installed(kind, name):
    try:
        return get_registry().component(kind, name)
    except ConfigError:
        return None


@pytest.mark.skipif(_installed("video-denoiser", "shdt") is None, reason="aiprod-shdt is not installed")
def test_refine_with_the_real_shdt_in_bfloat16():
    torch.manual_seed(0)
    den = _installed("video-denoiser", "shdt").build("tiny").eval().to(torch.bfloat16)
    up = tiny_upsampler().to(torch.bfloat16)
    low = torch.randn(1, 16, 2, 4, 4)
    text, mask = torch.randn(1, 5, den.text_dim), torch.ones(1, 5, dtype=torch.bool)
    out = two_stage_refine(
        den,
        up,
        low,
        text,
        mask,
        sigma=0.6,
        steps=2,
        generator=torch.Generator().manual_seed(0),
        negative_text=torch.zeros_like(text),
        negative_mask=mask,
        cfg_scale=2.0,
    )
    assert out.shape == (1, 16, 2, 8, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_stand_in_components_do_not_leak_into_the_registry():
    assert _installed("video-denoiser", "test-oracle") is None
