"""Ingest real videos: ``aiprod data prepare VIDEOS/ OUT/`` cuts training clips on the bucket grid.

Takes a folder of arbitrary videos (any container PyAV reads, any length, rate, size or aspect), each
with a caption — a line of ``VIDEOS/captions.jsonl`` (``{"file": "relative/path.mp4", "caption": "..."}``)
or a sidecar ``name.txt`` beside ``name.mp4`` — and writes, per clip and stage resolution:

- ``OUT/clips/<resolution>/<video>/<k>.mp4``: ``frames`` frames (1 + 4k, what the x4 causal VAE codes)
  resampled to ``fps``, resized to cover the nearest-aspect bucket of the grid
  (:mod:`aiprod_core.data.buckets`) and centre-cropped to it; decoded by seeking
  (:func:`aiprod_core.data.video.read_window`), so a clip at minute 10 does not decode minutes 0-10;
- ``OUT/captions.jsonl``: one line per clip (file, caption, source, start, fps, frames, resolution,
  height, width, aspect) — the corpus layout ``tools/cache_latents.py`` / ``aiprod data cache`` encodes;
- ``OUT/skipped.jsonl`` and the printed report: every file left out, with the reason.

Clips start every ``stride`` seconds (default: back to back, the clip's duration), at most
``max_clips_per_video`` per video. A killed run resumes: videos already listed in ``OUT/prepared.jsonl``
are skipped, a video's captions are written only once all its clips are.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from aiprod_core.config import StrictModel
from aiprod_core.data import buckets as grid
from aiprod_core.data.video import VIDEO_EXTENSIONS, probe, read_window
from aiprod_core.errors import AiprodError


class PrepareConfig(StrictModel):
    fps: float = Field(24.0, gt=0, le=240, description="output frame rate")
    frames: int = Field(17, ge=1, description="frames per clip, 1 + 4k")
    resolutions: list[int] = Field([256], min_length=1, description="long sides in pixels, one clip set each")
    aspect_ratios: list[str] = Field(["16:9", "9:16", "4:3", "3:4", "1:1"], min_length=1, description="bucket grid")
    stride: float | None = Field(None, gt=0, description="seconds between clip starts (default: the clip duration)")
    max_clips_per_video: int | None = Field(None, ge=1)
    upscale: bool = Field(False, description="also cut clips at resolutions above the video's own size")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of the prepared clips")

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k for the x4 temporal VAE (e.g. {1 + 4 * ((v - 1) // 4)}), got {v}")
        return v

    @field_validator("resolutions")
    @classmethod
    def _res(cls, v: list[int]) -> list[int]:
        bad = [r for r in v if r < 16 or r % 16]
        if bad:
            raise ValueError(f"resolutions are multiples of 16 (VAE x8 x patch 2), got {bad}")
        return v

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, v: list[str]) -> list[str]:
        for r in v:
            grid.parse_ratio(r)
        return v


def find_videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                  and not p.name.startswith("."))


def read_video_captions(root: Path) -> dict[str, str]:
    """``relative path → caption`` from ``root/captions.jsonl`` (sidecar ``.txt`` files are read per video)."""
    from aiprod_pipelines.corpus import read_captions

    if not (root / "captions.jsonl").is_file():
        return {}
    return {Path(e["file"]).as_posix(): e["caption"] for e in read_captions(root)}


def clip_name(rel: str) -> str:
    """A file-system and WebDataset-safe name for a source video (no '.' or '/'), unique by a short hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(rel).with_suffix("")))[-60:].strip("_") or "video"
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:6]}"


def fit_to_bucket(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` resized (antialiased bilinear) to cover ``size`` and centre-cropped to it."""
    _, h, w, _ = frames.shape
    (rh, rw), (y0, x0) = grid.resize_crop_box(h, w, size)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    x = x[:, :, y0 : y0 + size[0], x0 : x0 + size[1]]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def covers(height: int, width: int, sizes: list[tuple[int, int]]) -> bool:
    """Whether a ``height x width`` video fills its nearest-aspect bucket without upscaling."""
    bh, bw = sizes[int(grid.nearest(height, width, sizes))]
    return height >= bh and width >= bw


def plan_video(info, cfg: PrepareConfig) -> tuple[list[float], str | None]:
    """Clip start times for a probed video, or a reason to skip it."""
    length = cfg.frames / cfg.fps
    if info.duration + 1e-6 < length:
        return [], f"too short: {info.duration:.2f} s, a clip of {cfg.frames} frames at {cfg.fps:g} fps needs {length:.2f} s"
    stride = cfg.stride or length
    starts = [k * stride for k in range(int((info.duration - length) // stride) + 1)]
    return starts[: cfg.max_clips_per_video], None


def prepare_video(path: Path, rel: str, caption: str | None, cfg: PrepareConfig, out: Path
                  ) -> tuple[list[dict[str, Any]], str | None, list[str]]:
    """Cut one video: ``(caption entries, reason it was skipped or None, warnings)``."""
    from aiprod_pipelines.media import write_mp4

    if not caption:
        return [], "no caption (a captions.jsonl line or a sidecar .txt)", []
    sizes = {r: grid.bucket_sizes(r, cfg.aspect_ratios) for r in cfg.resolutions}
    entries: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        info = probe(path)
        starts, reason = plan_video(info, cfg)
        res_ok = [r for r in cfg.resolutions if cfg.upscale or covers(info.height, info.width, sizes[r])]
        if not reason and not res_ok:
            reason = (f"{info.width}x{info.height} is smaller than every bucket of resolutions "
                      f"{cfg.resolutions} (pass --upscale to cut it anyway)")
        if reason:
            return [], reason, []
        name = clip_name(rel)
        for k, start in enumerate(starts):
            try:
                window = read_window(path, start, cfg.frames, cfg.fps)
            except AiprodError as err:  # a container shorter than its header says: keep the clips before
                if not entries:
                    raise
                warnings.append(str(err))
                break
            for r in res_ok:
                size = sizes[r][int(grid.nearest(window.shape[1], window.shape[2], sizes[r]))]
                file = f"clips/{r}/{name}/{k:04d}.mp4"
                write_mp4(out / file, fit_to_bucket(window, size), cfg.fps, crf=cfg.crf, overwrite=True)
                entries.append({"file": file, "caption": caption, "source": rel, "start": round(start, 4),
                                "fps": cfg.fps, "frames": cfg.frames, "resolution": r,
                                "height": size[0], "width": size[1],
                                "aspect": cfg.aspect_ratios[int(grid.nearest(*size, sizes[r]))]})
    except AiprodError as err:
        return [], str(err).replace(f"{path}: ", ""), []
    return entries, None, warnings


def _prepare_one(args: tuple) -> tuple[str, list[dict[str, Any]], str | None, list[str]]:
    import multiprocessing

    path, rel, caption, cfg, out = args
    if multiprocessing.current_process().name != "MainProcess":
        torch.set_num_threads(1)  # one video per worker process: no oversubscription
    return (rel, *prepare_video(path, rel, caption, cfg, out))


def prepare(videos: str | Path, out_dir: str | Path, cfg: PrepareConfig | None = None, *,
            workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Cut every captioned video under ``videos`` into bucket-grid clips under ``out_dir``, ``workers``
    videos at a time in worker processes (0: in this process). Returns a report
    ``{"videos", "clips", "skipped": [(file, reason)], "warnings": [(file, text)], "out"}``."""
    from tqdm import tqdm

    cfg = cfg or PrepareConfig()
    root, out = Path(videos), Path(out_dir)
    if not root.is_dir():
        raise AiprodError(f"{root}: not a folder of videos")
    files = find_videos(root)
    if not files:
        raise AiprodError(f"{root}: no video file ({', '.join(VIDEO_EXTENSIONS)})")
    captions = read_video_captions(root)
    out.mkdir(parents=True, exist_ok=True)
    done_path, caps_path, skip_path = out / "prepared.jsonl", out / "captions.jsonl", out / "skipped.jsonl"
    done: dict[str, dict] = {}
    if done_path.is_file():
        for line in done_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                e = json.loads(line)
                done[e["source"]] = e
    settings = cfg.model_dump(mode="json")
    meta_path = out / "prepare.json"
    if meta_path.is_file() and json.loads(meta_path.read_text())["config"] != settings:
        raise AiprodError(f"{meta_path}: {out} was prepared with other settings; use a new OUT folder")
    meta_path.write_text(json.dumps({"format": "aiprod-prepared-clips/1", "config": settings}, indent=2) + "\n")
    report: dict[str, Any] = {"videos": len(files), "clips": 0, "skipped": [], "warnings": [], "out": str(out)}
    for e in done.values():
        report["clips"] += e.get("clips", 0)
        if e.get("skipped"):
            report["skipped"].append((e["source"], e["skipped"]))
    jobs = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in done:
            continue
        caption = captions.get(rel)
        sidecar = path.with_suffix(".txt")
        if caption is None and sidecar.is_file():
            caption = sidecar.read_text(encoding="utf-8").strip()
        jobs.append((path, rel, caption, cfg, out))

    def record(rel: str, entries: list[dict[str, Any]], reason: str | None, warnings: list[str]) -> None:
        # a video's captions are written once all its clips are; then it is marked done (resume)
        with open(caps_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(e) + "\n" for e in entries)
        if reason:
            with open(skip_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"source": rel, "reason": reason}) + "\n")
            report["skipped"].append((rel, reason))
        report["warnings"] += [(rel, w) for w in warnings]
        with open(done_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"source": rel, "clips": len(entries), "skipped": reason}) + "\n")
        report["clips"] += len(entries)

    bar = tqdm(total=len(files), initial=len(files) - len(jobs), desc="prepare", unit="video", disable=not progress)
    if workers > 0 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_prepare_one, jobs, chunksize=1):
                record(*result)
                bar.update()
    else:
        for job in jobs:
            record(*_prepare_one(job))
            bar.update()
    bar.close()
    return report


def format_report(report: dict[str, Any]) -> list[str]:
    lines = [f"prepare: {report['videos']} videos -> {report['clips']} clips in {report['out']}; "
             f"{len(report['skipped'])} skipped"]
    lines += [f"  skipped {f}: {why}" for f, why in report["skipped"]]
    lines += [f"  warning {f}: {why}" for f, why in report.get("warnings", [])]
    return lines

