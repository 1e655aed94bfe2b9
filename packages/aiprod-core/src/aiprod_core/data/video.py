"""Video probing and seeking decode (PyAV), shared by the ingest and the pixel-space recipes.

:func:`probe` reads a file's rate, frame count, duration and size from the container (no decoding).
:func:`read_window` seeks to the key frame before ``start`` and decodes only from there, resampling to
``fps`` by taking, for each output instant, the source frame shown at that instant (the last one that
starts at or before it) — a window at minute 10 of a film costs one GOP of decoding, not ten minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiprod_core.errors import AiprodError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts")


def _av():
    try:
        import av
    except ImportError:
        raise AiprodError("video decoding needs PyAV (pip install av)") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int
    duration: float  # seconds
    width: int
    height: int


def probe(path: str | Path) -> VideoInfo:
    """Rate, frame count, duration and size from the container metadata (``frames`` is estimated from the
    duration where the container does not store it)."""
    av = _av()
    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise AiprodError(f"{path}: no video stream")
            s = box.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 0)
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif box.duration is not None:
                duration = box.duration / av.time_base
            else:
                duration = 0.0
            frames = int(s.frames or round(duration * fps))
            if fps <= 0 and duration > 0 and frames:
                fps = frames / duration
            return VideoInfo(fps, frames, duration or (frames / fps if fps else 0.0),
                             int(s.codec_context.width), int(s.codec_context.height))
    except av.FFmpegError as err:
        raise AiprodError(f"{path}: not a readable video ({err})") from None


def read_window(path: str | Path, start: float, count: int, fps: float | None = None) -> np.ndarray:
    """``count`` RGB frames ``uint8 [count, H, W, 3]`` from ``start`` seconds on, at ``fps`` (default: the
    source rate), decoding from the key frame before ``start`` only. Raises when the video ends first."""
    av = _av()
    try:
        with av.open(str(path)) as box:
            s = box.streams.video[0]
            s.thread_type = "AUTO"
            src_fps = float(s.average_rate or s.guessed_rate or 25.0)
            step = 1.0 / (fps or src_fps)
            tol = 0.01 / src_fps  # timestamps are rounded to the time base
            targets = [start + k * step for k in range(count)]
            tb = float(s.time_base)
            t0 = s.start_time or 0
            if start > 0:
                box.seek(int(t0 + start / tb), stream=s, backward=True, any_frame=False)
            out: list[np.ndarray] = []
            prev, prev_arr, last_t = None, None, None
            for frame in box.decode(s):
                t = (frame.pts - t0) * tb if frame.pts is not None else float(frame.time or 0.0)
                while len(out) < count and targets[len(out)] + tol < t:
                    if prev is None:  # the first decoded frame already starts after the instant
                        prev = frame
                    if prev_arr is None:
                        prev_arr = prev.to_ndarray(format="rgb24")
                    out.append(prev_arr)
                if len(out) == count:
                    break
                prev, prev_arr, last_t = frame, None, t
            while len(out) < count and prev is not None and last_t is not None and targets[len(out)] < last_t + 1.0 / src_fps:
                if prev_arr is None:
                    prev_arr = prev.to_ndarray(format="rgb24")
                out.append(prev_arr)
    except av.FFmpegError as err:
        raise AiprodError(f"{path}: decoding failed ({err})") from None
    except IndexError:
        raise AiprodError(f"{path}: no video stream") from None
    if len(out) < count:
        raise AiprodError(f"{path}: {count} frames from {start:.3f} s at {fps or src_fps:g} fps run past the end "
                          f"(got {len(out)})")
    return np.stack(out)
