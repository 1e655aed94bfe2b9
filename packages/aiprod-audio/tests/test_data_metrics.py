import math

import numpy as np
import pytest
import soundfile as sf
import torch

from aiprod_audio.data import AudioFolder, find_audio_files, load_audio
from aiprod_audio.metrics import bitrate, codebook_perplexity, mel_distance, si_sdr
from aiprod_core.errors import AiprodError


def _tone(path, sr, seconds=0.5, fmt=None):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32), sr, format=fmt)


def test_ljspeech_and_libritts_layouts(tmp_path):
    lj = tmp_path / "LJSpeech-1.1"
    (lj / "wavs").mkdir(parents=True)
    (lj / "metadata.csv").write_text("LJ001-0001|text|text\n")
    _tone(lj / "wavs" / "LJ001-0001.wav", 22050)
    libri = tmp_path / "LibriTTS" / "train-clean-100" / "19" / "198"
    libri.mkdir(parents=True)
    _tone(libri / "19_198_000000_000000.wav", 24000)
    _tone(libri / "19_198_000001_000000.flac", 16000, fmt="FLAC")
    (libri / "19_198_000000_000000.normalized.txt").write_text("text")
    files = find_audio_files([tmp_path / "LJSpeech-1.1", tmp_path / "LibriTTS"])
    assert [f.name for f in files] == ["LJ001-0001.wav", "19_198_000000_000000.wav", "19_198_000001_000000.flac"]
    ds = AudioFolder([tmp_path], 24000, 4800)
    batch = ds.batch(3, torch.Generator().manual_seed(0))
    assert batch.shape == (3, 1, 4800) and batch.abs().max() > 0.1
    # same generator state -> same batch (the trainer's exact-resume rule)
    assert torch.equal(batch, ds.batch(3, torch.Generator().manual_seed(0)))


def test_resampling_keeps_the_pitch(tmp_path):
    _tone(tmp_path / "a.wav", 16000, seconds=1.0)
    wav = load_audio(tmp_path / "a.wav", 24000)
    assert wav.shape[0] == 24000
    peak_hz = torch.fft.rfft(wav).abs().argmax().item() * 24000 / wav.shape[0]
    assert abs(peak_hz - 440) < 2


def test_missing_data_is_one_line_error(tmp_path):
    with pytest.raises(AiprodError, match="no such audio file or folder"):
        find_audio_files([tmp_path / "nope"])
    with pytest.raises(AiprodError, match="no .wav or .flac files"):
        find_audio_files([tmp_path])


def test_si_sdr_values():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 1, 8000, generator=g)
    noise = torch.randn(1, 1, 8000, generator=g)
    assert si_sdr(3 * ref, ref).item() > 60  # scale-invariant
    noisy = ref + 0.1 * noise
    expected = 10 * math.log10(ref.pow(2).sum().item() / (0.1 * noise).pow(2).sum().item())
    assert si_sdr(noisy, ref).item() == pytest.approx(expected, abs=0.2)
    assert si_sdr(noise, ref).item() < -15


def test_mel_distance_bitrate_perplexity():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 1, 24000, generator=g) * 0.1
    assert mel_distance(ref, ref) == 0
    assert mel_distance(ref + 0.05 * torch.randn(1, 1, 24000, generator=g), ref) > 0.05
    assert bitrate(8, 1024, 75.0) == 6000
    uniform = torch.arange(1024).reshape(1, 1, 1024).repeat(1, 2, 1)
    uniform[:, 1] = 7  # second codebook collapsed onto one code
    p = codebook_perplexity(uniform, 1024)
    assert p[0] == pytest.approx(1024) and p[1] == pytest.approx(1.0)
