"""Spatial tiling with linear overlap blending, for frames too large for one pass.

Each tile is processed on its own (with the temporal causal cache inside ``fn``) and written
into a pre-allocated output; overlapping borders are cross-faded with linear ramps whose
weights sum to one, so seams vanish where neighbouring tiles agree. The ramp covers only the
middle of the overlap: tile edges, where zero padding replaces the missing neighbourhood, get
weight 0. HW-VAE has no global operation (per-position norms, no attention), so once that
unused edge covers the receptive field, tiled equals untiled exactly. Peak memory is the
output plus one tile's activations, whatever the frame size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with ``tile``-long windows overlapping by ≥ ``overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _edge(overlap: int, blend: float) -> torch.Tensor:
    """Weights rising from 0 to 1 across an ``overlap``-long shared border.

    The outer ``(1 - blend) / 2`` of the border gets weight 0 (a tile's edge, where its
    receptive field is cut, is never used), the central ``blend`` fraction a linear ramp; the
    mirrored ramp of the neighbour sums with it to one. ``blend=1``: plain linear cross-fade;
    ``blend=0``: hard cut in the middle.
    """
    ramp = max(1, round(overlap * blend)) if overlap else 0
    dead = (overlap - ramp) // 2
    ramp = overlap - 2 * dead
    w = torch.zeros(overlap)
    w[dead:dead + ramp] = (torch.arange(ramp) + 0.5) / ramp
    w[dead + ramp:] = 1.0
    return w


def _ramp(length: int, fade_in: int, fade_out: int, blend: float) -> torch.Tensor:
    w = torch.ones(length)
    if fade_in:
        w[:fade_in] = _edge(fade_in, blend)
    if fade_out:
        w[length - fade_out:] = torch.minimum(w[length - fade_out:], _edge(fade_out, blend).flip(0))
    return w


def tiled_2d(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    factor: int,
    down: bool,
    blend: float = 0.5,
) -> torch.Tensor:
    """Apply ``fn`` to ``x [B, C, T, H, W]`` tile by tile over (H, W) and blend.

    ``tile``/``overlap`` are in input pixels; ``fn`` scales space by ``1/factor`` (``down``)
    or ``factor``. Tiles at the frame border are not faded on the border side. Where the
    unused border half-width ``overlap·(1 − blend)/2`` covers the receptive field of ``fn``,
    the result equals the untiled pass up to float rounding.
    """
    H, W = x.shape[-2:]
    scale = (lambda n: n // factor) if down else (lambda n: n * factor)
    hs, ws = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    out = weight = None
    for i, h0 in enumerate(hs):
        for j, w0 in enumerate(ws):
            h1, w1 = min(H, h0 + tile), min(W, w0 + tile)
            y = fn(x[..., h0:h1, w0:w1])
            if out is None:
                out = y.new_zeros((*y.shape[:3], scale(H), scale(W)))
                weight = torch.zeros(scale(H), scale(W), dtype=torch.float32)
            # overlap actually shared with the previous/next tile on each axis
            top = scale(hs[i - 1] + tile - h0) if i > 0 else 0
            bottom = scale(h1 - hs[i + 1]) if i + 1 < len(hs) else 0
            left = scale(ws[j - 1] + tile - w0) if j > 0 else 0
            right = scale(w1 - ws[j + 1]) if j + 1 < len(ws) else 0
            m = _ramp(y.shape[-2], top, bottom, blend)[:, None] * _ramp(y.shape[-1], left, right, blend)[None, :]
            oh, ow = scale(h0), scale(w0)
            out[..., oh:oh + y.shape[-2], ow:ow + y.shape[-1]] += y * m.to(y.device, y.dtype)
            weight[oh:oh + y.shape[-2], ow:ow + y.shape[-1]] += m
    return out.div_(weight.to(out.device, out.dtype))  # in place: the output is the big tensor here
