"""Bucket grid: (resolution, frames, aspect) cells that clips are resized and cropped to.

A batch stacks clips of one shape, and a model trains better on whole pictures than on random crops of
a wrong aspect, so each clip goes to the grid cell of its nearest aspect ratio. Sizes are multiples of
``multiple`` pixels (16 = VAE x8 times patch 2), the long side is the resolution.
"""

from __future__ import annotations

import numpy as np


def parse_ratio(text: str) -> float:
    """``"16:9"`` → 1.777…"""
    try:
        w, h = (float(x) for x in str(text).split(":"))
        if w <= 0 or h <= 0:
            raise ValueError
        return w / h
    except ValueError:
        raise ValueError(f"aspect ratio {text!r}: expected 'W:H' such as '16:9'") from None


def bucket_size(resolution: int, ratio: str | float, multiple: int = 16) -> tuple[int, int]:
    """Pixel ``(height, width)`` of a cell: long side ``resolution``, both sides multiples of ``multiple``."""
    a = parse_ratio(ratio) if isinstance(ratio, str) else float(ratio)
    long_ = max(multiple, round(resolution / multiple) * multiple)
    short = max(multiple, round(resolution / max(a, 1 / a) / multiple) * multiple)
    return (short, long_) if a >= 1 else (long_, short)


def bucket_sizes(resolution: int, ratios: list[str], multiple: int = 16) -> list[tuple[int, int]]:
    return [bucket_size(resolution, r, multiple) for r in ratios]


def nearest(height: np.ndarray | int, width: np.ndarray | int, sizes: list[tuple[int, int]]) -> np.ndarray:
    """Index into ``sizes`` of the cell nearest in log aspect ratio, per ``(height, width)`` (vectorised)."""
    h = np.asarray(height, dtype=np.float64)
    w = np.asarray(width, dtype=np.float64)
    cells = np.log(np.array([sw / sh for sh, sw in sizes]))
    return np.abs(np.log(w / h)[..., None] - cells).argmin(-1)


def assign(frames: np.ndarray, height: np.ndarray, width: np.ndarray, sizes: list[tuple[int, int]],
           min_frames: int) -> np.ndarray:
    """Bucket id per item: its nearest-aspect cell, or ``-1`` when it is shorter than ``min_frames`` or
    smaller than the cell (it would have to be upscaled). O(N) once per stage, vectorised."""
    frames, height, width = (np.asarray(a) for a in (frames, height, width))
    if len(frames) == 0:
        return np.zeros(0, dtype=np.int64)
    b = nearest(height, width, sizes)
    sh = np.array([s[0] for s in sizes])[b]
    sw = np.array([s[1] for s in sizes])[b]
    ok = (frames >= min_frames) & (height >= sh) & (width >= sw)
    return np.where(ok, b, -1).astype(np.int64)


def resize_crop_box(height: int, width: int, target: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Scale ``(height, width)`` to cover ``target`` keeping the aspect, and centre-crop: returns the resized
    size and the crop's top-left corner."""
    th, tw = target
    s = max(th / height, tw / width)
    rh, rw = max(th, round(height * s)), max(tw, round(width * s))
    return (rh, rw), ((rh - th) // 2, (rw - tw) // 2)
