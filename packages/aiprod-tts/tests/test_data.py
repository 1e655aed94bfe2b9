import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from aiprod_core.errors import AiprodError
from aiprod_tts.audio import AudioConfig, features, yin_f0
from aiprod_tts.data import load_libritts, load_ljspeech, read_durations, read_wav


def _tone(path, sr, seconds=0.5, hz=200.0):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, 0.5 * np.sin(2 * np.pi * hz * t), sr)


def test_ljspeech_layout_and_errors(tmp_path):
    (tmp_path / "wavs").mkdir()
    _tone(tmp_path / "wavs/a.wav", 22050)
    (tmp_path / "metadata.csv").write_text("a|Raw 1 text|Raw one text\n")
    utts = load_ljspeech(tmp_path)
    assert utts[0].text == "Raw one text"
    (tmp_path / "metadata.csv").write_text("a|ok\nb|missing audio\n")
    with pytest.raises(AiprodError, match=r"line 2: audio file .*b.wav is missing"):
        load_ljspeech(tmp_path)
    with pytest.raises(AiprodError, match="metadata.csv: missing"):
        load_ljspeech(tmp_path / "nowhere")


def test_libritts_layout_speakers_and_resampling(tmp_path):
    for spk in ("19", "84"):
        d = tmp_path / spk / "198"
        d.mkdir(parents=True)
        _tone(d / f"{spk}_198_000001_000000.wav", 16000)
        (d / f"{spk}_198_000001_000000.normalized.txt").write_text("Hello there.")
    utts = load_libritts(tmp_path)
    assert [u.speaker for u in utts] == [0, 1]
    wav = read_wav(utts[0].wav, 24000)
    assert wav.dtype == torch.float32 and abs(wav.numel() - 12000) <= 1  # 0.5 s at 24 kHz


def test_features_and_pitch():
    cfg = AudioConfig()
    t = torch.arange(24000) / 24000
    wav = 0.5 * torch.sin(2 * torch.pi * 220 * t)
    f = features(wav, cfg)
    frames = 24000 // 256 + 1
    assert f["mel"].shape == (80, frames) and f["energy"].shape == (frames,)
    f0, voiced = yin_f0(wav, cfg)
    assert voiced[4:-4].all() and torch.allclose(f0[4:-4], torch.full_like(f0[4:-4], 220.0), rtol=0.01)
    f0, voiced = yin_f0(torch.zeros(4800), cfg)
    assert not voiced.any()  # silence is unvoiced


def test_external_durations(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("2 3 5")
    assert read_durations(p, 3, 10).tolist() == [2, 3, 5]
    with pytest.raises(AiprodError, match="expected 3 tokens summing to 11 frames"):
        read_durations(p, 3, 11)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="system package espeak-ng not installed")
def test_corpus_heldout_split_has_unseen_sentences(tmp_path):
    """make_tts_corpus --heldout: train/ and heldout/ are LJSpeech folders with disjoint sentences."""
    from aiprod_tts.corpus import make_corpus, make_sentences

    sentences = make_sentences(40, seed=3, short=True)  # 1,000 short combinations: repeats would be likely
    assert len({s.lower()[:-1] for s in sentences}) == 40
    root = make_corpus(tmp_path / "c", n=3, seed=3, short=True, heldout=2)
    train = (root / "train" / "metadata.csv").read_text().splitlines()
    held = (root / "heldout" / "metadata.csv").read_text().splitlines()
    assert len(train) == 3 and len(held) == 2
    assert not {ln.split("|")[1] for ln in train} & {ln.split("|")[1] for ln in held}
    for split, lines in (("train", train), ("heldout", held)):
        for ln in lines:
            assert (root / split / "wavs" / f"{ln.split('|')[0]}.wav").stat().st_size > 1000
    assert not (root / "metadata.csv").exists()
    only = make_corpus(tmp_path / "h", n=3, seed=3, short=True, heldout=2, heldout_only=True)
    assert not (only / "train").exists()  # the same held-out sentences, ids and audio, without the train split
    assert (only / "heldout" / "metadata.csv").read_text() == (root / "heldout" / "metadata.csv").read_text()
    for ln in held:
        uid = ln.split("|")[0]
        assert (only / "heldout" / "wavs" / f"{uid}.wav").read_bytes() == (root / "heldout" / "wavs" / f"{uid}.wav").read_bytes()
    with pytest.raises(AiprodError, match="heldout_only needs heldout"):
        make_corpus(tmp_path / "x", n=3, heldout_only=True)
