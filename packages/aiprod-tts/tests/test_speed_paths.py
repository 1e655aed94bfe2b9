"""Issue 21: sentence-level streaming equals whole synthesis; the vocoder's in-place inference path
equals its autograd path."""

from __future__ import annotations

import soundfile as sf
import torch

from aiprod_tts.pipeline import Controls, speak, write_audio
from aiprod_tts.presets import PRESETS
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

TEXT = "Hello there. How are you today? Fine, thanks."


def _voice() -> FastSpeech2HiFiGAN:
    torch.manual_seed(0)
    return FastSpeech2HiFiGAN(**{**PRESETS["tiny"], "frontend": {"mode": "character"}}).eval()


def test_stream_pieces_concatenate_to_synthesize():
    voice = _voice()
    pieces = list(voice.synthesize_stream(TEXT))
    assert len(pieces) == 5  # three sentences, two pauses
    assert pieces[1].abs().max() == 0 and pieces[0].abs().max() > 0
    assert torch.equal(torch.cat(pieces), voice.synthesize(TEXT))


def test_pipeline_writes_the_stream(tmp_path):
    voice = _voice()
    out = write_audio(tmp_path / "a.wav", speak(voice, TEXT, Controls()), voice.sample_rate)
    data, sr = sf.read(out, dtype="float32")
    assert sr == voice.sample_rate
    whole = voice.synthesize(TEXT).numpy()
    assert data.shape == whole.shape and abs(data - whole).max() < 2 / 32768  # PCM_16 rounding


def test_vocoder_inference_path_equals_autograd_path():
    voice = _voice()
    mel = torch.randn(1, voice.cfg.audio.n_mels, 20, generator=torch.Generator().manual_seed(0))
    with torch.enable_grad():
        ref = voice.vocoder(mel)
    with torch.no_grad():
        out = voice.vocoder(mel)
    assert torch.allclose(out, ref, atol=1e-6)


def test_chunked_vocoding_matches_whole_sentences():
    voice = _voice()
    whole = voice.synthesize(TEXT)
    pieces = list(voice.synthesize_stream(TEXT, chunk_seconds=0.1))
    assert len(pieces) > 5  # sentences were cut into chunks
    chunked = torch.cat(pieces)
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-5)
