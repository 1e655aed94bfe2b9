"""Training data for SHDT: curriculum stages, aspect-ratio buckets, cached or synthetic latent clips.

A **clip** is ``latents [C, T, h, w]`` (normalised VAE latents) + ``text [L, D]`` + ``text_mask [L]``,
encoded once (``tools/cache_latents.py``) so training never runs the autoencoder or the text encoder.
Cached clips live in WebDataset shards (``index.npz`` + ``*.tar``, :mod:`aiprod_core.data.shards`; a
local folder or object storage) or, the older layout, one safetensors file each (:func:`write_clip`).
Latents are cached per stage resolution (a ``resolution`` index column, or ``cache_dir/<resolution>/``),
as cropping a 1024-pixel latent to 256 would train on a zoomed-in patch instead of the whole picture.

**Buckets**: each stage trains at a long side of ``resolution`` pixels in several aspect ratios
(``"16:9"``...), sizes rounded to multiples of 16 pixels (VAE x8 * patch 2). A batch comes from one
bucket; cached clips go to the bucket nearest their aspect ratio and are randomly cropped to it.

**Sampling**: the core :class:`~aiprod_core.data.EpochSampler` (epochs without replacement, ranks
disjoint, all ranks on one bucket per step) picks a step's clips from the step alone, DataLoader
workers read them ahead, so the data position of a resumed run is the step itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
def clip_tensors(latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The stored form of a clip: bf16 latents and text, the prompt's padding dropped (re-padded per batch)."""
    keep = int(text_mask.bool().sum())
    return {"latents": latents.detach().to(torch.bfloat16).contiguous().cpu(),
            "text": text[:keep].detach().to(torch.bfloat16).contiguous().cpu(),
            "text_mask": text_mask[:keep].bool().contiguous().cpu()}


def clip_columns(latents: torch.Tensor, resolution: int) -> dict[str, int]:
    """A clip's index columns: the stage resolution it was made for and its latent frames / height / width."""
    _, t, h, w = latents.shape
    return {"resolution": int(resolution), "frames": int(t), "height": int(h), "width": int(w)}


def write_clip(path: str | Path, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> Path:
    """Save one clip (``latents [C, T, h, w]``, ``text [L, D]``, ``text_mask [L]``) as safetensors, atomically
    (a killed caching run leaves no half-written clip for training to trip on). The per-clip layout; large
    sets go to shards (:func:`write_clip_shard`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(clip_tensors(latents, text, text_mask), str(tmp))
    return path


def write_clip_shard(writer, key: str, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                     resolution: int, meta: dict | None = None) -> None:
    """Add one clip to a :class:`aiprod_core.data.shards.ShardWriter` (WebDataset shards + index columns)."""
    writer.write(key, clip_tensors(latents, text, text_mask), meta, clip_columns(latents, resolution))


@torch.no_grad()
def cache_clip(path: str | Path, video: torch.Tensor, caption: str, autoencoder, text_encoder) -> Path:
    """Encode ``video [3, T, H, W]`` in [-1, 1] and its caption once, and write the clip file."""
    latents = autoencoder.encode(video[None].to(next(autoencoder.parameters()).device))[0]
    text, mask = text_encoder.encode([caption])
    return write_clip(path, latents, text[0], mask[0])


class ClipFolder:
    """The per-clip layout (one safetensors file per clip in a folder), indexed once: the shapes are read
    from the file headers and cached in ``.clips.index.npz`` beside them until a file changes."""

    def __init__(self, folder: str | Path, resolution: int = 0):
        from aiprod_core.data import Index, fingerprint_files

        self.folder = Path(folder)
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise AiprodError(f"{self.folder}: no cached clips (*.safetensors, or index.npz + shards)")

        def build() -> Index:
            rows = []
            for f in files:
                with safe_open(str(f), framework="pt") as sf:
                    if not {"latents", "text", "text_mask"} <= set(sf.keys()):
                        raise AiprodError(f"{f}: a clip holds 'latents', 'text' and 'text_mask', found {sorted(sf.keys())}")
                    _, t, h, w = sf.get_slice("latents").get_shape()
                rows.append({"key": f.stem, "resolution": resolution, "frames": t, "height": h, "width": w})
            return Index.from_rows(rows, {"layout": "clip-folder"})

        self.index = Index.cached(self.folder / ".clips.index.npz", fingerprint_files(files, resolution), build)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.folder / f"{self.index['key'][i]}.safetensors"))


def open_clips(root: str | Path, resolution: int):
    """The clip reader of a stage resolution: WebDataset shards (``index.npz`` in ``root/<resolution>/`` or in
    ``root`` itself, a local folder or a URL) or a folder of clip files (``root/<resolution>/`` or ``root``)."""
    from aiprod_core.data.shards import INDEX_NAME, ShardReader, is_url

    if is_url(str(root)):
        return ShardReader(root)
    root = Path(root)
    for folder in (root / str(resolution), root):
        if (folder / INDEX_NAME).is_file():
            return ShardReader(folder)
    folder = root / str(resolution)
    return ClipFolder(folder if folder.is_dir() else root, resolution)


class _StageFetch:
    """The batch of one draw of one curriculum stage (picklable: runs in DataLoader workers)."""

    def __init__(self, reader, sampler, sizes: list[tuple[int, int]], stage: Stage, stage_index: int, seed: int,
                 rank: int):
        self.reader, self.sampler, self.sizes, self.stage = reader, sampler, sizes, stage
        self.key, self.rank = (seed, stage_index), rank

    def __call__(self, draw: int) -> dict[str, torch.Tensor]:
        from aiprod_core.data.sampler import derive_key

        step, micro = divmod(draw, self.sampler.grad_accum)
        lh, lw = self.sizes[self.sampler.bucket(step)]
        g = torch.Generator().manual_seed(derive_key(*self.key, draw, self.rank) & (2**63 - 1))
        clips = [crop_clip(self.reader[i], self.stage.latent_frames, lh, lw, g)
                 for i in self.sampler.indices(step, self.rank, micro)]
        return collate(clips)


def crop_clip(clip: dict[str, torch.Tensor], frames: int, lh: int, lw: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The first ``frames`` latent frames (a causal VAE codes latent frame 0 from one image frame), a random
    ``lh x lw`` window."""
    _, _, h, w = clip["latents"].shape
    y0, x0 = (int(torch.randint(n - k + 1, (1,), generator=g)) for n, k in ((h, lh), (w, lw)))
    return {**clip, "latents": clip["latents"][:, :frames, y0 : y0 + lh, x0 : x0 + lw]}


class CachedClips:
    """Cached clips (WebDataset shards or per-clip files), bucketed by stage.

    With the ``step`` (``batch(..., step=step)``) and the curriculum, batches follow the core
    :class:`~aiprod_core.data.EpochSampler`: epochs without replacement, disjoint across ranks, every rank on
    the same bucket at a step, prepared ``num_workers`` DataLoader workers ahead; the batch is a pure
    function of (seed, world size, step), so resume needs only the step. Without the step (the fixed
    evaluation batch, or an older recipe), clips are drawn from ``generator`` with replacement — in O(1)
    too, the buckets being assigned once per stage.
    """

    def __init__(self, root: str | Path, curriculum: list[Stage] | None = None, *, seed: int = 0, grad_accum: int = 1,
                 num_workers: int = 0, prefetch: int = 2, group_size: int = 1):
        from aiprod_core.data.shards import is_url

        self.root = str(root) if is_url(str(root)) else Path(root)
        self.curriculum, self.seed, self.grad_accum = curriculum, seed, grad_accum
        self.num_workers, self.prefetch = num_workers, prefetch
        self.group_size = group_size  # context parallelism: K neighbouring ranks draw the same clips
        self._readers: dict[int, object] = {}
        self._buckets: dict[tuple, np.ndarray] = {}
        self._loaders: dict[int, tuple] = {}
        self._last = (-1, 0)

    def reader(self, resolution: int):
        if resolution not in self._readers:
            self._readers[resolution] = open_clips(self.root, resolution)
        return self._readers[resolution]

    def buckets(self, stage: Stage, sizes: list[tuple[int, int]]) -> np.ndarray:
        """Bucket id per indexed clip for ``stage`` (-1: too short, too small, other resolution); once per stage."""
        from aiprod_core.data import buckets as grid

        key = (stage.resolution, stage.latent_frames, tuple(sizes))
        if key not in self._buckets:
            idx = self.reader(stage.resolution).index
            ids = grid.assign(idx["frames"], idx["height"], idx["width"], sizes, stage.latent_frames)
            if "resolution" in idx:
                res = idx["resolution"]
                ids = np.where((res == stage.resolution) | (res == 0), ids, -1)
            if not (ids >= 0).any():
                raise AiprodError(f"{self.root}: no cached clip is large enough for stage {stage.resolution}px, "
                                  f"{stage.frames} frames (latent {stage.latent_frames} x {sizes})")
            self._buckets[key] = ids
        return self._buckets[key]

    def batch(self, stage: Stage, ratios: list[str], generator: torch.Generator,
              step: int | None = None) -> dict[str, torch.Tensor]:
        sizes = [(h // SPATIAL, w // SPATIAL) for h, w in bucket_sizes(stage.resolution, stage.aspect_ratios or ratios)]
        if step is not None and self.curriculum:
            return self._sampled(step, ratios)
        ids = self.buckets(stage, sizes)
        counts = torch.from_numpy(np.bincount(ids[ids >= 0], minlength=len(sizes))).float()
        b = int(torch.multinomial(counts, 1, generator=generator))
        members = np.flatnonzero(ids == b)  # cached per bucket below would save O(N) on repeated evals
        reader = self.reader(stage.resolution)
        lh, lw = sizes[b]
        picks = torch.randint(len(members), (stage.batch_size,), generator=generator).tolist()
        return collate([crop_clip(reader[int(members[i])], stage.latent_frames, lh, lw, generator) for i in picks])

    def _sampled(self, step: int, default_ratios: list[str]) -> dict[str, torch.Tensor]:
        from aiprod_core.data import EpochSampler, StepLoader, rank_and_world

        i, stage = stage_at(self.curriculum, step)
        start = sum(s.steps for s in self.curriculum[:i])
        micro = self._last[1] + 1 if self._last[0] == step else 0  # the trainer's accumulation calls, in order
        self._last = (step, micro)
        if i not in self._loaders:
            for j in list(self._loaders):  # one stage's workers at a time
                self._loaders.pop(j)[0].close()
            rank, world = rank_and_world()
            rank, world = rank // self.group_size, max(1, world // self.group_size)
            ratios = stage.aspect_ratios or default_ratios
            sizes = [(h // SPATIAL, w // SPATIAL) for h, w in bucket_sizes(stage.resolution, ratios)]
            try:
                sampler = EpochSampler(self.buckets(stage, sizes), batch_size=stage.batch_size, world_size=world,
                                       seed=self.seed + 1_000_003 * i, grad_accum=self.grad_accum)
            except ValueError as err:
                raise AiprodError(f"{self.root}: stage {i} ({stage.resolution}px): {err}") from None
            fetch = _StageFetch(self.reader(stage.resolution), sampler, sizes, stage, i, self.seed, rank)
            self._loaders[i] = (StepLoader(fetch, end=stage.steps * self.grad_accum, num_workers=self.num_workers,
                                           prefetch_factor=self.prefetch), sampler)
        loader, _ = self._loaders[i]
        return loader((step - start) * self.grad_accum + micro)
