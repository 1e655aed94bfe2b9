"""Pipeline kind ``video-reconstruct``: an mp4 through a video autoencoder (encode → decode) and back to mp4.

    input.mp4 ─ frames ─ crop (1 + 4k frames, H/W multiples of 8) ─ autoencoder.encode ─ latents
                                                                     autoencoder.decode ─ output.mp4 + PSNR

Example (``examples/video_reconstruct.yaml``)::

    pipeline: video-reconstruct
    autoencoder: {name: hwvae, preset: tiny}
    input: out/examples/clip.mp4
    output: out/examples/clip_rec.mp4

Cropping. The autoencoder codes the first frame alone and then groups of 4 frames, and 8x8 pixel
blocks, so the clip is *cropped* (never resized) before encoding: the frame count down to the largest
``1 + 4k`` (at most ``frames``), the width and height down to multiples of 8 (at most ``size``), taking
a centred window. The cropped clip is the reference for the PSNR, which is computed on the 8-bit frames
actually written (so it includes the rounding to uint8 but not the H.264 loss of the output file).
The input's audio, if any, is dropped.
"""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef, RunContext

if TYPE_CHECKING:  # numpy and torch are imported where a clip is read: `aiprod validate` stays light (issue 21)
    import numpy as np


class VideoReconstructConfig(StrictModel):
    """``pipeline: video-reconstruct`` — encode and decode a clip with a video-autoencoder, report PSNR."""

    autoencoder: ComponentRef = Field(description="any video-autoencoder (weights folder or preset)")
    input: str = Field(description="mp4 (or any file PyAV reads) to reconstruct")
    output: str = Field(description="reconstructed mp4; refused if it exists unless --overwrite")
    frames: int | None = Field(None, ge=1, description="use at most this many frames (then cropped to 1 + 4k)")
    size: tuple[int, int] | None = Field(None, description="[width, height] centre crop (then to multiples of 8)")
    fps: float | None = Field(None, gt=0, description="output frame rate (default: the input's)")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the output")

    @field_validator("autoencoder")
    @classmethod
    def _kind(cls, ref: ComponentRef) -> ComponentRef:
        if ref.kind is None:
            return ref.model_copy(update={"kind": "video-autoencoder"})
        if ref.kind != "video-autoencoder":
            raise ValueError(f"expected a video-autoencoder component, got kind {ref.kind!r}")
        return ref

    @field_validator("size")
    @classmethod
    def _size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 8:
            raise ValueError(f"size {list(size)}: width and height must be at least 8")
        return size


def crop_frames(frames: np.ndarray, max_frames: int | None = None, size: tuple[int, int] | None = None,
                spatial: int = 8, temporal: int = 4) -> np.ndarray:
    """Crop ``uint8 [T, H, W, 3]`` to ``1 + temporal*k`` frames and a centred ``spatial``-multiple window."""
    import numpy as np

    t, h, w = frames.shape[:3]
    if max_frames is not None:
        t = min(t, max_frames)
    t = 1 + (t - 1) // temporal * temporal
    if size is not None:
        w, h = min(w, size[0]), min(h, size[1])
    h2, w2 = h // spatial * spatial, w // spatial * spatial
    if h2 < spatial or w2 < spatial:
        raise AiprodError(f"clip of {frames.shape[2]}x{frames.shape[1]} is smaller than one {spatial}x{spatial} block")
    top, left = (frames.shape[1] - h2) // 2, (frames.shape[2] - w2) // 2
    return np.ascontiguousarray(frames[:t, top:top + h2, left:left + w2])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays (peak 255); ``inf`` when identical."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def run(cfg: VideoReconstructConfig, ctx: RunContext) -> dict[str, Any]:
    """Read, crop, encode, decode, write. Returns ``{"output", "psnr", "frames", "latent_shape"}``."""
    import torch

    from aiprod_pipelines.media import frames_to_video, read_mp4, video_to_frames, write_mp4

    src = ctx.resolve(cfg.input)
    if not src.is_file():
        raise AiprodError(f"{ctx.source}: input: {src} not found")
    out = ctx.output_path(cfg.output)  # refuse an existing output before any weight is read
    clip = read_mp4(src, audio=False, max_frames=cfg.frames)
    ae = cfg.autoencoder.load(ctx)
    spatial = int(getattr(ae, "spatial_compression", 8))
    temporal = int(getattr(ae, "temporal_compression", 4))
    ref = crop_frames(clip.frames, cfg.frames, cfg.size, spatial, temporal)
    if ref.shape != clip.frames.shape and not ctx.quiet:
        print(f"video-reconstruct: cropped {list(clip.frames.shape[:3])} to {list(ref.shape[:3])} "
              f"(frames 1 + {temporal}k, H/W multiples of {spatial})", file=sys.stderr)
    video = torch.from_numpy(frames_to_video(ref))[None].to(device=ctx.device, dtype=ctx.dtype)
    with torch.no_grad():
        latents = ae.encode(video)
        rec = ae.decode(latents)
    if tuple(rec.shape) != tuple(video.shape):
        raise AiprodError(f"{cfg.autoencoder.name}: decoded {list(rec.shape)}, expected {list(video.shape)}")
    frames = video_to_frames(rec[0].float().clamp(-1, 1))
    score = psnr(ref, frames)
    fps = cfg.fps or clip.fps
    info = {"psnr_db": round(score, 3), "source": str(src), "latent_shape": list(latents.shape)}
    write_mp4(out, frames, fps, crf=cfg.crf, overwrite=True, metadata={"comment": json.dumps(info)})
    if not ctx.quiet:
        print(f"video-reconstruct: {ref.shape[0]} frames {ref.shape[2]}x{ref.shape[1]}, latents "
              f"{list(latents.shape)}, PSNR {score:.2f} dB -> {out}", file=sys.stderr)
    return {"output": str(out), "psnr": score, "frames": int(ref.shape[0]), "latent_shape": tuple(latents.shape)}
