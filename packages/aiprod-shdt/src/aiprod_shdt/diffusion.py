"""Rectified flow for SHDT: training timesteps, the velocity loss, Euler / Heun sampling and CFG.

Rectified flow (Liu et al. 2022, https://arxiv.org/abs/2209.03003; SD3, Esser et al. 2024,
https://arxiv.org/abs/2403.03206): ``x_sigma = (1 - sigma) x0 + sigma * noise``, the model predicts
the velocity ``noise - x0`` and sampling integrates ``dx/dsigma = v`` from sigma = 1 to 0.

Timestep shift. More tokens carry more redundant signal, so a given sigma destroys less of the
picture at high resolution; SD3 (sec. 5.3.2) shifts ``sigma' = a s / (1 + (a - 1) s)`` with
``a = sqrt(m / n)`` (token counts). We use ``a(N) = clamp(base_shift * sqrt(N / base_tokens))``:
1.0 at 1,024 tokens, 1.1 at 256x256x17 (1,280 tokens), 7.5 at 1024x576x97 (57,600 tokens) — close
to the shift 7 HunyuanVideo uses at 720p. Training draws ``s`` from a logit-normal (SD3's best
sampler) and applies the *same* ``a(N)`` as sampling, so both see the same noise levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field

from aiprod_core.config import StrictModel


class FlowConfig(StrictModel):
    """Noise-level distribution shared by training and sampling."""

    base_tokens: int = Field(1024, ge=1, description="token count at which the shift is base_shift")
    base_shift: float = Field(1.0, gt=0, description="shift at base_tokens; grows with sqrt(tokens)")
    min_shift: float = Field(1.0, gt=0)
    max_shift: float = Field(12.0, gt=0)
    logit_mean: float = Field(0.0, description="training: mean of the logit-normal before the shift")
    logit_std: float = Field(1.0, gt=0, description="training: std of the logit-normal before the shift")


def token_shift(num_tokens: int, cfg: FlowConfig | None = None) -> float:
    """The resolution-dependent shift ``a(N)`` for ``num_tokens`` video tokens."""
    cfg = cfg or FlowConfig()
    a = cfg.base_shift * math.sqrt(num_tokens / cfg.base_tokens)
    return float(min(max(a, cfg.min_shift), cfg.max_shift))


def shift_sigmas(s: torch.Tensor, shift: float) -> torch.Tensor:
    """``a s / (1 + (a - 1) s)``: monotone, keeps 0 and 1, moves mass towards 1 for ``a > 1``."""
    return shift * s / (1 + (shift - 1) * s)


def training_sigmas(batch: int, num_tokens: int, generator: torch.Generator, cfg: FlowConfig | None = None) -> torch.Tensor:
    """``[batch]`` noise levels: shifted logit-normal, drawn only from ``generator``."""
    cfg = cfg or FlowConfig()
    u = torch.randn(batch, generator=generator) * cfg.logit_std + cfg.logit_mean
    return shift_sigmas(torch.sigmoid(u), token_shift(num_tokens, cfg))


def sampling_sigmas(steps: int, num_tokens: int, cfg: FlowConfig | None = None) -> torch.Tensor:
    """Decreasing ``[steps + 1]`` schedule from 1 to 0 with the same token-count shift."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1), token_shift(num_tokens, cfg))


def flow_loss(model: Callable, x0: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
              noise: torch.Tensor, sigma: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the predicted and the true velocity ``noise - x0`` at ``x_sigma``."""
    s = sigma.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    xt = (1 - s) * x0 + s * noise
    kw = {} if guidance is None else {"guidance": guidance}
    v = model(xt, sigma, text, text_mask, **kw)
    return F.mse_loss(v.float(), (noise - x0).float())


# -- samplers ----------------------------------------------------------------------------------------
def FlowSampler(method: str = "euler", flow: FlowConfig | None = None, progress: bool = False):  # noqa: N802
    """The sampler component named ``method`` (``euler``, ``heun``, ``dpm++2m``; :mod:`aiprod_shdt.samplers`).

    Kept under its former class name for callers; the samplers themselves live in one place.
    """
    from aiprod_shdt.samplers import get_sampler

    return get_sampler(method, flow=flow, progress=progress)


def _pad_to(t: torch.Tensor, m: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    if t.shape[1] == length:
        return t, m
    pad = length - t.shape[1]
    return F.pad(t, (0, 0, 0, pad)), F.pad(m, (0, pad), value=False)


@torch.no_grad()
def sample(model, text: torch.Tensor, text_mask: torch.Tensor, latent_shape: tuple[int, ...], steps: int = 30,
           guidance_scale: float = 5.0, neg_text: torch.Tensor | None = None, neg_text_mask: torch.Tensor | None = None,
           seed: int = 0, progress: bool = True, method: str = "euler", first_frame: torch.Tensor | None = None,
           guidance: float | None = None, flow: FlowConfig | None = None,
           first_frame_mode: str = "noised") -> torch.Tensor:
    """Generate normalised latents ``[B, *latent_shape]`` (``latent_shape = (C, T, H, W)``).

    ``guidance_scale`` > 1 enables classifier-free guidance (Ho & Salimans 2022): the conditional and
    unconditional velocities are computed in one batch, ``v = v_u + g (v_c - v_u)``. The unconditional
    branch uses ``neg_text`` (negative prompt) or, when None, the empty prompt (all text masked), which
    is what training's text dropout teaches. ``guidance`` feeds a guidance-distilled model's embedding.
    ``first_frame [B, C, 1, H, W]`` (an encoded image) conditions on the first latent frame by
    replacement (SDEdit, Meng et al. 2022): before each model call that frame is set to the image noised
    to the current sigma with a fixed noise, and to the clean image at the end. ``first_frame_mode="clean"``
    keeps that frame clean at every step instead: what a model pretrained with first-frame conditioning
    (``first_frame.probability`` of the ``shdt`` recipe, LTX-Video / Wan image-to-video) has learnt.
    Noise is drawn on the CPU from ``seed``, so results do not depend on the device.
    """
    if first_frame_mode not in ("noised", "clean"):
        raise ValueError(f"first_frame_mode {first_frame_mode!r}: expected 'noised' or 'clean'")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    b = text.shape[0]
    shape = (b, *latent_shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    text, text_mask = text.to(device, dtype), text_mask.to(device).bool()
    cfg_on = guidance_scale != 1.0
    if cfg_on:
        if neg_text is None:
            neg_text, neg_text_mask = torch.zeros_like(text), torch.zeros_like(text_mask)
        else:
            neg_text = neg_text.to(device, dtype).expand(b, -1, -1)
            neg_text_mask = (neg_text_mask if neg_text_mask is not None else torch.ones(neg_text.shape[:2], dtype=torch.bool))
            neg_text_mask = neg_text_mask.to(device).bool().expand(b, -1)
        length = max(text.shape[1], neg_text.shape[1])
        text, text_mask = _pad_to(text, text_mask, length)
        neg_text, neg_text_mask = _pad_to(neg_text, neg_text_mask, length)
        text_all, mask_all = torch.cat([text, neg_text]), torch.cat([text_mask, neg_text_mask])
    g = None if guidance is None else torch.full((2 * b if cfg_on else b,), float(guidance), device=device, dtype=dtype)

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        kw = {} if g is None else {"guidance": g}
        if not cfg_on:
            return model(x.to(dtype), sigma.to(dtype), text, text_mask, **kw)
        v = model(torch.cat([x, x]).to(dtype), torch.cat([sigma, sigma]).to(dtype), text_all, mask_all, **kw).float()
        v_c, v_u = v.chunk(2)
        return v_u + guidance_scale * (v_c - v_u)

    callback = None
    if first_frame is not None:
        ff = first_frame.to(device, torch.float32)
        if ff.shape != (b, latent_shape[0], 1, *latent_shape[2:]):
            raise ValueError(f"first_frame {tuple(ff.shape)}: expected {(b, latent_shape[0], 1, *latent_shape[2:])}")
        n0 = noise[:, :, :1].float()

        def callback(x: torch.Tensor, s: float) -> torch.Tensor:
            x = x.clone()
            x[:, :, :1] = ff if first_frame_mode == "clean" else (1 - s) * ff + s * n0
            return x

    num_tokens = latent_shape[1] * (latent_shape[2] // model.patch_size) * (latent_shape[3] // model.patch_size)
    sampler = FlowSampler(method, flow, progress=progress)
    return sampler.sample(velocity, noise, sampler.sigmas(steps, num_tokens), callback=callback)
