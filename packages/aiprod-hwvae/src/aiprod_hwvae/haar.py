"""Fixed orthonormal Haar wavelet transforms over space and causal time.

One *level* splits a tensor ``[B, C, T, H, W]`` into frequency bands stacked on the channel
axis, band-major (``channel = band * C + c``), the low band first:

* spatial level: each 2×2 block ``(a b / c d)`` becomes ``LL, LH, HL, HH`` with the
  orthonormal 4-point Hadamard matrix / 2, so ``[B, 4C, T, H/2, W/2]``;
* temporal level (**causal**): frame 0 is kept on its own (low band = frame 0, high band = 0),
  then frames ``(1, 2), (3, 4), …`` become ``L = (a + b)/√2`` and ``H = (a − b)/√2``, so
  ``T = 1 + 2m`` frames become ``1 + m``. The first frame is therefore coded like an image
  and no frame ever depends on a later one (WF-VAE, Li et al. 2024, arXiv:2411.17459, and
  the causal VAEs of CogVideoX/Wan treat the first frame the same way);
* a 3D level applies the temporal split then the spatial one: 8 bands ordered
  ``(LL|LH|HL|HH) × (L|H)`` (the low band ``LL·L`` first).

Both are orthonormal on the non-padded coefficients (energy is preserved, the inverse is the
transpose), hence exact up to float rounding. ``first=False`` says the chunk does not start at
frame 0 of the video (block-wise inference): then every frame belongs to a pair.

The multi-level pyramid (Mallat) decomposes only the low band again at each level.
HW-VAE uses 2 temporal and 3 spatial levels: ``(1 + 4k, H, W) → (1 + k, H/8, W/8)``.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

_SQRT2 = math.sqrt(2.0)


def _hadamard4(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal (and self-inverse) 4-point Haar/Hadamard on dim 1 of ``[B, 4, ...]``."""
    a, b, c, d = x.unbind(1)
    return 0.5 * torch.stack((a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d), dim=1)


def dwt_space(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W] → [B, 4C, T, H/2, W/2]`` (bands LL, LH, HL, HH)."""
    blocks = rearrange(x, "b c t (h p) (w q) -> b (p q) c t h w", p=2, q=2)
    return rearrange(_hadamard4(blocks), "b k c t h w -> b (k c) t h w")


def idwt_space(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dwt_space`."""
    bands = rearrange(x, "b (k c) t h w -> b k c t h w", k=4)
    return rearrange(_hadamard4(bands), "b (p q) c t h w -> b c t (h p) (w q)", p=2, q=2)


def dwt_time(x: torch.Tensor, first: bool = True) -> torch.Tensor:
    """Causal temporal level ``[B, C, T, H, W] → [B, 2C, T', H, W]`` (bands L, H).

    ``first=True``: ``T = 1 + 2m`` and frame 0 stands alone (its high band is 0).
    ``first=False``: ``T = 2m``, all frames are paired.
    """
    head = x[:, :, :1] if first else x[:, :, :0]
    body = x[:, :, 1:] if first else x
    if body.shape[2] % 2:
        raise ValueError(f"dwt_time: {x.shape[2]} frames, expected {'1 + 2m' if first else '2m'}")
    a, b = body[:, :, 0::2], body[:, :, 1::2]
    low = torch.cat((head, (a + b) / _SQRT2), dim=2)
    high = torch.cat((torch.zeros_like(head), (a - b) / _SQRT2), dim=2)
    return torch.cat((low, high), dim=1)


def idwt_time(x: torch.Tensor, first: bool = True) -> torch.Tensor:
    """Inverse of :func:`dwt_time` (the high band of the lone first frame is ignored)."""
    low, high = x.chunk(2, dim=1)
    head = low[:, :, :1] if first else low[:, :, :0]
    lo = low[:, :, 1:] if first else low
    hi = high[:, :, 1:] if first else high
    a, b = (lo + hi) / _SQRT2, (lo - hi) / _SQRT2
    body = rearrange(torch.stack((a, b), dim=3), "b c t two h w -> b c (t two) h w")
    return torch.cat((head, body), dim=2)


def dwt(x: torch.Tensor, time: bool, first: bool = True) -> torch.Tensor:
    """One level: spatial, or temporal then spatial (8 bands, the low band ``LLL`` first)."""
    if time:
        x = dwt_time(x, first)
    return dwt_space(x)


def idwt(x: torch.Tensor, time: bool, first: bool = True) -> torch.Tensor:
    """Inverse of :func:`dwt`."""
    x = idwt_space(x)
    if time:
        x = idwt_time(x, first)
    return x


def bands(time: bool) -> int:
    return 8 if time else 4


class HaarPyramid:
    """Multi-level Haar decomposition; level ``i`` is temporal+spatial when ``time_levels[i]``.

    ``forward`` returns one coefficient tensor per level, each with its low band first; the
    low band of level ``i`` is what level ``i + 1`` decomposes (redundant, kept because the
    encoder reads every level). ``inverse`` rebuilds from the deepest level, replacing each
    level's low band by the reconstruction from below, so only the high bands of the upper
    levels and all bands of the last level are used.
    """

    def __init__(self, time_levels: tuple[bool, ...] = (True, True, False)):
        self.time_levels = tuple(time_levels)

    @property
    def spatial_factor(self) -> int:
        return 2 ** len(self.time_levels)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.time_levels)

    def forward(self, x: torch.Tensor, first: bool = True) -> list[torch.Tensor]:
        coeffs, c = [], x.shape[1]
        for time in self.time_levels:
            w = dwt(x, time, first)
            coeffs.append(w)
            x = w[:, :c]
        return coeffs

    __call__ = forward

    def inverse(self, coeffs: list[torch.Tensor], channels: int, first: bool = True) -> torch.Tensor:
        x = None
        for w, time in zip(reversed(coeffs), reversed(self.time_levels)):
            if x is not None:
                w = torch.cat((x, w[:, channels:]), dim=1)
            x = idwt(w, time, first)
        return x
