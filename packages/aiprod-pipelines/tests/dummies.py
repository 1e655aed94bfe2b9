"""Small stand-in components, one per kind, so the pipeline logic is tested without any model package.

They are exact in a way the real tiny models are not, which lets the tests assert real properties:
the text encoder one-hot codes the palette colour named in the prompt; the denoiser predicts the exact
rectified-flow velocity towards a clean latent holding that colour (so sampling lands on it); the
autoencoder is block averaging / nearest upsampling. The speech synthesizer speaks a tone whose length
follows the text, at a frequency held in a weight (so a "trained" folder differs from an untrained build).
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import nn

from aiprod_core import ComponentSpec, hookimpl
from aiprod_core.config import StrictModel
from aiprod_core.registry import Registry
from aiprod_core.weights import PretrainedMixin
from aiprod_pipelines.corpus import PALETTE

COLOURS = list(PALETTE)


class TextCfg(StrictModel):
    out_dim: int = 8


class DummyTextEncoder(PretrainedMixin, nn.Module):
    config_class = TextCfg
    component_kind, component_name = "text-encoder", "dummy-text"

    def __init__(self, *, out_dim: int = 8):
        super().__init__()
        self.out_dim = out_dim
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.zeros(len(prompts), 4, self.out_dim)
        for i, p in enumerate(prompts):
            words = p.lower().split()
            for j, c in enumerate(COLOURS):
                if c in words:
                    emb[i, :3, j] = 1.0
            emb[i, 3] = 99.0  # a padding token: must be masked out
        mask = torch.tensor([[True, True, True, False]] * len(prompts))
        return (emb * self.scale).to(self.scale.device), mask.to(self.scale.device)


class DenoiserCfg(StrictModel):
    in_channels: int = 4
    text_dim: int = 8
    patch_size: int = 2
    colour_blind: bool = False


class DummyDenoiser(PretrainedMixin, nn.Module):
    """Velocity ``(x - x0) / sigma`` towards ``x0`` = the prompt's colour in channels 0-2 (exact flow)."""

    config_class = DenoiserCfg
    component_kind, component_name = "video-denoiser", "dummy-dit"

    def __init__(self, *, in_channels: int = 4, text_dim: int = 8, patch_size: int = 2, colour_blind: bool = False):
        super().__init__()
        self.in_channels, self.text_dim, self.patch_size, self.colour_blind = in_channels, text_dim, patch_size, colour_blind
        rgb = torch.tensor([PALETTE[c] for c in COLOURS], dtype=torch.float32) / 127.5 - 1.0
        self.colours = nn.Parameter(F.pad(rgb, (0, 0, 0, text_dim - len(COLOURS))))  # [text_dim, 3]
        self.calls = 0

    def forward(self, latents, sigma, text, text_mask, guidance=None):
        self.calls += 1
        m = text_mask.to(text.dtype)[..., None]
        pooled = (text * m).sum(1) / m.sum(1).clamp_min(1)  # [B, text_dim]; padding must not leak in
        rgb = pooled @ self.colours  # [B, 3]
        if self.colour_blind:
            rgb = torch.zeros_like(rgb)
        x0 = torch.zeros_like(latents)
        x0[:, :3] = rgb[:, :, None, None, None]
        s = sigma.to(latents.dtype).view(-1, 1, 1, 1, 1).clamp_min(1e-4)
        return (latents - x0) / s


class AECfg(StrictModel):
    latent_channels: int = 4


class DummyAutoencoder(PretrainedMixin, nn.Module):
    """Block means (8x8 in space; frame 0 alone, then groups of 4 in time) and their nearest inverse."""

    config_class = AECfg
    component_kind, component_name = "video-autoencoder", "dummy-ae"
    spatial_compression, temporal_compression = 8, 4

    def __init__(self, *, latent_channels: int = 4):
        super().__init__()
        self.latent_channels = latent_channels
        self.gain = nn.Parameter(torch.ones(()))

    def encode(self, video, sample=False):
        first = F.avg_pool3d(video[:, :, :1], (1, 8, 8))
        rest = F.avg_pool3d(video[:, :, 1:], (4, 8, 8)) if video.shape[2] > 1 else first[:, :, :0]
        lat = torch.cat([first, rest], 2)
        pad = torch.zeros_like(lat[:, :1]).expand(-1, self.latent_channels - 3, -1, -1, -1)
        return torch.cat([lat, pad], 1) * self.gain

    def decode(self, latents):
        x = latents[:, :3] / self.gain
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], 2)
        return x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4).clamp(-1, 1)


class UpCfg(StrictModel):
    latent_channels: int = 4


class DummyUpsampler(PretrainedMixin, nn.Module):
    config_class = UpCfg
    component_kind, component_name = "latent-upsampler", "dummy-up"

    def __init__(self, *, latent_channels: int = 4):
        super().__init__()
        self.latent_channels = latent_channels
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, latents):
        return latents.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4) * self.gain


class SpeechCfg(StrictModel):
    sample_rate: int = 24000
    seconds_per_char: float = 0.05
    init_freq: float = 880.0


class DummySpeech(PretrainedMixin, nn.Module):
    """A tone of ``seconds_per_char * len(text) / speed`` seconds at the (learnable) ``freq``."""

    config_class = SpeechCfg
    component_kind, component_name = "speech-synthesizer", "dummy-tts"

    def __init__(self, *, sample_rate: int = 24000, seconds_per_char: float = 0.05, init_freq: float = 880.0):
        super().__init__()
        self.sample_rate, self.spc = sample_rate, seconds_per_char
        self.freq = nn.Parameter(torch.tensor(float(init_freq)))

    def synthesize(self, text, *, speed=1.0, pitch_shift=0.0, pitch_scale=1.0, energy_scale=1.0):
        n = int(round(len(text) * self.spc / speed * self.sample_rate))
        t = torch.arange(n, dtype=torch.float64) / self.sample_rate
        f = float(self.freq.detach()) * 2 ** (pitch_shift / 12)
        return (0.3 * torch.sin(2 * math.pi * f * t)).float()


class CodecCfg(StrictModel):
    sample_rate: int = 24000
    num_codebooks: int = 2
    codebook_size: int = 256


class DummyCodec(PretrainedMixin, nn.Module):
    """Residual scalar quantisation of every sample: codebook q refines the residual of q - 1."""

    config_class = CodecCfg
    component_kind, component_name = "audio-codec", "dummy-codec"

    def __init__(self, *, sample_rate: int = 24000, num_codebooks: int = 2, codebook_size: int = 256):
        super().__init__()
        self.sample_rate, self.num_codebooks, self.codebook_size = sample_rate, num_codebooks, codebook_size
        self.frame_rate = float(sample_rate)
        self.gain = nn.Parameter(torch.ones(()))

    def _step(self, q: int) -> float:
        return 2.0 / (self.codebook_size - 1) / (self.codebook_size - 1) ** q

    def encode(self, wav, num_codebooks=None):
        q_n = num_codebooks or self.num_codebooks
        res, codes = wav[:, 0].double(), []
        for q in range(q_n):
            step = self._step(q)
            lo = -1.0 if q == 0 else -step * (self.codebook_size - 1) / 2
            c = ((res - lo) / step).round().clamp(0, self.codebook_size - 1)
            codes.append(c.long())
            res = res - (lo + c * step)
        return torch.stack(codes, 1)

    def decode(self, codes):
        out = torch.zeros(codes.shape[0], codes.shape[2], dtype=torch.float64)
        for q in range(codes.shape[1]):
            step = self._step(q)
            lo = -1.0 if q == 0 else -step * (self.codebook_size - 1) / 2
            out = out + lo + codes[:, q].double() * step
        return (out.float() * self.gain)[:, None]

    def encode_latents(self, wav):
        return wav


class SamplerCfg(StrictModel):
    pass


class DummyEuler:
    """kind ``sampler``: plain Euler over a linear schedule (the real ones come with aiprod-shdt, which the
    ``nox -s package`` run of this package alone does not install)."""

    name, progress = "euler", False

    def sigmas(self, steps, num_tokens):
        return torch.linspace(1.0, 0.0, steps + 1)

    def sample(self, velocity_fn, noise, sigmas, callback=None, on_step=None):
        x = noise.float()
        for i in range(len(sigmas) - 1):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            if callback is not None:
                x = callback(x, s)
            x = x + (s_next - s) * velocity_fn(x, torch.full((x.shape[0],), s)).float()
            if on_step is not None:
                out = on_step(i, s_next, x)
                x = out if isinstance(out, torch.Tensor) else x
        return x if callback is None else callback(x, 0.0)


def specs() -> list[ComponentSpec]:
    return [ComponentSpec(kind=c.component_kind, name=c.component_name, factory=c, config_model=c.config_class,
                          presets={"tiny": {}}) for c in
            (DummyTextEncoder, DummyDenoiser, DummyAutoencoder, DummyUpsampler, DummySpeech, DummyCodec)] + [
        ComponentSpec(kind="sampler", name="euler", factory=DummyEuler, config_model=SamplerCfg,
                      presets={"default": {}})]


@hookimpl
def aiprod_register_components():
    return specs()


def make_registry() -> Registry:
    """A registry holding this package's plugin and the dummies (nothing from entry points)."""
    from aiprod_pipelines import plugin

    reg = Registry()
    reg.register_module(plugin, "pipelines", distribution="aiprod-pipelines")
    reg.register_module(types.SimpleNamespace(aiprod_register_components=aiprod_register_components),
                        "dummies", distribution="tests")
    return reg
