"""Training pairs for the latent upsampler: (latent of the half-resolution video, latent of the full one).

Three sources, every draw taken from an explicit ``torch.Generator`` (exact resume):

* ``encode``: videos (procedural, or clips read from a folder with PyAV) are encoded at full and at
  half resolution (2×2 area downsample) by a video-autoencoder from the registry (HW-VAE in
  production). This is the real task: the upsampler learns what the autoencoder puts in the
  latent of a sharper video, not the inverse of a pooling.
* ``synthetic``: no autoencoder needed. Smooth structured latents: band-limited random fields
  with a 1/f-like spectrum, moving over time, mixed across channels by a fixed matrix (real
  latent channels are correlated), plus soft-edged moving discs (edges are where bilinear
  interpolation loses). The low-resolution latent is the 2×2 area average of the high one.
* procedural videos (for ``encode`` without a folder): the same fields in RGB, in [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from aiprod_core.errors import AiprodError


def area_down2(x: torch.Tensor) -> torch.Tensor:
    """2×2 spatial area average of ``[B, C, T, H, W]`` (H, W even)."""
    return F.avg_pool3d(x, kernel_size=(1, 2, 2), stride=(1, 2, 2))


def _band_limited(
    g: torch.Generator, n: int, k: int, frames: int, h: int, w: int, *, slope: float, max_speed: float
) -> torch.Tensor:
    """``[n, k, frames, h, w]`` zero-mean unit-std fields with spectrum ~ 1/(1+f/f0)^slope, drifting in time."""
    fy = torch.fft.fftfreq(h).view(h, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    radius = torch.sqrt(fy**2 + fx**2)
    amp = 1.0 / (1.0 + radius / 0.04) ** slope
    amp[0, 0] = 0.0
    spec = torch.complex(torch.randn(n, k, h, fx.shape[1], generator=g), torch.randn(n, k, h, fx.shape[1], generator=g))
    spec = spec * amp
    # constant drift per sample: a phase ramp per frame (Fourier shift theorem)
    vel = (torch.rand(n, 1, 2, generator=g) * 2 - 1) * max_speed  # pixels per frame (y, x)
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1)
    phase = -2 * math.pi * t * (vel[..., 0].view(n, 1, 1, 1, 1) * fy + vel[..., 1].view(n, 1, 1, 1, 1) * fx)
    spec = spec.unsqueeze(1) * torch.polar(torch.ones_like(phase), phase)  # [n, T, k, h, wf]
    field = torch.fft.irfft2(spec, s=(h, w))
    field = rearrange(field, "n t k h w -> n k t h w")
    return field / field.flatten(2).std(dim=-1).clamp_min(1e-6)[..., None, None, None]


def _discs(g: torch.Generator, n: int, k: int, frames: int, h: int, w: int, count: int) -> torch.Tensor:
    """``[n, k, frames, h, w]``: soft-edged discs moving linearly, each with a random value per channel."""
    yy = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w) + 0.5
    out = torch.zeros(n, k, frames, h, w)
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    for _ in range(count):
        cy = torch.rand(n, 1, 1, 1, generator=g) * h
        cx = torch.rand(n, 1, 1, 1, generator=g) * w
        vy = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * 0.05 * h
        vx = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * 0.05 * w
        r = (0.08 + 0.2 * torch.rand(n, 1, 1, 1, generator=g)) * min(h, w)
        d = torch.sqrt((yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2)  # [n, T, h, w]
        mask = torch.sigmoid((r - d) / 0.6)  # edge width ~ 1 pixel of the high-resolution grid
        value = torch.randn(n, k, 1, 1, 1, generator=g)
        out = out + value * mask.unsqueeze(1)
    return out


def mixing_matrix(channels: int, sources: int, seed: int = 1234) -> torch.Tensor:
    """A fixed ``[channels, sources]`` mixing (the 'autoencoder' of the synthetic latents)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(channels, sources, generator=g) / math.sqrt(sources)


def synthetic_latents(
    g: torch.Generator, n: int, channels: int, frames: int, h: int, w: int, *, sources: int = 6, mix_seed: int = 1234
) -> torch.Tensor:
    """High-resolution smooth structured latents ``[n, channels, frames, h, w]``, roughly unit std."""
    fields = _band_limited(g, n, sources, frames, h, w, slope=2.5, max_speed=1.0)
    fields = fields + _discs(g, n, sources, frames, h, w, count=3)
    mixed = torch.einsum("cs,nsthw->ncthw", mixing_matrix(channels, sources, mix_seed), fields)
    return mixed / mixed.std().clamp_min(1e-6)


def synthetic_pairs(g: torch.Generator, n: int, channels: int, frames: int, h: int, w: int) -> dict[str, torch.Tensor]:
    """``{"low": [n, C, T, h/2, w/2], "high": [n, C, T, h, w]}`` (low = 2×2 area average of high)."""
    high = synthetic_latents(g, n, channels, frames, h, w)
    return {"low": area_down2(high), "high": high}


def procedural_videos(g: torch.Generator, n: int, frames: int, h: int, w: int) -> torch.Tensor:
    """RGB videos ``[n, 3, frames, h, w]`` in [-1, 1]: moving band-limited colour fields and discs."""
    fields = _band_limited(g, n, 3, frames, h, w, slope=2.0, max_speed=2.0) * 0.35
    fields = fields + _discs(g, n, 3, frames, h, w, count=4) * 0.4
    return torch.tanh(fields)


def procedural_clips(seed: int, n: int, frames: int, h: int, w: int, chunk: int = 8) -> torch.Tensor:
    """``n`` procedural videos as uint8 ``[n, 3, frames, h, w]``, generated ``chunk`` at a time (bounded memory)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([to_uint8(procedural_videos(g, min(chunk, n - i), frames, h, w)) for i in range(0, n, chunk)])


def read_video_clips(folder: str | Path, frames: int, h: int, w: int, limit: int) -> torch.Tensor:
    """Up to ``limit`` clips ``[N, 3, frames, h, w]`` uint8 from the video files of ``folder`` (PyAV).

    Each clip is the first ``frames`` frames of a file, resized (area) so that it covers
    ``h × w``, then centre-cropped.
    """
    try:
        import av
    except ImportError:  # pragma: no cover - av is a declared dependency
        raise AiprodError("data.video_dir needs PyAV: pip install av") from None
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"))
    if not files:
        raise AiprodError(f"data.video_dir: no .mp4/.mov/.mkv/.webm files in {folder}")
    clips = []
    for path in files:
        if len(clips) >= limit:
            break
        with av.open(str(path)) as container:
            got = []
            for frame in container.decode(video=0):
                got.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                if len(got) == frames:
                    break
        if len(got) < frames:
            continue  # too short for one clip
        video = rearrange(torch.stack(got).float(), "t h w c -> t c h w")
        scale = max(h / video.shape[-2], w / video.shape[-1])
        size = (max(h, round(video.shape[-2] * scale)), max(w, round(video.shape[-1] * scale)))
        video = F.interpolate(video, size=size, mode="area" if scale < 1 else "bilinear")
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        clip = rearrange(video[..., top : top + h, left : left + w], "t c h w -> c t h w")
        clips.append(clip.round().clamp(0, 255).to(torch.uint8))
    if not clips:
        raise AiprodError(f"data.video_dir: no clip of {frames} frames in {folder}")
    return torch.stack(clips)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float video → uint8 (how clips are stored in memory: 4× smaller than float32)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 video → float32 in [-1, 1]; float input is returned as float32."""
    return video.float() / 127.5 - 1.0 if video.dtype == torch.uint8 else video.float()


@torch.no_grad()
def encode_pairs(autoencoder: torch.nn.Module, videos: torch.Tensor, batch: int = 1) -> dict[str, torch.Tensor]:
    """Encode videos at full and at half resolution: ``{"low", "high", "video"}`` on the CPU.

    ``videos`` is uint8 or float in [-1, 1]; ``"video"`` comes back as given (keep it uint8).
    """
    lows, highs = [], []
    device = next(autoencoder.parameters()).device
    dtype = next(autoencoder.parameters()).dtype
    for i in range(0, videos.shape[0], batch):
        v = to_float(videos[i : i + batch]).to(device, dtype)
        highs.append(autoencoder.encode(v).float().cpu())
        lows.append(autoencoder.encode(area_down2(v)).float().cpu())
    return {"low": torch.cat(lows), "high": torch.cat(highs), "video": videos}
