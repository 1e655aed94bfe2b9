"""Media I/O: mp4 (H.264 video + AAC audio) with PyAV, wav with soundfile, and audio/video length rules.

Conventions: frames are ``uint8 [T, H, W, 3]`` RGB numpy arrays; audio is mono ``float32 [N]`` in
[-1, 1]. Every writer is atomic (a temporary file beside the target, renamed on success), so a killed
run never leaves a half-written mp4 where a finished one is expected.

Lengths. Video is ``T`` frames at ``fps`` (duration ``T / fps``). AAC codes audio in 1024-sample
frames and the encoder adds priming samples; the mp4 edit list records both, and :func:`read_mp4`
trims the decoded audio to the stream's recorded duration, so what was written is what is read
(exactly ``N`` samples, no priming offset).

Reconciling a narration with a clip (:func:`reconcile`), rule ``longest`` (the default): the output
lasts as long as the longer of the two. A longer narration extends the video by *holding its last
frame*; a longer video gets the narration padded with *silence*. Rule ``video`` keeps the video's
length: the narration is padded with silence or cut (with a 20 ms fade-out, no click). Either way the
audio ends up exactly ``round(T_out * sample_rate / fps)`` samples long.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_path

SyncRule = Literal["longest", "video"]


# -- conversions -------------------------------------------------------------------------------------
def video_to_frames(video: Any) -> np.ndarray:
    """``[3, T, H, W]`` (or ``[1, 3, T, H, W]``) float in [-1, 1], tensor or array → ``uint8 [T, H, W, 3]``."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    video = np.asarray(video, dtype=np.float32)
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise AiprodError(f"video_to_frames: expected one clip, got a batch of {video.shape[0]}")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise AiprodError(f"video_to_frames: expected [3, T, H, W], got {list(video.shape)}")
    frames = np.clip((video + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(frames.transpose(1, 2, 3, 0))


def frames_to_video(frames: np.ndarray) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` → ``float32 [3, T, H, W]`` in [-1, 1] (the inverse of :func:`video_to_frames`)."""
    return (frames.astype(np.float32).transpose(3, 0, 1, 2) / 127.5) - 1.0


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise AiprodError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if frames.shape[0] < 1:
        raise AiprodError("expected at least one frame")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise AiprodError(f"H.264 (yuv420p) needs an even width and height, got {w}x{h}")
    return frames


def _check_audio(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise AiprodError(f"expected mono audio [N], got shape {list(audio.shape)}")
    if not np.isfinite(audio).all():
        raise AiprodError("audio holds NaN or infinite samples")
    return np.clip(audio, -1.0, 1.0)


# -- length reconciliation ---------------------------------------------------------------------------
def audio_samples_for(frames: int, fps: float, sample_rate: int) -> int:
    """Audio samples covering ``frames`` video frames exactly (rounded to the nearest sample)."""
    return int(round(frames * sample_rate / fps))


def reconcile(frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int,
              rule: SyncRule = "longest", fade_s: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Make audio and video the same duration (see the module docstring for the rules)."""
    audio = _check_audio(audio)
    t = frames.shape[0]
    if rule == "longest":
        needed = math.ceil(len(audio) * fps / sample_rate - 1e-9)  # frames covering the whole narration
        if needed > t:
            frames = np.concatenate([frames, np.repeat(frames[-1:], needed - t, axis=0)])  # hold the last frame
            t = needed
    elif rule != "video":
        raise AiprodError(f"sync rule {rule!r}: expected 'longest' or 'video'")
    n = audio_samples_for(t, fps, sample_rate)
    if len(audio) > n:  # only under rule "video": cut with a short fade-out
        audio = audio[:n].copy()
        k = min(n, int(fade_s * sample_rate))
        if k:
            audio[n - k:] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
    elif len(audio) < n:
        audio = np.concatenate([audio, np.zeros(n - len(audio), np.float32)])  # pad with silence
    return frames, audio


# -- mp4 ---------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """What :func:`read_mp4` returns."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float
    audio: np.ndarray | None = None  # float32 [N], mono
    sample_rate: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / self.fps

    @property
    def audio_duration(self) -> float | None:
        return None if self.audio is None else len(self.audio) / self.sample_rate


def _fps_fraction(fps: float) -> Fraction:
    if not (0 < fps <= 240):
        raise AiprodError(f"fps must be in (0, 240], got {fps}")
    return Fraction(fps).limit_denominator(1001)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, audio: Any | None = None,
              sample_rate: int | None = None, *, crf: int = 18, preset: str = "medium",
              audio_bitrate: int = 128_000, overwrite: bool = False, threads: int = 0,
              metadata: dict[str, str] | None = None) -> Path:
    """Write H.264 (libx264, yuv420p, ``crf``) video and optional mono AAC audio to ``path``, atomically.

    The audio is written as given (reconcile lengths first with :func:`reconcile`). An existing
    ``path`` is refused unless ``overwrite``. ``threads=0`` lets x264 choose. ``metadata`` (e.g.
    ``{"comment": ...}``) is stored in the container and read back by :func:`read_mp4`.
    """

    path = Path(path)
    frames = _check_frames(frames)
    if path.exists() and not overwrite:
        raise AiprodError(f"{path}: already exists; pass --overwrite to replace it")
    if audio is not None:
        audio = _check_audio(audio)
        if sample_rate is None or sample_rate <= 0:
            raise AiprodError("write_mp4: audio needs a positive sample_rate")
    video_options = {"crf": str(int(crf)), "preset": preset, "threads": str(int(threads))}
    return _mux(path, "mp4", frames, fps, ("libx264", video_options), audio, sample_rate, "aac", audio_bitrate,
                metadata)


def _mux(path: Path, container: str, frames: np.ndarray, fps: float, video: tuple[str, dict[str, str]],
         audio: np.ndarray | None, sample_rate: int | None, audio_codec: str, audio_bitrate: int,
         metadata: dict[str, str] | None) -> Path:
    """The one muxing loop of :func:`write_mp4` and :func:`write_webm`: yuv420p video from RGB frames
    (``video`` = encoder name, options) and optional mono float audio, written atomically."""
    import av

    rate = _fps_fraction(fps)
    t, h, w = frames.shape[:3]
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=container) as out:
        for key, value in (metadata or {}).items():
            out.metadata[key] = str(value)
        vs = out.add_stream(video[0], rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = 1 / rate
        vs.options = video[1]
        astream = None
        if audio is not None:
            astream = out.add_stream(audio_codec, rate=int(sample_rate), layout="mono")
            astream.bit_rate = int(audio_bitrate)
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if astream is not None:
            chunk = 8192
            for start in range(0, len(audio), chunk):
                piece = np.ascontiguousarray(audio[start:start + chunk][None])
                aframe = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
                aframe.sample_rate, aframe.pts = int(sample_rate), start
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
    return path


def read_mp4(path: str | Path, *, audio: bool = True, max_frames: int | None = None) -> Clip:
    """Decode all video frames (RGB) and the first audio stream (mono mix) of a media file."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AiprodError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise AiprodError(f"{path}: not a readable media file ({err})") from None
    with container:
        if not container.streams.video:
            raise AiprodError(f"{path}: no video stream")
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate or 0) or 25.0
        metadata = dict(container.metadata)
        frames = []
        for frame in container.decode(vstream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    wav, sr = None, None
    if audio:
        with av.open(str(path)) as container:
            if container.streams.audio:
                astream = container.streams.audio[0]
                sr = int(astream.codec_context.sample_rate)
                chunks = [f.to_ndarray().astype(np.float32) for f in container.decode(astream)]
                if chunks:
                    x = np.concatenate(chunks, axis=1)
                    if x.shape[0] > 1 and not astream.codec_context.format.is_planar:
                        x = x.reshape(-1, astream.codec_context.layout.nb_channels).T  # packed → planar
                    wav = x.mean(axis=0)
                    # the encoder pads the last AAC frame; the stream's duration is the true length
                    if astream.duration is not None and astream.time_base is not None:
                        n = int(round(astream.duration * astream.time_base * sr))
                        wav = wav[:n] if 0 < n <= len(wav) else wav
                else:
                    wav = np.zeros(0, np.float32)
    if not frames:
        raise AiprodError(f"{path}: the video stream holds no frame")
    return Clip(np.stack(frames), fps, wav, sr, metadata)


# -- wav ---------------------------------------------------------------------------------------------
def write_wav(path: str | Path, audio: Any, sample_rate: int, *, overwrite: bool = False,
              subtype: str = "PCM_16") -> Path:
    """Write mono audio to a wav file atomically (soundfile)."""
    import soundfile as sf

    path = Path(path)
    if path.exists() and not overwrite:
        raise AiprodError(f"{path}: already exists; pass --overwrite to replace it")
    audio = _check_audio(audio)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio, int(sample_rate), subtype=subtype, format="WAV")
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file (soundfile) as mono float32 ``[N]`` and its sample rate."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AiprodError(f"{path}: file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as err:
        raise AiprodError(f"{path}: not a readable audio file ({err})") from None
    return data.mean(axis=1), int(sr)


# -- outputs by extension ------------------------------------------------------------------------------
#: what an ``output:`` path may end with; a path without an extension is a folder of PNG frames (+ audio.wav)
OUTPUT_FORMATS = {
    ".mp4": "H.264 video + AAC audio",
    ".webm": "VP9 video + Opus audio",
    ".gif": "animated GIF (no audio)",
    "": "a folder of PNG frames 00000.png ... (+ audio.wav)",
}


def output_format(path: str | Path) -> str:
    """The format key of ``path`` (``.mp4``, ``.webm``, ``.gif`` or ``""`` for a folder); refuses the rest."""
    p = str(path)
    suffix = "" if p.endswith(("/", os.sep)) else Path(p).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(k or "a folder (no extension)" for k in OUTPUT_FORMATS)
        raise AiprodError(f"{path}: unknown output extension {suffix!r} (expected {known})")
    return suffix


def write_webm(path: str | Path, frames: np.ndarray, fps: float, audio: Any | None = None,
               sample_rate: int | None = None, *, crf: int = 32, audio_bitrate: int = 96_000,
               overwrite: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Write VP9 (libvpx-vp9, constant quality ``crf``) video and optional mono Opus audio, atomically."""

    path = Path(path)
    frames = _check_frames(frames)
    if path.exists() and not overwrite:
        raise AiprodError(f"{path}: already exists; pass --overwrite to replace it")
    if audio is not None:
        audio = _check_audio(audio)
        if sample_rate not in (8000, 12000, 16000, 24000, 48000):
            raise AiprodError(f"write_webm: Opus needs a sample rate of 8, 12, 16, 24 or 48 kHz, got {sample_rate}")
    video_options = {"crf": str(int(crf)), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    return _mux(path, "webm", frames, fps, ("libvpx-vp9", video_options), audio, sample_rate, "libopus",
                audio_bitrate, metadata)


def write_gif(path: str | Path, frames: np.ndarray, fps: float, *, overwrite: bool = False) -> Path:
    """Write an endlessly looping animated GIF (Pillow, adaptive palette per frame), atomically."""
    from PIL import Image

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise AiprodError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if path.exists() and not overwrite:
        raise AiprodError(f"{path}: already exists; pass --overwrite to replace it")
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=max(20, int(round(1000 / fps))), disposal=1)
    return path


def write_frames(folder: str | Path, frames: np.ndarray, audio: Any | None = None, sample_rate: int | None = None,
                 *, overwrite: bool = False) -> Path:
    """A folder of ``00000.png ...`` (+ ``audio.wav``), written as a whole or not at all."""
    from PIL import Image

    from aiprod_core.store import atomic_dir

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise AiprodError(f"{folder}: already exists; pass --overwrite to replace it")
    with atomic_dir(folder) as tmp:
        for i, f in enumerate(np.asarray(frames)):
            Image.fromarray(f).save(tmp / f"{i:05d}.png")
        if audio is not None:
            write_wav(tmp / "audio.wav", audio, int(sample_rate))
    return folder


def write_output(path: str | Path, frames: np.ndarray, fps: float, audio: Any | None = None,
                 sample_rate: int | None = None, *, sync: SyncRule = "longest", overwrite: bool = False,
                 crf: int | None = None, audio_bitrate: int = 96_000, metadata: dict[str, str] | None = None) -> Path:
    """Write a clip in the format its extension names (:data:`OUTPUT_FORMATS`), audio reconciled by ``sync``."""
    fmt = output_format(path)
    path = Path(path)
    if audio is not None:
        frames, audio = reconcile(frames, audio, fps, int(sample_rate), sync)
    if fmt == ".mp4":
        return write_mp4(path, frames, fps, audio, sample_rate, crf=18 if crf is None else crf,
                         audio_bitrate=audio_bitrate, overwrite=overwrite, metadata=metadata)
    if fmt == ".webm":
        return write_webm(path, frames, fps, audio, sample_rate, crf=32 if crf is None else crf,
                          audio_bitrate=audio_bitrate, overwrite=overwrite, metadata=metadata)
    if fmt == ".gif":
        return write_gif(path, frames, fps, overwrite=overwrite)
    return write_frames(path, frames, audio, sample_rate, overwrite=overwrite)
