"""Pipeline kind ``text-to-video``: a prompt becomes an mp4 with H.264 video and an AAC narration.

    prompt ─ text-encoder ─┐
                           ├─ video-denoiser, rectified-flow sampling (Euler/Heun, token-count shift, CFG)
    noise (CPU, seeded) ───┘     │  optional two-stage: latent-upsampler x2, re-noise to sigma, refine
                                 └─ video-autoencoder decode ─ frames ─┐
    narration ─ speech-synthesizer ─ wav ──────────────────────────────┴─ reconcile lengths ─ mp4

Example (``examples/text_to_video.yaml``)::

    pipeline: text-to-video
    prompt: a red circle moving left over a photo of a cat
    narration: A red circle glides to the left.
    output: out/text_to_video.mp4
    text_encoder: {name: gemma3-lora, preset: tiny}
    denoiser: {name: shdt, preset: tiny}
    autoencoder: {name: hwvae, preset: tiny}
    speech: {name: fastspeech2-hifigan, preset: tiny}

Lengths (``sync``): ``longest`` (default) keeps everything: a narration longer than the clip holds
the clip's last frame until the narration ends; a shorter one is padded with silence. ``video`` keeps
the clip's length and pads or cuts (with a 20 ms fade) the narration. See :mod:`aiprod_pipelines.media`.

Sampling uses ``aiprod_shdt.diffusion.sample`` when aiprod-shdt is installed and the same algorithm
written out here otherwise (:func:`sample_latents`): rectified flow ``x_s = (1 - s) x0 + s noise``
integrated from ``s = 1`` to 0 (Liu et al. 2022, arXiv:2209.03003) over SD3's shifted schedule
``a s / (1 + (a - 1) s)`` with ``a = sqrt(tokens / 1024)`` (Esser et al. 2024, arXiv:2403.03206),
classifier-free guidance against the negative prompt or the empty (all-masked) prompt. The two-stage
refinement likewise prefers ``aiprod_upsampler.two_stage``. Noise is drawn on the CPU from the seed,
so a seed gives the same clip on every device.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef, RunContext

#: prefer the model packages' own sampler / refiner when installed (tests switch this off to compare)
USE_PACKAGE_SAMPLERS = True

KINDS = {
    "text_encoder": "text-encoder",
    "denoiser": "video-denoiser",
    "autoencoder": "video-autoencoder",
    "speech": "speech-synthesizer",
    "upsampler": "latent-upsampler",
}


def _with_kind(ref: ComponentRef | None, kind: str) -> ComponentRef | None:
    """Fill in a reference's kind (so validation finds the right component), or refuse a wrong one."""
    if ref is None:
        return None
    if ref.kind is None:
        return ref.model_copy(update={"kind": kind})
    if ref.kind != kind:
        raise ValueError(f"expected a {kind} component, got kind {ref.kind!r}")
    return ref


class TwoStage(StrictModel):
    """Stage 2: the latent-upsampler doubles the stage-1 latent, which is re-noised to ``sigma`` and refined."""

    upsampler: ComponentRef
    sigma: float = Field(0.6, gt=0, le=1, description="noise level the upsampled latent is re-noised to")
    steps: int = Field(3, ge=1, description="Euler steps from sigma to 0")

    @field_validator("upsampler")
    @classmethod
    def _kind(cls, v: ComponentRef) -> ComponentRef:
        return _with_kind(v, KINDS["upsampler"])


class TextToVideoConfig(StrictModel):
    """``pipeline: text-to-video`` (``aiprod run``)."""

    prompt: str = Field(min_length=1, description="what the clip shows")
    negative_prompt: str = Field("", description="steered away from by CFG; empty = the unconditional prompt")
    output: str = Field(description="the mp4 to write (refused if it exists, unless --overwrite)")
    width: int = Field(64, ge=16, description="pixels; a multiple of 8 x patch size (x2 with two_stage)")
    height: int = Field(64, ge=16)
    frames: int = Field(17, ge=1, description="1 + 4k (the autoencoder codes 4 frames per latent frame)")
    fps: int = Field(8, ge=1, le=120)
    steps: int = Field(20, ge=1, description="sampling steps (stage 1)")
    guidance_scale: float = Field(4.0, ge=0, description="classifier-free guidance; 1 = off")
    sampler: Literal["euler", "heun"] = "euler"
    text_encoder: ComponentRef
    denoiser: ComponentRef
    autoencoder: ComponentRef
    two_stage: TwoStage | None = Field(None, description="half-resolution sampling, then x2 upsample and refine")
    speech: ComponentRef | None = Field(None, description="speech-synthesizer for the narration; none = silent")
    narration: str | None = Field(None, description="text spoken over the clip (default: the prompt)")
    speech_speed: float = Field(1.0, gt=0, le=4)
    sync: Literal["longest", "video"] = Field("longest", description="how audio and video lengths are reconciled")
    crf: int = Field(18, ge=0, le=51, description="x264 quality (lower is better)")
    audio_bitrate: int = Field(96_000, ge=16_000, le=512_000)

    @field_validator("text_encoder", "denoiser", "autoencoder", "speech")
    @classmethod
    def _kinds(cls, v: ComponentRef | None, info) -> ComponentRef | None:
        return _with_kind(v, KINDS[info.field_name])

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k (e.g. {1 + 4 * round((v - 1) / 4)})")
        return v

    @field_validator("width", "height")
    @classmethod
    def _multiple(cls, v: int) -> int:
        if v % 16:
            raise ValueError("must be a multiple of 16 (autoencoder x8, patch 2)")
        return v

    @field_validator("narration")
    @classmethod
    def _narration(cls, v: str | None, info) -> str | None:
        if v is not None and "speech" in info.data and info.data["speech"] is None:
            raise ValueError("'narration' needs a 'speech' component (kind speech-synthesizer)")
        return v


# -- components ----------------------------------------------------------------------------------
@dataclass
class Models:
    text_encoder: Any
    denoiser: Any
    autoencoder: Any
    upsampler: Any | None = None
    speech: Any | None = None


def _check_kind(module: Any, kind: str, key: str) -> None:
    from aiprod_core.interfaces import PROTOCOLS

    if not isinstance(module, PROTOCOLS[kind]):
        raise AiprodError(f"{key}: {type(module).__name__} does not implement the {kind} interface "
                          f"(aiprod_core.interfaces.{PROTOCOLS[kind].__name__})")


def load_models(cfg: TextToVideoConfig, ctx: RunContext, *, speech: bool = True) -> Models:
    """Load every component and check they fit together (text width, latent channels, sizes)."""
    bar = ctx.progress(total=4 + (cfg.two_stage is not None) + (speech and cfg.speech is not None),
                       desc="load components", unit="component")
    loaded: dict[str, Any] = {}
    refs = {"text_encoder": cfg.text_encoder, "denoiser": cfg.denoiser, "autoencoder": cfg.autoencoder}
    if cfg.two_stage is not None:
        refs["upsampler"] = cfg.two_stage.upsampler
    if speech and cfg.speech is not None:
        refs["speech"] = cfg.speech
    for key, ref in refs.items():
        loaded[key] = ref.load(ctx)
        _check_kind(loaded[key], KINDS[key], f"{ctx.source}: {key}")
        bar.update()
    bar.close()
    m = Models(**loaded)
    src = ctx.source
    if m.text_encoder.out_dim != m.denoiser.text_dim:
        raise AiprodError(f"{src}: text_encoder gives {m.text_encoder.out_dim}-wide embeddings, "
                          f"the denoiser expects text_dim {m.denoiser.text_dim}")
    if m.autoencoder.latent_channels != m.denoiser.in_channels:
        raise AiprodError(f"{src}: autoencoder has {m.autoencoder.latent_channels} latent channels, "
                          f"the denoiser expects in_channels {m.denoiser.in_channels}")
    up_ch = getattr(m.upsampler, "latent_channels", None)
    if up_ch is not None and up_ch != m.denoiser.in_channels:
        raise AiprodError(f"{src}: two_stage.upsampler has {up_ch} latent channels, "
                          f"the denoiser expects {m.denoiser.in_channels}")
    step = m.autoencoder.spatial_compression * m.denoiser.patch_size * (2 if m.upsampler is not None else 1)
    for name in ("width", "height"):
        if getattr(cfg, name) % step:
            raise AiprodError(f"{src}: {name}: {getattr(cfg, name)} is not a multiple of {step} "
                              f"(autoencoder x{m.autoencoder.spatial_compression} x patch {m.denoiser.patch_size}"
                              + (" x upsampler 2)" if m.upsampler is not None else ")"))
    if (cfg.frames - 1) % m.autoencoder.temporal_compression:
        raise AiprodError(f"{src}: frames: {cfg.frames} is not 1 + {m.autoencoder.temporal_compression}k")
    return m


# -- sampling (the fallback when aiprod-shdt / aiprod-upsampler are not installed) -----------------
def shifted_sigmas(steps: int, num_tokens: int, base_tokens: int = 1024, base_shift: float = 1.0,
                   min_shift: float = 1.0, max_shift: float = 12.0) -> torch.Tensor:
    """``[steps + 1]`` from 1 to 0, shifted by ``a = clamp(base_shift * sqrt(tokens / base_tokens))`` (SD3)."""
    a = min(max(base_shift * math.sqrt(num_tokens / base_tokens), min_shift), max_shift)
    s = torch.linspace(1.0, 0.0, steps + 1)
    return a * s / (1 + (a - 1) * s)


@torch.no_grad()
def integrate(velocity: Callable, x: torch.Tensor, sigmas: torch.Tensor, method: str = "euler",
              progress: Callable | None = None, desc: str = "sample") -> torch.Tensor:
    """Euler (or Heun) integration of ``dx/dsigma = v(x, sigma)`` over the decreasing ``sigmas``."""
    steps = range(len(sigmas) - 1)
    for i in progress(steps, desc=desc, total=len(steps)) if progress else steps:
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        v = velocity(x, torch.full((x.shape[0],), s, device=x.device)).float()
        x_next = x + (s_next - s) * v
        if method == "heun" and s_next > 0:
            v2 = velocity(x_next, torch.full((x.shape[0],), s_next, device=x.device)).float()
            x_next = x + (s_next - s) * 0.5 * (v + v2)
        x = x_next
    return x


def _param(module: Any) -> torch.Tensor:
    p = next(module.parameters(), None)
    if p is None:
        raise AiprodError(f"{type(module).__name__}: a component without parameters cannot place its inputs")
    return p


@torch.no_grad()
def sample_latents(denoiser: Any, text: torch.Tensor, mask: torch.Tensor, latent_shape: tuple[int, ...], *,
                   steps: int, guidance_scale: float, seed: int, method: str = "euler",
                   neg_text: torch.Tensor | None = None, neg_mask: torch.Tensor | None = None,
                   progress: Callable | None = None) -> torch.Tensor:
    """Normalised latents ``[B, *latent_shape]`` from CPU noise seeded by ``seed``."""
    if USE_PACKAGE_SAMPLERS:
        try:
            from aiprod_shdt.diffusion import sample
        except ImportError:
            pass
        else:
            return sample(denoiser, text, mask, tuple(latent_shape), steps=steps, guidance_scale=guidance_scale,
                          neg_text=neg_text, neg_text_mask=neg_mask, seed=seed, progress=progress is not None,
                          method=method)
    p = _param(denoiser)
    device, dtype = p.device, p.dtype
    b = text.shape[0]
    noise = torch.randn((b, *latent_shape), generator=torch.Generator().manual_seed(seed)).to(device)
    text, mask = text.to(device, dtype), mask.to(device).bool()
    cfg_on = guidance_scale != 1.0
    if cfg_on:  # conditional and unconditional in one batch; text padded to a common length
        if neg_text is None:
            neg_text, neg_mask = torch.zeros_like(text), torch.zeros_like(mask)
        else:
            neg_text = neg_text.to(device, dtype).expand(b, -1, -1)
            neg_mask = neg_mask.to(device).bool().expand(b, -1)
        length = max(text.shape[1], neg_text.shape[1])

        def pad(t: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            extra = length - t.shape[1]
            return (torch.nn.functional.pad(t, (0, 0, 0, extra)), torch.nn.functional.pad(m, (0, extra), value=False))

        (text, mask), (neg_text, neg_mask) = pad(text, mask), pad(neg_text, neg_mask)
        text_all, mask_all = torch.cat([text, neg_text]), torch.cat([mask, neg_mask])

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not cfg_on:
            return denoiser(x.to(dtype), sigma.to(dtype), text, mask)
        v = denoiser(torch.cat([x, x]).to(dtype), torch.cat([sigma, sigma]).to(dtype), text_all, mask_all).float()
        v_c, v_u = v.chunk(2)
        return v_u + guidance_scale * (v_c - v_u)

    num_tokens = latent_shape[1] * (latent_shape[2] // denoiser.patch_size) * (latent_shape[3] // denoiser.patch_size)
    return integrate(velocity, noise.float(), shifted_sigmas(steps, num_tokens), method, progress)


@torch.no_grad()
def refine_two_stage(denoiser: Any, upsampler: Any, low: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, *,
                     sigma: float, steps: int, seed: int, guidance_scale: float = 1.0,
                     neg_text: torch.Tensor | None = None, neg_mask: torch.Tensor | None = None,
                     progress: Callable | None = None) -> torch.Tensor:
    """x2 upsample, re-noise to ``sigma`` (``(1 - s) u + s noise``, noise from ``seed``), Euler back to 0."""
    if guidance_scale != 1.0 and neg_text is None:
        neg_text, neg_mask = torch.zeros_like(text), torch.zeros_like(mask, dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    if USE_PACKAGE_SAMPLERS:
        try:
            from aiprod_upsampler.two_stage import two_stage_refine
        except ImportError:
            pass
        else:
            return two_stage_refine(denoiser, upsampler, low, text, mask, sigma=sigma, steps=steps, generator=generator,
                                    negative_text=neg_text, negative_mask=neg_mask, cfg_scale=guidance_scale,
                                    progress=progress)
    p = _param(denoiser)
    x = upsampler(low.to(_param(upsampler).dtype)).float()
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    x = (1.0 - sigma) * x + sigma * noise
    text, mask = text.to(x.device, p.dtype), mask.to(x.device).bool()
    if neg_text is not None:
        neg_text, neg_mask = neg_text.to(x.device, p.dtype), neg_mask.to(x.device).bool()

    def velocity(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x, s = x.to(p.dtype), s.to(p.dtype)
        v = denoiser(x, s, text, mask).float()
        if guidance_scale != 1.0:
            v_neg = denoiser(x, s, neg_text, neg_mask).float()
            v = v_neg + guidance_scale * (v - v_neg)
        return v

    return integrate(velocity, x, torch.linspace(sigma, 0.0, steps + 1), "euler", progress, desc="refine")


@torch.no_grad()
def generate(models: Models, prompt: str, *, negative_prompt: str = "", width: int, height: int, frames: int,
             steps: int, guidance_scale: float, seed: int, method: str = "euler", two_stage: TwoStage | None = None,
             progress: Callable | None = None) -> torch.Tensor:
    """One clip ``[3, frames, height, width]`` float32 in [-1, 1] on the CPU."""
    enc, dn, vae = models.text_encoder, models.denoiser, models.autoencoder
    text, mask = enc.encode([prompt])
    neg_text = neg_mask = None
    if guidance_scale != 1.0 and negative_prompt:
        neg_text, neg_mask = enc.encode([negative_prompt])
    factor = vae.spatial_compression * (2 if two_stage is not None else 1)
    shape = (vae.latent_channels, 1 + (frames - 1) // vae.temporal_compression, height // factor, width // factor)
    latents = sample_latents(dn, text, mask, shape, steps=steps, guidance_scale=guidance_scale, seed=seed,
                             method=method, neg_text=neg_text, neg_mask=neg_mask, progress=progress)
    if two_stage is not None:
        latents = refine_two_stage(dn, models.upsampler, latents.to(_param(dn).dtype), text, mask,
                                   sigma=two_stage.sigma, steps=two_stage.steps, seed=seed + 1,
                                   guidance_scale=guidance_scale, neg_text=neg_text, neg_mask=neg_mask,
                                   progress=progress)
    video = vae.decode(latents.to(_param(vae).device, _param(vae).dtype))
    if tuple(video.shape[-3:]) != (frames, height, width):
        raise AiprodError(f"the autoencoder decoded {tuple(video.shape[-3:])} (T, H, W), "
                          f"expected {(frames, height, width)}")
    return video[0].float().clamp(-1, 1).cpu()


# -- the pipeline ------------------------------------------------------------------------------------
def run(cfg: TextToVideoConfig, ctx: RunContext) -> str:
    """Generate, narrate, reconcile lengths, write the mp4. Returns its path."""
    from aiprod_pipelines.media import reconcile, video_to_frames, write_mp4

    out = ctx.output_path(cfg.output)  # refuse an existing output before any weight is read
    models = load_models(cfg, ctx)
    progress = None if ctx.quiet else ctx.progress
    video = generate(models, cfg.prompt, negative_prompt=cfg.negative_prompt, width=cfg.width, height=cfg.height,
                     frames=cfg.frames, steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=ctx.seed,
                     method=cfg.sampler, two_stage=cfg.two_stage, progress=progress)
    frames = video_to_frames(video)
    audio, sr = None, None
    if models.speech is not None:
        text = cfg.narration if cfg.narration is not None else cfg.prompt
        wav = models.speech.synthesize(text, speed=cfg.speech_speed)
        sr = int(models.speech.sample_rate)
        frames, audio = reconcile(frames, wav, cfg.fps, sr, cfg.sync)
    info = {"prompt": cfg.prompt, "seed": ctx.seed, "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
            "sampler": cfg.sampler, "two_stage": cfg.two_stage is not None, "sync": cfg.sync,
            "generated_frames": cfg.frames, "written_frames": int(frames.shape[0])}
    write_mp4(out, frames, cfg.fps, audio, sr, crf=cfg.crf, audio_bitrate=cfg.audio_bitrate, overwrite=True,
              metadata={"comment": json.dumps(info)})
    if not ctx.quiet:
        seconds = frames.shape[0] / cfg.fps
        narr = f", narration {len(audio) / sr:.2f} s ({cfg.sync})" if audio is not None else ", no audio"
        print(f"text-to-video: {frames.shape[0]} frames {cfg.width}x{cfg.height} at {cfg.fps} fps "
              f"({seconds:.2f} s){narr} -> {out}", file=sys.stderr)
    return str(out)
