"""Outputs by extension: .mp4 (H.264 + AAC), .webm (VP9 + Opus), .gif, a folder of PNGs (+ wav)."""

import av
import numpy as np
import pytest
from PIL import Image

from aiprod_core.errors import AiprodError
from aiprod_pipelines.media import output_format, read_mp4, read_wav, write_output

SR, FPS = 24000, 8


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    frames = np.zeros((9, 32, 48, 3), np.uint8)
    for i in range(9):  # a bright square moving right over a dim background
        frames[i] = 40
        frames[i, 8:24, 4 + 3 * i:20 + 3 * i] = (220, 30, 30)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(1.5 * SR)) / SR)).astype(np.float32)
    return frames, audio + 0.001 * rng.standard_normal(len(audio)).astype(np.float32)


def codecs(path):
    with av.open(str(path)) as c:
        return {s.type: s.codec_context.name for s in c.streams}


@pytest.mark.parametrize("ext,video,audio", [(".mp4", "h264", "aac"), (".webm", "vp9", "opus")])
def test_containers_hold_the_named_codecs(tmp_path, clip, ext, video, audio):
    frames, wav = clip
    out = write_output(tmp_path / f"clip{ext}", frames, FPS, wav, SR)
    assert codecs(out) == {"video": video, "audio": audio}
    back = read_mp4(out)
    # the 1.5 s narration outlasts the 9 frames: the last frame is held (rule "longest")
    assert back.frames.shape == (12, 32, 48, 3)
    assert abs(back.audio_duration - 1.5) < 0.03
    assert np.abs(back.frames[0].astype(int) - frames[0]).mean() < 6
    peak = np.argmax(np.abs(np.fft.rfft(back.audio[: back.sample_rate])))  # Opus decodes at 48 kHz
    assert abs(peak - 440) <= 2  # the tone survives the codec


def test_gif_has_every_frame_and_no_audio(tmp_path, clip):
    frames, wav = clip
    out = write_output(tmp_path / "clip.gif", frames, FPS)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 9
        im.seek(4)
        got = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(got - frames[4]).mean() < 6


def test_folder_of_pngs_and_wav(tmp_path, clip):
    frames, wav = clip
    out = write_output(tmp_path / "frames", frames, FPS, wav, SR)
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["00000.png", "00001.png"] and len(pngs) == 12
    assert np.array_equal(np.asarray(Image.open(pngs[3])), frames[3])
    audio, sr = read_wav(out / "audio.wav")
    assert sr == SR and len(audio) == 12 * SR // FPS


def test_unknown_extension_is_refused_before_writing(tmp_path, clip):
    with pytest.raises(AiprodError, match=r"unknown output extension '\.avi'"):
        write_output(tmp_path / "clip.avi", clip[0], FPS)
    assert not list(tmp_path.iterdir())
    assert output_format("out/x.GIF") == ".gif" and output_format("out/frames/") == ""


def test_existing_output_is_refused(tmp_path, clip):
    write_output(tmp_path / "a.gif", clip[0], FPS)
    with pytest.raises(AiprodError, match="already exists"):
        write_output(tmp_path / "a.gif", clip[0], FPS)
