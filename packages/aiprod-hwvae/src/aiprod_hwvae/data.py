"""Video clip sources for HW-VAE training: ``clip(generator) -> [3, T, H, W]`` in [-1, 1].

Every random choice is drawn from the generator passed in (the trainer seeds it from
``(seed, step, rank)``), so a resumed run sees exactly the clips of an uninterrupted one.

* :class:`ProceduralSource`: moving and zooming crops over the real photographs shipped
  with scikit-image (``skimage.data``): pans, zooms in and out, with real textures and
  edges; for tests, demos and smoke-training without any dataset.
* :class:`Mp4FolderSource`: random clips of ``frames`` frames (every ``stride``-th frame)
  from a folder of mp4 files (indexed once, decoded by seeking with PyAV), resized (shorter
  side to ``scale`` × the crop) and randomly cropped.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aiprod_core.errors import AiprodError

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


@functools.cache
def _photo(name: str) -> torch.Tensor:
    """A ``skimage.data`` photo as ``[3, H, W]`` float in [-1, 1] (grey → 3 channels, alpha dropped)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = torch.from_numpy(img[..., :3].copy()).permute(2, 0, 1) / 255.0
    return img * 2 - 1


class ProceduralSource:
    """Pan/zoom clips over ``skimage.data`` photos; ``num_clips`` fixes a finite set (to overfit)."""

    def __init__(self, frames: int, height: int, width: int, photos: tuple[str, ...] = PHOTOS,
                 num_clips: int | None = None, seed: int = 0, max_zoom: float = 1.6):
        self.frames, self.height, self.width = frames, height, width
        self.photos, self.num_clips, self.seed, self.max_zoom = tuple(photos), num_clips, seed, max_zoom
        import skimage.data

        unknown = [p for p in self.photos if not callable(getattr(skimage.data, p, None))]
        if unknown:
            raise AiprodError(f"data.photos: {unknown[0]!r} is not in skimage.data (try {', '.join(PHOTOS[:4])})")

    def clip(self, generator: torch.Generator) -> torch.Tensor:
        if self.num_clips is not None:  # a fixed, finite set of clips: clip i comes from its own seed
            i = int(torch.randint(self.num_clips, (), generator=generator))
            generator = torch.Generator().manual_seed(self.seed * 7_777 + i)
        return self.render(generator)

    def render(self, g: torch.Generator) -> torch.Tensor:
        photo = _photo(self.photos[int(torch.randint(len(self.photos), (), generator=g))])
        _, ph, pw = photo.shape
        aspect = self.width / self.height
        # crop box height as a fraction of the largest box of that aspect that fits the photo
        fit = min(ph, pw / aspect)
        sizes = [fit * _uniform(g, 0.35, 0.9) for _ in range(2)]
        sizes[1] = min(fit * 0.95, max(fit * 0.2, sizes[0] * _uniform(g, 1 / self.max_zoom, self.max_zoom)))
        centres = []
        for s in sizes:
            bh, bw = s, s * aspect
            centres.append((_uniform(g, bh / 2, ph - bh / 2), _uniform(g, bw / 2, pw - bw / 2)))
        # pre-shrink the photo (antialiased) so that sampling the box does not alias
        shrink = min(1.0, 1.5 * self.height / min(sizes))
        if shrink < 1.0:
            photo = F.interpolate(photo[None], scale_factor=shrink, mode="bilinear", antialias=True)[0]
        flip = bool(torch.rand((), generator=g) < 0.5)
        a = torch.linspace(0, 1, self.frames)
        s = sizes[0] + (sizes[1] - sizes[0]) * a
        cy = centres[0][0] + (centres[1][0] - centres[0][0]) * a
        cx = centres[0][1] + (centres[1][1] - centres[0][1]) * a
        # affine_grid maps output [-1, 1] coords to input [-1, 1] coords (photo frame)
        theta = torch.zeros(self.frames, 2, 3)
        theta[:, 0, 0] = (s * aspect / pw) * (-1 if flip else 1)
        theta[:, 1, 1] = s / ph
        theta[:, 0, 2] = 2 * cx / pw - 1
        theta[:, 1, 2] = 2 * cy / ph - 1
        grid = F.affine_grid(theta, [self.frames, 3, self.height, self.width], align_corners=False)
        frames = F.grid_sample(photo[None].expand(self.frames, -1, -1, -1), grid, mode="bilinear",
                               padding_mode="reflection", align_corners=False)
        return frames.permute(1, 0, 2, 3).clamp(-1, 1).contiguous()  # [3, T, H, W]


class Mp4FolderSource:
    """Random clips from the ``*.mp4`` files of a folder (recursively), decoded with PyAV.

    The files' frame counts and rates come from the container headers once and are cached in
    ``.hwvae.index.npz`` in the folder (rebuilt when a file changes), so start-up does not decode every
    file on every rank; a clip is decoded from the key frame before its start (seeking), not from frame 0.
    """

    INDEX = ".hwvae.index.npz"

    def __init__(self, path: str | Path, frames: int, height: int, width: int, stride: int = 1,
                 scale: tuple[float, float] = (1.0, 1.25), *, seed: int = 0, num_workers: int = 0,
                 prefetch: int = 2, grad_accum: int = 1):
        self.seed, self.num_workers, self.prefetch, self.grad_accum = seed, num_workers, prefetch, grad_accum
        self._loader = None
        self._last = (-1, 0)
        self.root = Path(path)
        if not self.root.is_dir():
            raise AiprodError(f"data.path: {self.root} is not a folder")
        self.files = sorted(self.root.rglob("*.mp4"))
        if not self.files:
            raise AiprodError(f"data.path: no .mp4 file under {self.root}")
        self.frames, self.height, self.width, self.stride, self.scale = frames, height, width, stride, scale
        self.index = self._index()
        self._counts = {self.root / str(k): int(n) for k, n in zip(self.index["key"], self.index["frames"])}
        self._fps = {self.root / str(k): float(r) for k, r in zip(self.index["key"], self.index["fps"])}
        need = (frames - 1) * stride + 1
        self.usable = [f for f in self.files if self._counts[f] >= need]
        if not self.usable:
            raise AiprodError(f"data.path: no .mp4 file under {self.root} has the {need} frames a clip needs")

    def _index(self):
        from aiprod_core.data import Index, fingerprint_files
        from aiprod_core.data.video import probe

        def build() -> Index:
            rows = []
            for f in self.files:
                info = probe(f)
                rows.append({"key": f.relative_to(self.root).as_posix(), "frames": info.frames, "fps": info.fps,
                             "height": info.height, "width": info.width})
            return Index.from_rows(rows, {"kind": "hwvae-mp4"})

        return Index.cached(self.root / self.INDEX, fingerprint_files(self.files), build)

    def _count(self, path: Path) -> int:
        return self._counts[path]

    def _decode(self, path: Path, start: int) -> torch.Tensor:
        from aiprod_core.data.video import read_window

        fps = self._fps[path] or 25.0
        frames = read_window(path, start / fps, self.frames, fps / self.stride)
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [T, 3, H, W]

    def batch_at(self, step: int, size: int) -> torch.Tensor:
        """The clips of ``step`` for this rank: files from the core epoch sampler (each file once per epoch,
        ranks disjoint), window and crop from a generator of (seed, step, rank), decoded by DataLoader
        workers ahead of the loop. A pure function of the step (exact resume)."""
        from aiprod_core.data import EpochSampler, StepLoader, rank_and_world

        micro = self._last[1] + 1 if self._last[0] == step else 0
        self._last = (step, micro)
        if self._loader is None or self._loader.fetch.size != size:
            rank, world = rank_and_world()
            sampler = EpochSampler([0] * len(self.usable), batch_size=size, world_size=world, seed=self.seed,
                                   grad_accum=self.grad_accum)
            self._loader = StepLoader(_Mp4Fetch(self, sampler, size, rank), end=1 << 40,
                                      num_workers=self.num_workers, prefetch_factor=self.prefetch)
        return self._loader(step * self.grad_accum + micro % self.grad_accum)

    def clip(self, g: torch.Generator) -> torch.Tensor:
        return self.clip_from(self.usable[int(torch.randint(len(self.usable), (), generator=g))], g)

    def clip_from(self, path: Path, g: torch.Generator) -> torch.Tensor:
        need = (self.frames - 1) * self.stride + 1
        start = int(torch.randint(self._count(path) - need + 1, (), generator=g))
        video = self._decode(path, start)
        _, _, h, w = video.shape
        k = max(self.height / h, self.width / w) * _uniform(g, *self.scale)
        nh, nw = max(self.height, round(h * k)), max(self.width, round(w * k))
        video = F.interpolate(video, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top = int(torch.randint(nh - self.height + 1, (), generator=g))
        left = int(torch.randint(nw - self.width + 1, (), generator=g))
        video = video[:, :, top:top + self.height, left:left + self.width]
        return video.permute(1, 0, 2, 3).clamp(-1, 1).contiguous()


class _Mp4Fetch:
    """One draw of :meth:`Mp4FolderSource.batch_at` (runs in DataLoader workers)."""

    def __init__(self, source: Mp4FolderSource, sampler, size: int, rank: int):
        self.source, self.sampler, self.size, self.rank = source, sampler, size, rank

    def __call__(self, draw: int) -> torch.Tensor:
        from aiprod_core.data.sampler import derive_key

        step, micro = divmod(draw, self.sampler.grad_accum)
        g = torch.Generator().manual_seed(derive_key(self.source.seed, draw, self.rank) & (2**63 - 1))
        files = [self.source.usable[i] for i in self.sampler.indices(step, self.rank, micro)]
        return torch.stack([self.source.clip_from(f, g) for f in files])


def batch(source, size: int, generator: torch.Generator, step: int | None = None) -> torch.Tensor:
    """``size`` clips stacked: ``[size, 3, T, H, W]``. With ``step``, a source that has ``batch_at`` (mp4 files)
    draws them by epochs through the core sampler and its workers; otherwise from ``generator``."""
    if step is not None and hasattr(source, "batch_at"):
        return source.batch_at(step, size)
    return torch.stack([source.clip(generator) for _ in range(size)])
