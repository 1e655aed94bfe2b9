"""Two-stage generation: low-resolution sample → latent ×2 → partial re-noise → a few refine steps.

The production pattern of LTX-Video (arXiv:2501.00103, "multi-scale" pipeline) and LTX-2: the
expensive denoising runs at half resolution, the upsampler doubles the latent, and the
denoiser only has to repair high frequencies, which needs a short trajectory started from a
mid-level sigma, not from pure noise. With rectified flow (``x_s = (1 - s) x_0 + s ε``)
re-noising the upsampled latent ``u`` to sigma ``s`` is ``(1 - s) u + s ε``; the Euler step
from ``s`` to ``s'`` is ``x += (s' - s) v`` with ``v = ε - x_0`` the denoiser's velocity.

:func:`two_stage_refine` is what the end-to-end pipeline calls; the ``upsample`` pipeline kind
(``aiprod run``) wraps it for a latents file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from aiprod_core.errors import AiprodError


def refine_sigmas(sigma: float, steps: int) -> torch.Tensor:
    """``[steps + 1]`` sigmas from ``sigma`` down to 0, evenly spaced."""
    if not 0.0 < sigma <= 1.0:
        raise AiprodError(f"refine sigma must be in (0, 1], got {sigma}")
    if steps < 1:
        raise AiprodError(f"refine steps must be >= 1, got {steps}")
    return torch.linspace(sigma, 0.0, steps + 1)


def renoise(latents: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """Rectified-flow forward process at ``sigma``: ``(1 - sigma) x + sigma noise``."""
    return (1.0 - sigma) * latents + sigma * noise


def velocity_fn(
    denoiser: nn.Module,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    guidance: torch.Tensor | None = None,
    negative_text: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
) -> Callable:
    """``f(x, sigma [B]) -> v`` (float32) for a video-denoiser; classifier-free guidance when ``cfg_scale != 1``.

    The state ``x`` stays float32; only the denoiser's inputs are cast to its dtype (bf16
    accumulation over the steps would lose the small updates near sigma = 0).
    """
    dtype = _dtype(denoiser, torch.float32)

    def f(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        kw = {} if guidance is None else {"guidance": guidance}
        x, sigma = x.to(dtype), sigma.to(dtype)
        v = denoiser(x, sigma, text, text_mask, **kw).float()
        if cfg_scale != 1.0:
            v_neg = denoiser(x, sigma, negative_text, negative_mask, **kw).float()
            v = v_neg + cfg_scale * (v - v_neg)
        return v

    return f


def euler(fn: Callable, x: torch.Tensor, sigmas: torch.Tensor, progress: Callable | None = None) -> torch.Tensor:
    """Integrate ``dx/dsigma = v`` over the decreasing ``sigmas`` (first order, as LTX's distilled sampler)."""
    steps = range(len(sigmas) - 1)
    for i in progress(steps, desc="refine", total=len(steps)) if progress else steps:
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        v = fn(x, torch.full((x.shape[0],), s, device=x.device))
        x = x + (s_next - s) * v
    return x


def _dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    p = next(module.parameters(), None)
    return default if p is None else p.dtype


@torch.no_grad()
def two_stage_refine(
    denoiser: nn.Module,
    upsampler: nn.Module | None,
    low_latents: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    sigma: float = 0.6,
    steps: int = 3,
    sigmas: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    negative_text: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    sampler: Any | None = None,
    progress: Callable | None = None,
) -> torch.Tensor:
    """Stage 2 of two-stage generation. Returns refined normalised latents ``[B, C, T, 2H, 2W]`` (float32).

    ``low_latents`` are stage 1's clean (sigma = 0) normalised latents ``[B, C, T, H, W]``;
    ``upsampler=None`` refines them at their own size (plain SDEdit-style refinement).
    The noise is ``noise`` when given, else drawn from ``generator`` (CPU, so the same seed
    gives the same video on every device). ``sigmas`` (decreasing, ending at 0) overrides
    ``sigma``/``steps``, e.g. LTX-2's distilled ``[0.909375, 0.725, 0.421875, 0.0]``.
    ``sampler``: an optional component of kind ``sampler``; its ``sample(velocity_fn,
    x, sigmas)`` then integrates from the re-noised latent instead of the built-in Euler.
    """
    if cfg_scale != 1.0 and (negative_text is None or negative_mask is None):
        raise AiprodError("two_stage_refine: cfg_scale != 1 needs negative_text and negative_mask")
    dtype = _dtype(denoiser, torch.float32)
    device = low_latents.device
    x = low_latents
    if upsampler is not None:
        x = upsampler(low_latents.to(_dtype(upsampler, low_latents.dtype)))
    x = x.float()
    sigmas = refine_sigmas(sigma, steps) if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float32)
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0 or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise AiprodError(f"two_stage_refine: sigmas must decrease to 0, got {sigmas.tolist()}")
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    if noise.shape != x.shape:
        raise AiprodError(f"two_stage_refine: noise {tuple(noise.shape)} does not match latents {tuple(x.shape)}")
    x = renoise(x, float(sigmas[0]), noise.to(device, torch.float32))
    fn = velocity_fn(
        denoiser,
        text.to(device, dtype),
        text_mask.to(device).bool(),
        guidance=guidance,
        negative_text=None if negative_text is None else negative_text.to(device, dtype),
        negative_mask=None if negative_mask is None else negative_mask.to(device).bool(),
        cfg_scale=cfg_scale,
    )
    if sampler is not None:
        return sampler.sample(fn, x, sigmas.to(device))
    return euler(fn, x, sigmas.to(device), progress)
