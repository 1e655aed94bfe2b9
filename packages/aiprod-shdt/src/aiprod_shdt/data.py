"""Training data for SHDT: curriculum stages, aspect-ratio buckets, cached or synthetic latent clips.

A **clip** is ``latents [C, T, h, w]`` (normalised VAE latents) + ``text [L, D]`` + ``text_mask [L]``.
Cached clips are one safetensors file each (:func:`write_clip`, :func:`cache_clip` encodes a video
with the registry's autoencoder and text encoder once, so training never runs them). Latents are
cached per stage resolution (``cache_dir/<resolution>/``), as cropping a 1024-pixel latent to 256
would train on a zoomed-in patch instead of the whole picture.

**Buckets**: each stage trains at a long side of ``resolution`` pixels in several aspect ratios
(``"16:9"``...), sizes rounded to multiples of 16 pixels (VAE x8 * patch 2). A batch comes from one bucket; cached
clips go to the bucket nearest their aspect ratio and are randomly cropped to it. Every draw uses the
generator the trainer passes, so the data position of a resumed run is the step itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from safetensors import safe_open
from safetensors.torch import save_file

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_path

SPATIAL, TEMPORAL, PIXEL_MULTIPLE = 8, 4, 16


class Stage(StrictModel):
    """One curriculum stage, trained for ``steps`` steps after the previous ones."""

    resolution: int = Field(ge=16, description="long side in pixels (256, 512, 768, 1024; 1024 at 16:9 = 1024x576)")
    frames: int = Field(ge=1, description="video frames, 1 + 4k (latent frames 1 + k)")
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="clips per rank per step")
    aspect_ratios: list[str] | None = Field(None, description="buckets 'W:H' for this stage (default: data.aspect_ratios)")

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % TEMPORAL:
            raise ValueError(f"frames must be 1 + 4k for the x4 temporal VAE (e.g. {1 + TEMPORAL * ((v - 1) // TEMPORAL)}), got {v}")
        return v

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // TEMPORAL


def parse_ratio(text: str) -> float:
    try:
        w, h = (float(x) for x in text.split(":"))
        return w / h
    except ValueError:
        raise ValueError(f"aspect ratio {text!r}: expected 'W:H' such as '16:9'") from None


def bucket_sizes(resolution: int, ratios: list[str]) -> list[tuple[int, int]]:
    """Pixel ``(height, width)`` per ratio: the long side is ``resolution``, sides multiples of 16
    (``1024`` at ``16:9`` → 576 x 1024, the model card's maximum)."""
    out = []
    for r in ratios:
        a = parse_ratio(r)
        long_, short = resolution, max(PIXEL_MULTIPLE, round(resolution / max(a, 1 / a) / PIXEL_MULTIPLE) * PIXEL_MULTIPLE)
        long_ = max(PIXEL_MULTIPLE, round(long_ / PIXEL_MULTIPLE) * PIXEL_MULTIPLE)
        out.append((short, long_) if a >= 1 else (long_, short))
    return out


def stage_at(stages: list[Stage], step: int) -> tuple[int, Stage]:
    """The stage (index, stage) that trains step ``step`` (0-based); the last one continues."""
    end = 0
    for i, s in enumerate(stages):
        end += s.steps
        if step < end:
            return i, s
    return len(stages) - 1, stages[-1]


def collate(clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack clips of one bucket; text is right-padded (mask False) to the longest prompt."""
    length = max(c["text"].shape[0] for c in clips)
    text = torch.stack([F.pad(c["text"].float(), (0, 0, 0, length - c["text"].shape[0])) for c in clips])
    mask = torch.stack([F.pad(c["text_mask"].bool(), (0, length - c["text_mask"].shape[0])) for c in clips])
    return {"latents": torch.stack([c["latents"].float() for c in clips]), "text": text, "text_mask": mask}


# -- synthetic clips ----------------------------------------------------------------------------------
@dataclass
class SyntheticClips:
    """``num_clips`` fixed clips: smooth spatio-temporal waves (per-clip frequencies and phases) that
    are defined on continuous coordinates, so every bucket size renders the same content; and a fixed
    random prompt per clip. For tests and debugging (a tiny model can memorise them)."""

    num_clips: int
    channels: int
    text_dim: int
    text_tokens: int
    seed: int = 0

    def clip(self, index: int, latent_shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 7_777 + index)
        waves = 4
        freq = torch.randint(0, 3, (self.channels, waves, 3), generator=g).float()
        phase = torch.rand(self.channels, waves, generator=g) * 2 * math.pi
        amp = torch.randn(self.channels, waves, generator=g) / math.sqrt(waves)
        length = int(torch.randint(self.text_tokens // 2, self.text_tokens + 1, (1,), generator=g))
        text = torch.randn(length, self.text_dim, generator=g)
        t, h, w = latent_shape
        coords = torch.stack(torch.meshgrid(torch.linspace(0, 1, t), torch.linspace(0, 1, h), torch.linspace(0, 1, w),
                                            indexing="ij"))  # [3, t, h, w]
        arg = torch.einsum("ckd,dthw->ckthw", freq, coords) * 2 * math.pi + phase[..., None, None, None]
        latents = (amp[..., None, None, None] * torch.sin(arg)).sum(1) * math.sqrt(2)
        return {"latents": latents, "text": text, "text_mask": torch.ones(length, dtype=torch.bool)}

    def batch(self, stage: Stage, ratios: list[str], generator: torch.Generator) -> dict[str, torch.Tensor]:
        sizes = bucket_sizes(stage.resolution, stage.aspect_ratios or ratios)
        h, w = sizes[int(torch.randint(len(sizes), (1,), generator=generator))]
        idx = torch.randint(self.num_clips, (stage.batch_size,), generator=generator).tolist()
        return collate([self.clip(i, (stage.latent_frames, h // SPATIAL, w // SPATIAL)) for i in idx])


# -- cached clips ------------------------------------------------------------------------------------
def write_clip(path: str | Path, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> Path:
    """Save one clip (``latents [C, T, h, w]``, ``text [L, D]``, ``text_mask [L]``) as safetensors, atomically
    (a killed caching run leaves no half-written clip for training to trip on)."""
    path = Path(path)
    keep = int(text_mask.bool().sum())  # drop padding: prompts are re-padded per batch
    with atomic_path(path) as tmp:
        save_file({"latents": latents.detach().to(torch.bfloat16).contiguous().cpu(),
                   "text": text[:keep].detach().to(torch.bfloat16).contiguous().cpu(),
                   "text_mask": text_mask[:keep].bool().contiguous().cpu()}, str(tmp))
    return path


@torch.no_grad()
def cache_clip(path: str | Path, video: torch.Tensor, caption: str, autoencoder, text_encoder) -> Path:
    """Encode ``video [3, T, H, W]`` in [-1, 1] and its caption once, and write the clip file."""
    latents = autoencoder.encode(video[None].to(next(autoencoder.parameters()).device))[0]
    text, mask = text_encoder.encode([caption])
    return write_clip(path, latents, text[0], mask[0])


class CachedClips:
    """A folder of clip files per stage resolution, indexed by shape for bucketing."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._index: dict[int, list[tuple[Path, tuple[int, int, int]]]] = {}

    def index(self, resolution: int) -> list[tuple[Path, tuple[int, int, int]]]:
        if resolution not in self._index:
            folder = self.root / str(resolution)
            folder = folder if folder.is_dir() else self.root
            files = sorted(folder.glob("*.safetensors"))
            if not files:
                raise AiprodError(f"{folder}: no cached clips (*.safetensors) for resolution {resolution}")
            entries = []
            for f in files:
                with safe_open(str(f), framework="pt") as sf:
                    if not {"latents", "text", "text_mask"} <= set(sf.keys()):
                        raise AiprodError(f"{f}: a clip holds 'latents', 'text' and 'text_mask', found {sorted(sf.keys())}")
                    entries.append((f, tuple(sf.get_slice("latents").get_shape()[1:])))
            self._index[resolution] = entries
        return self._index[resolution]

    def batch(self, stage: Stage, ratios: list[str], generator: torch.Generator) -> dict[str, torch.Tensor]:
        sizes = [(h // SPATIAL, w // SPATIAL) for h, w in bucket_sizes(stage.resolution, stage.aspect_ratios or ratios)]
        members: list[list[tuple[Path, tuple[int, int, int]]]] = [[] for _ in sizes]
        for f, (t, h, w) in self.index(stage.resolution):
            b = min(range(len(sizes)), key=lambda i: abs(math.log((w / h) / (sizes[i][1] / sizes[i][0]))))
            if t >= stage.latent_frames and h >= sizes[b][0] and w >= sizes[b][1]:
                members[b].append((f, (t, h, w)))
        weights = torch.tensor([len(m) for m in members], dtype=torch.float)
        if weights.sum() == 0:
            raise AiprodError(f"{self.root}: no cached clip is large enough for stage {stage.resolution}px, "
                              f"{stage.frames} frames (latent {stage.latent_frames} x {sizes})")
        b = int(torch.multinomial(weights, 1, generator=generator))
        lh, lw = sizes[b]
        clips = []
        for i in torch.randint(len(members[b]), (stage.batch_size,), generator=generator).tolist():
            f, (t, h, w) = members[b][i]
            # temporal crops keep the start: a causal VAE codes latent frame 0 from one image frame
            t0 = 0
            y0, x0 = (int(torch.randint(n - k + 1, (1,), generator=generator)) for n, k in ((h, lh), (w, lw)))
            with safe_open(str(f), framework="pt") as sf:
                lat = sf.get_slice("latents")[:, t0 : t0 + stage.latent_frames, y0 : y0 + lh, x0 : x0 + lw]
                clips.append({"latents": lat, "text": sf.get_tensor("text"), "text_mask": sf.get_tensor("text_mask")})
        return collate(clips)
