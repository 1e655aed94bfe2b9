"""mp4 (H.264 + AAC) and wav I/O: atomic writes, lengths, refusal to overwrite, the sync rules."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import RunContext
from aiprod_pipelines import media

SR, FPS = 24000, 8


def _frames(t=9, h=32, w=48):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([40 + 3 * x, 60 + 3 * y, 200 - 2 * x], -1)[None]  # smooth, so the codec error is small
    ramp = (np.arange(t) * 6)[:, None, None, None]
    return np.clip(base + ramp, 0, 255).astype(np.uint8)


def _tone(n, f=440.0):
    return (0.5 * np.sin(2 * np.pi * f * np.arange(n) / SR)).astype(np.float32)


def test_mp4_roundtrip_h264_aac_exact_lengths(tmp_path):
    frames = _frames()
    n = media.audio_samples_for(len(frames), FPS, SR)
    wav = _tone(n)
    out = media.write_mp4(tmp_path / "a.mp4", frames, FPS, wav, SR)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporary file left behind
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
    clip = media.read_mp4(out)
    assert clip.frames.shape == frames.shape and clip.fps == FPS
    assert np.abs(clip.frames.astype(int) - frames.astype(int)).mean() < 3.0  # crf 18 on smooth content
    assert clip.sample_rate == SR and len(clip.audio) == n  # priming and end padding trimmed
    assert clip.audio_duration == pytest.approx(clip.duration)
    # no priming offset: the decoded tone lines up with the written one
    mid = slice(2000, n - 2000)
    corr = [float(np.dot(clip.audio[mid], np.roll(wav, k)[mid])) for k in range(-20, 21)]
    assert int(np.argmax(corr)) - 20 == 0
    assert np.corrcoef(clip.audio[mid], wav[mid])[0, 1] > 0.99


def test_mp4_video_only_and_odd_size_refused(tmp_path):
    clip = media.read_mp4(media.write_mp4(tmp_path / "v.mp4", _frames(t=5), 12))
    assert clip.frames.shape[0] == 5 and clip.audio is None and clip.fps == 12
    with pytest.raises(AiprodError, match="even width and height"):
        media.write_mp4(tmp_path / "odd.mp4", _frames(h=31), FPS)
    assert not (tmp_path / "odd.mp4").exists()


def test_existing_output_refused_without_overwrite(tmp_path):
    target = tmp_path / "out" / "clip.mp4"
    media.write_mp4(target, _frames(t=3), FPS)
    before = target.read_bytes()
    with pytest.raises(AiprodError, match="already exists; pass --overwrite"):
        media.write_mp4(target, _frames(t=5), FPS)
    assert target.read_bytes() == before
    ctx = RunContext(source=Path("x.yaml"), device=None, dtype=None)  # the pipeline's own guard
    with pytest.raises(AiprodError, match="already exists"):
        ctx.output_path(target)
    ctx.overwrite = True
    media.write_mp4(ctx.output_path(target), _frames(t=5), FPS, overwrite=ctx.overwrite)
    assert media.read_mp4(target).frames.shape[0] == 5


def test_failed_write_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.mp4"
    media.write_mp4(target, _frames(t=3), FPS)
    before = target.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", boom)
    with pytest.raises(RuntimeError):
        media.write_mp4(target, _frames(t=3), FPS, overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_reconcile_longest_holds_last_frame():
    frames = _frames(t=9)
    wav = _tone(int(2.3 * SR))  # narration longer than the 9/8 s video
    f2, a2 = media.reconcile(frames, wav, FPS, SR, "longest")
    assert len(f2) == 19  # ceil(2.3 * 8)
    assert (f2[9:] == frames[-1]).all() and (f2[:9] == frames).all()
    assert len(a2) == 19 * SR // FPS and (a2[: len(wav)] == wav).all() and not a2[len(wav):].any()


def test_reconcile_pads_audio_with_silence_and_video_rule_cuts():
    frames = _frames(t=17)
    wav = _tone(SR // 2)
    f2, a2 = media.reconcile(frames, wav, FPS, SR, "longest")
    assert f2 is frames and len(a2) == 17 * SR // FPS and not a2[len(wav):].any()
    long = _tone(5 * SR)
    f3, a3 = media.reconcile(frames, long, FPS, SR, "video")
    assert len(f3) == 17 and len(a3) == 17 * SR // FPS
    assert a3[-1] == 0.0 and np.allclose(a3[:1000], long[:1000])  # faded out at the cut, untouched before
    with pytest.raises(AiprodError, match="sync rule"):
        media.reconcile(frames, wav, FPS, SR, "audio")


def test_wav_roundtrip(tmp_path):
    wav = _tone(4800)
    p = media.write_wav(tmp_path / "a.wav", wav, SR)
    back, sr = media.read_wav(p)
    assert sr == SR and back.shape == wav.shape and np.abs(back - wav).max() < 1e-4
    with pytest.raises(AiprodError, match="already exists"):
        media.write_wav(p, wav, SR)


def test_video_frame_conversion_roundtrip():
    frames = _frames(t=2)
    assert (media.video_to_frames(media.frames_to_video(frames)) == frames).all()
    with pytest.raises(AiprodError, match=r"expected \[3, T, H, W\]"):
        media.video_to_frames(np.zeros((4, 2, 8, 8)))


def test_unreadable_files_are_one_line_errors(tmp_path):
    (tmp_path / "g.mp4").write_text("garbage")
    with pytest.raises(AiprodError, match="not a readable media file"):
        media.read_mp4(tmp_path / "g.mp4")
    with pytest.raises(AiprodError, match="file not found"):
        media.read_mp4(tmp_path / "missing.mp4")
    (tmp_path / "g.wav").write_text("garbage")
    with pytest.raises(AiprodError, match="not a readable audio file"):
        media.read_wav(tmp_path / "g.wav")
