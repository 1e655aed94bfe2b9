"""A captioned video corpus made offline: coloured shapes moving in stated directions over real photos.

Every clip is one shape (circle, square, triangle) of one colour moving left, right, up or down
across a crop of one of the photographs that ship inside scikit-image (``skimage.data``: a cat, an
astronaut, a cup of coffee...), captioned in plain words::

    a red circle moving left over a photo of a cat

Layout (``tools/make_video_corpus.py OUT``)::

    OUT/corpus.json                 the settings, the held-out combinations, clip counts
    OUT/train/clip_00000.mp4 ...    H.264, ``size`` x ``size``, ``frames`` frames at ``fps``
    OUT/train/captions.jsonl        one {"file", "caption", "prompt", "colour", "shape", "direction", "photo", ...}
                                    a clip; ``prompt`` is the caption without the photo (what a user types),
                                    so the file is also a (prompt, caption) set for the text-encoder recipe
    OUT/heldout/...                 the same for the held-out split

Held-out split: a few (colour, shape, direction) combinations per colour never occur in training
(every colour, shape and direction alone does), so held-out captions are new sentences, and a model
that shows the prompted colour there has learnt the word, not memorised the clip. Every clip is drawn
from its own generator seeded by (seed, split, index): the corpus is a pure function of its settings.

Two settings set how much each clip varies beyond its caption. ``background_crop``: "random" (the default)
crops a random square of half to all of the photo's short side per clip; "whole" takes the photo's centred
square every time, so "a photo of a cat" always means the same picture. ``path``: "random" (the default)
draws the start and the lane so that the path stays in the frame; "centred" puts the path's midpoint at
the frame's centre (size and travel are still drawn), so "moving left" always means starting right of the
centre and ending left of it. ``radius`` (default 0.12-0.16 of the side) and ``travel`` (0.3-0.45) set the
shape's size and how far it moves; the longest travel allowed is 1 - 2.6 x the largest radius, so that the
whole path stays in the frame. The HW-VAE trains on the default corpus (the widest variety of textures);
the demo text-to-video model on ``--background-crop whole --path centred`` (``data/t2v_corpus``): with
random crops and paths the tiny denoiser learnt the colour words but placed and moved the shape at chance
(direction 0.16-0.28, chance 0.25, after 6,000 steps), as the text then says little about where the shape
is in any one frame and the photo's texture dominates the loss.

The photos are desaturated (``background_saturation``, default 0.25: at 0.5 the reddish coffee
and astronaut photos still hold pixels as saturated as a shape) so that the saturated colour in a
frame is the shape's — what the colour-hit measure of ``aiprod eval`` looks for — while the photo
stays recognisable. Shapes are antialiased (4x supersampled coverage) and move at sub-pixel speed.

Clips are lossless H.264 by default (``crf 0``; High 4:4:4 Predictive profile, 4:2:0 chroma): they
decode to exactly the rendered frames (after chroma subsampling) on every run. With a lossy crf,
x264's floating-point mode decisions were seen to depend on the process state (one clip encoded
differently after an unrelated PNG had been loaded), which breaks "same seed, same corpus". About
40 kB a 64x64x17 clip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_dir

#: shape colours (RGB): saturated, well apart in hue (red 0°, yellow ~53°, green ~124°, cyan ~183°,
#: blue ~234°, magenta ~303°)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "yellow": (245, 220, 30),
    "green": (30, 200, 40),
    "cyan": (30, 210, 220),
    "blue": (40, 60, 235),
    "magenta": (220, 40, 210),
}
#: skimage.data photographs bundled in the scikit-image wheel → the words of the caption
PHOTOS: dict[str, str] = {
    "chelsea": "a cat",
    "astronaut": "an astronaut",
    "coffee": "a cup of coffee",
    "rocket": "a rocket",
    "camera": "a cameraman",
    "coins": "coins",
    "moon": "the moon",
    "hubble_deep_field": "galaxies",
    "brick": "a brick wall",
    "grass": "grass",
}
SHAPES = ("circle", "square", "triangle")
#: direction → (dx, dy) in image coordinates (y grows downwards)
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPLITS = ("train", "heldout")


class CorpusConfig(StrictModel):
    """Settings of :func:`make_video_corpus` (all recorded in ``corpus.json``)."""

    train_clips: int = Field(256, ge=1, description="clips in train/")
    heldout_clips: int = Field(32, ge=0, description="clips in heldout/")
    size: int = Field(64, ge=16, description="frame side in pixels; a multiple of 16 (VAE x8, patch 2)")
    frames: int = Field(17, ge=1, description="frames per clip, 1 + 4k (the video autoencoder's x4 in time)")
    fps: int = Field(8, ge=1, le=120)
    seed: int = Field(0, description="fixes the held-out combinations and, with draw_seed, every clip")
    draw_seed: int = Field(0, ge=0, description="0: clips drawn from (seed, split, index); another value draws "
                                                "fresh clips (photos, crops, sizes, paths) of the same combinations")
    colours: list[str] = Field(default_factory=lambda: ["red", "yellow", "green", "blue"])
    shapes: list[str] = Field(default_factory=lambda: list(SHAPES))
    directions: list[str] = Field(default_factory=lambda: list(DIRECTIONS))
    photos: list[str] = Field(default_factory=lambda: list(PHOTOS))
    heldout_per_colour: int = Field(2, ge=0, description="(shape, direction) pairs per colour kept out of train/")
    background_saturation: float = Field(0.25, ge=0, le=1, description="1 keeps the photo's colours, 0 makes it grey")
    background_crop: Literal["random", "whole"] = Field(
        "random", description="random: a random square crop (half to all of the short side) per clip; whole: "
                              "the photo's centred square, the same in every clip")
    radius: tuple[float, float] = Field((0.12, 0.16), description="the shape's radius (circle; the square's and the "
                                                                  "triangle's sizes follow), drawn in this range, "
                                                                  "as a fraction of the frame side")
    travel: tuple[float, float] = Field((0.3, 0.45), description="how far the shape moves over the clip, drawn "
                                                                 "in this range, as a fraction of the frame side")
    path: Literal["random", "centred"] = Field(
        "random", description="random: start and lane drawn so the path stays in the frame; centred: the path's "
                              "midpoint is the frame's centre (size and travel still drawn)")
    crf: int = Field(0, ge=0, le=51, description="x264 quality; 0 = lossless (see the module docstring)")

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"size must be a multiple of 16, got {v}")
        return v

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k, got {v}")
        return v

    @model_validator(mode="after")
    def _names(self) -> CorpusConfig:
        for field, known in (("colours", PALETTE), ("shapes", SHAPES), ("directions", DIRECTIONS), ("photos", PHOTOS)):
            values = getattr(self, field)
            bad = [v for v in values if v not in known]
            if bad or not values or len(set(values)) != len(values):
                raise ValueError(f"{field}: expected distinct names among {', '.join(known)}, got {values}")
        r_lo, r_hi = self.radius
        if not 0.02 <= r_lo <= r_hi <= 0.3:
            raise ValueError(f"radius: expected 0.02 <= min <= max <= 0.3 of the side, got {list(self.radius)}")
        lo, hi = self.travel
        longest = 1 - 2 * 1.3 * r_hi  # the whole path of the largest shape (margin 1.3 r) stays in the frame
        if not 0 < lo <= hi <= longest + 1e-9:
            raise ValueError(f"travel: expected 0 < min <= max <= {longest:.3f} of the side (1 - 2.6 x the largest "
                             f"radius), got {list(self.travel)}")
        if self.heldout_per_colour >= len(self.shapes) * len(self.directions):
            raise ValueError("heldout_per_colour must leave at least one (shape, direction) per colour for training")
        if self.heldout_clips and not self.heldout_per_colour:
            raise ValueError("heldout_clips > 0 needs heldout_per_colour >= 1")
        return self


def caption(colour: str, shape: str, direction: str, photo: str) -> str:
    """``a red circle moving left over a photo of a cat``."""
    return f"a {colour} {shape} moving {direction} over a photo of {PHOTOS[photo]}"


def split_combinations(cfg: CorpusConfig) -> dict[str, list[tuple[str, str, str]]]:
    """(colour, shape, direction) triples of each split: ``heldout_per_colour`` pairs per colour held out."""
    rng = np.random.default_rng([cfg.seed, 999])
    pairs = [(s, d) for s in cfg.shapes for d in cfg.directions]
    train, held = [], []
    for c in cfg.colours:
        out = set(rng.choice(len(pairs), size=cfg.heldout_per_colour, replace=False).tolist())
        for i, (s, d) in enumerate(pairs):
            (held if i in out else train).append((c, s, d))
    return {"train": train, "heldout": held}


@lru_cache(maxsize=16)
def load_photo(name: str) -> np.ndarray:
    """A ``skimage.data`` photograph as float32 RGB in [0, 1]."""
    import skimage.data

    if name not in PHOTOS:
        raise AiprodError(f"unknown photo {name!r}; expected one of {', '.join(PHOTOS)}")
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == np.bool_:
        img = img.astype(np.float32)
    img = img.astype(np.float32) / (255.0 if img.max() > 1 else 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def _background(photo: str, size: int, saturation: float, rng: np.random.Generator, crop: str = "random") -> np.ndarray:
    from skimage.transform import resize

    img = load_photo(photo)
    h, w = img.shape[:2]
    # drawn in both modes, so that a clip's shape, size and path do not depend on the crop mode
    side = int(min(h, w) * rng.uniform(0.5, 1.0))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    if crop == "whole":
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
    crop = resize(img[y0:y0 + side, x0:x0 + side], (size, size), anti_aliasing=True, order=1)
    grey = crop.mean(axis=-1, keepdims=True)
    return (grey + saturation * (crop - grey)).astype(np.float32)


def whole_background(photo: str, size: int, saturation: float = 0.25) -> np.ndarray:
    """The background every clip of ``photo`` has in a ``background_crop: whole`` corpus, float32 ``[size, size, 3]``
    in [0, 1] (``aiprod eval``'s photo judge compares a clip's temporal median with it)."""
    return _background(photo, size, saturation, np.random.default_rng(0), "whole")


def _coverage(shape: str, cy: float, cx: float, r: float, size: int, ss: int = 4) -> np.ndarray:
    """Antialiased coverage ``[size, size]`` in [0, 1] of a shape centred at (cy, cx), 4x supersampled."""
    from skimage.draw import disk, polygon

    big = np.zeros((size * ss, size * ss), np.float32)
    y, x, rr = cy * ss, cx * ss, r * ss
    if shape == "circle":
        yy, xx = disk((y, x), rr, shape=big.shape)
    elif shape == "square":
        a = rr * 0.85  # half side: about the circle's area
        yy, xx = polygon([y - a, y - a, y + a, y + a], [x - a, x + a, x + a, x - a], shape=big.shape)
    elif shape == "triangle":  # equilateral, pointing up, circumradius 1.25 r
        R = rr * 1.25
        ang = [math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        yy, xx = polygon([y - R * math.sin(a) for a in ang], [x + R * math.cos(a) for a in ang], shape=big.shape)
    else:
        raise AiprodError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    big[yy, xx] = 1.0
    return big.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render_clip(colour: str, shape: str, direction: str, photo: str, *, size: int = 64, frames: int = 17,
                rng: np.random.Generator, background_saturation: float = 0.25,
                background_crop: str = "random", path: str = "random",
                travel: tuple[float, float] = (0.3, 0.45), radius: tuple[float, float] = (0.12, 0.16)) -> np.ndarray:
    """One clip, ``uint8 [frames, size, size, 3]``: the shape crosses ``travel * size`` pixels in ``direction``."""
    bg = _background(photo, size, background_saturation, rng, background_crop)
    r = size * rng.uniform(*radius)
    travel = size * rng.uniform(*travel)
    dx, dy = DIRECTIONS[direction]
    margin = 1.3 * r
    # the start is drawn so that the whole path stays inside the frame
    along0 = rng.uniform(margin, size - margin - travel)
    across = rng.uniform(margin, size - margin)
    if path == "centred":  # drawn above all the same, so that the rest of the clip does not depend on it
        along0, across = (size - travel) / 2, size / 2
    colour_rgb = np.asarray(PALETTE[colour], np.float32) / 255.0
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        along = along0 + travel * t / max(frames - 1, 1)
        pos = along if (dx + dy) > 0 else size - along  # moving left/up runs the same path backwards
        cx, cy = (pos, across) if dx else (across, pos)
        cov = _coverage(shape, cy, cx, r, size)[..., None]
        frame = bg * (1 - cov) + colour_rgb * cov
        out[t] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def clip_plan(cfg: CorpusConfig, split: str) -> Iterator[dict[str, Any]]:
    """The clips of a split: combinations cycle through a seeded permutation (balanced colours)."""
    combos = split_combinations(cfg)[split]
    n = cfg.train_clips if split == "train" else cfg.heldout_clips
    sid = SPLITS.index(split)
    order = np.random.default_rng([cfg.seed, sid, 12345]).permutation(len(combos)) if combos else []
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, sid, i] + ([cfg.draw_seed] if cfg.draw_seed else []))
        colour, shape, direction = combos[order[i % len(combos)]]
        photo = cfg.photos[int(rng.integers(len(cfg.photos)))]
        yield {"index": i, "file": f"clip_{i:05d}.mp4", "caption": caption(colour, shape, direction, photo),
               "prompt": f"a {colour} {shape} moving {direction}", "colour": colour, "shape": shape, "direction": direction, "photo": photo, "rng": rng}


def make_video_corpus(out_dir: str | Path, cfg: CorpusConfig | None = None, *, overwrite: bool = False,
                      progress: bool = False) -> Path:
    """Write the corpus to ``out_dir`` atomically (the whole folder appears at the end). Returns ``out_dir``."""
    from tqdm import tqdm

    from aiprod_pipelines.media import write_mp4

    cfg = cfg or CorpusConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise AiprodError(f"{out_dir}: already exists; pass --overwrite to replace it")
    combos = split_combinations(cfg)
    total = cfg.train_clips + cfg.heldout_clips
    with atomic_dir(out_dir) as tmp, tqdm(total=total, desc="video corpus", unit="clip", disable=not progress) as bar:
        for split in SPLITS:
            folder = tmp / split
            folder.mkdir()
            lines = []
            for item in clip_plan(cfg, split):
                rng = item.pop("rng")
                frames = render_clip(item["colour"], item["shape"], item["direction"], item["photo"], size=cfg.size,
                                     frames=cfg.frames, rng=rng, background_saturation=cfg.background_saturation,
                                     background_crop=cfg.background_crop, path=cfg.path,
                                     travel=cfg.travel, radius=cfg.radius)
                write_mp4(folder / item["file"], frames, cfg.fps, crf=cfg.crf, threads=1)
                lines.append(json.dumps({**item, "split": split, "frames": cfg.frames, "fps": cfg.fps,
                                         "width": cfg.size, "height": cfg.size}))
                bar.update()
            (folder / "captions.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        meta = {"format": "aiprod-video-corpus/1", "config": cfg.model_dump(mode="json"),
                "clips": {"train": cfg.train_clips, "heldout": cfg.heldout_clips},
                "heldout_combinations": [list(c) for c in combos["heldout"]],
                "command": "python tools/make_video_corpus.py OUT " + " ".join(_cli_args(cfg))}
        (tmp / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir


def read_captions(folder: str | Path) -> list[dict[str, Any]]:
    """The entries of ``folder/captions.jsonl`` (a split folder), each with ``path`` added."""
    folder = Path(folder)
    path = folder / "captions.jsonl"
    if not path.is_file():
        raise AiprodError(f"{path}: not found (a corpus split folder holds captions.jsonl + clip_*.mp4)")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except ValueError as err:
            raise AiprodError(f"{path}:{n}: not valid JSON ({err})") from None
        if not isinstance(e, dict) or not isinstance(e.get("file"), str) or not isinstance(e.get("caption"), str):
            raise AiprodError(f"{path}:{n}: expected an object with 'file' and 'caption' strings")
        entries.append({**e, "path": folder / e["file"]})
    return entries


# -- command line (tools/make_video_corpus.py) -------------------------------------------------------
def _cli_args(cfg: CorpusConfig) -> list[str]:
    default = CorpusConfig()
    args = []
    for name, flag in (("train_clips", "--train"), ("heldout_clips", "--heldout"), ("size", "--size"),
                       ("frames", "--frames"), ("fps", "--fps"), ("seed", "--seed"), ("draw_seed", "--draw-seed"),
                       ("crf", "--crf")):
        if getattr(cfg, name) != getattr(default, name):
            args += [flag, str(getattr(cfg, name))]
    for name in ("colours", "shapes", "directions", "photos"):
        if getattr(cfg, name) != getattr(default, name):
            args += [f"--{name}", ",".join(getattr(cfg, name))]
    if cfg.heldout_per_colour != default.heldout_per_colour:
        args += ["--heldout-per-colour", str(cfg.heldout_per_colour)]
    if cfg.background_saturation != default.background_saturation:
        args += ["--background-saturation", str(cfg.background_saturation)]
    if cfg.background_crop != default.background_crop:
        args += ["--background-crop", cfg.background_crop]
    if cfg.path != default.path:
        args += ["--path", cfg.path]
    for name in ("travel", "radius"):  # MIN,MAX ranges
        if getattr(cfg, name) != getattr(default, name):
            args += [f"--{name}", ",".join(str(v) for v in getattr(cfg, name))]
    return args


def main(argv: list[str] | None = None) -> None:
    import argparse

    from aiprod_core.config import validate

    p = argparse.ArgumentParser(prog="make_video_corpus.py", description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--train", type=int, default=256, help="clips in train/ (default 256)")
    p.add_argument("--heldout", type=int, default=32, help="clips in heldout/ (default 32)")
    p.add_argument("--size", type=int, default=64, help="frame side, multiple of 16 (default 64)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k (default 17)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="fixes the held-out combinations (default 0)")
    p.add_argument("--draw-seed", type=int, default=0,
                   help="another value draws fresh clips of the same combinations (a re-drawn held-out set)")
    p.add_argument("--crf", type=int, default=0, help="x264 quality, 0 = lossless (default)")
    p.add_argument("--colours", help=f"comma-separated, among {','.join(PALETTE)} (default red,yellow,green,blue)")
    p.add_argument("--shapes", help=f"comma-separated, among {','.join(SHAPES)}")
    p.add_argument("--directions", help=f"comma-separated, among {','.join(DIRECTIONS)}")
    p.add_argument("--photos", help=f"comma-separated, among {','.join(PHOTOS)}")
    p.add_argument("--heldout-per-colour", type=int, default=2)
    p.add_argument("--background-saturation", type=float, default=0.25)
    p.add_argument("--background-crop", choices=["random", "whole"], default="random",
                   help="random square crop per clip (default) or the photo's centred square in every clip")
    p.add_argument("--path", choices=["random", "centred"], default="random",
                   help="random start and lane (default) or a path through the frame's centre")
    p.add_argument("--travel", default="0.3,0.45", help="MIN,MAX distance moved, fraction of the side (default 0.3,0.45)")
    p.add_argument("--radius", default="0.12,0.16", help="MIN,MAX shape radius, fraction of the side (default 0.12,0.16)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    data: dict[str, Any] = {"train_clips": a.train, "heldout_clips": a.heldout, "size": a.size, "frames": a.frames,
                            "fps": a.fps, "seed": a.seed, "draw_seed": a.draw_seed, "crf": a.crf, "heldout_per_colour": a.heldout_per_colour,
                            "background_saturation": a.background_saturation, "background_crop": a.background_crop,
                            "path": a.path, "travel": a.travel.split(","), "radius": a.radius.split(",")}
    for name in ("colours", "shapes", "directions", "photos"):
        if getattr(a, name):
            data[name] = [s.strip() for s in getattr(a, name).split(",") if s.strip()]
    try:
        cfg = validate(CorpusConfig, data, source="make_video_corpus.py")
        out = make_video_corpus(a.out_dir, cfg, overwrite=a.overwrite, progress=not a.quiet)
    except AiprodError as err:
        for line in err.lines():
            print(f"make_video_corpus: error: {line}", file=__import__("sys").stderr)
        raise SystemExit(2) from None
    print(out)
