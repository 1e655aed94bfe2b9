"""Issue 21: the inference paths (vocoder: folded weight norm, FFT convolutions; acoustic model: time-major
convolutions as matrix products) equal the plain paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from aiprod_tts import fastconv
from aiprod_tts.vocoder import HiFiGANGenerator, VocoderConfig


@pytest.fixture
def force_fft(monkeypatch):
    monkeypatch.setattr(fastconv, "FFT_MIN_KERNEL", 0)
    monkeypatch.setattr(fastconv, "FFT_MIN_WORK", 0)


@pytest.mark.parametrize("channels, kernel, dilation, length, batch",
                         [(8, 3, 1, 37, 1), (8, 7, 3, 300, 2), (16, 11, 5, 1000, 1), (4, 11, 1, 5, 1),
                          (256, 7, 1, 70, 1)])
def test_fft_conv_equals_direct(force_fft, channels, kernel, dilation, length, batch):
    g = torch.Generator().manual_seed(kernel * 100 + dilation)
    conv = weight_norm(nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=(kernel - 1) * dilation // 2))
    x = torch.randn(batch, channels, length, generator=g)
    assert fastconv.fft_size(channels, kernel) is not None
    with torch.no_grad():
        ref = conv(F.leaky_relu(x, 0.1))
        out = fastconv.conv1d(conv, x, 0.1)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5 * ref.abs().max().item())


def test_choice_of_path():
    assert fastconv.fft_size(128, 11) == 128 and fastconv.fft_size(256, 7) == 64
    assert fastconv.fft_size(512, 3) is None  # 3 taps: direct is cheaper at any width
    assert fastconv.fft_size(32, 7) is None and fastconv.fft_size(32, 11) is not None


def _generator(istft: dict | None = None) -> HiFiGANGenerator:
    torch.manual_seed(0)
    cfg = VocoderConfig(upsample_initial_channel=32, upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8),
                        resblock_kernel_sizes=(3, 7, 11), resblock_dilations=((1, 3, 5),) * 3, istft=istft)
    return HiFiGANGenerator(cfg, n_mels=12).eval()


@pytest.mark.parametrize("istft", [None, {"n_fft": 16, "hop": 4}], ids=["hifigan", "istft"])
def test_vocoder_fft_path_equals_plain_path(force_fft, istft):
    voc = _generator(istft)
    mel = torch.randn(2, 12, 30, generator=torch.Generator().manual_seed(1))
    with torch.enable_grad():
        ref = voc(mel)
    with torch.inference_mode():
        out = voc(mel)
    assert fastconv.fft_cache_bytes(voc) > 0  # the FFT path was taken
    assert torch.allclose(out, ref, atol=1e-5)
    assert ref.abs().max() > 1e-3  # not a trivially silent output


def test_cached_kernels_follow_weight_changes(force_fft):
    voc = _generator()
    mel = torch.randn(1, 12, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = voc(mel)
        other = _generator()
        for p in other.parameters():
            p.data.mul_(1.5) if p.ndim > 1 else p.data.add_(0.05)
        voc.load_state_dict(other.state_dict())
        after = voc(mel)
        with torch.enable_grad():
            ref = voc(mel)
    assert not torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(after, ref, atol=1e-5)


def test_training_path_keeps_gradients():
    voc = _generator().train()
    voc(torch.randn(1, 12, 10)).sum().backward()
    assert all(p.grad is not None for p in voc.parameters())


def _acoustic():
    from aiprod_tts.model import AcousticConfig, FastSpeech2

    torch.manual_seed(0)
    cfg = AcousticConfig(hidden=32, heads=2, ffn_dim=48, ffn_kernels=(5, 1), encoder_layers=2, decoder_layers=2,
                         predictor_channels=16, postnet_channels=24, postnet_layers=3, aligner_channels=8)
    return FastSpeech2(cfg, n_symbols=20, n_mels=12).eval()


def test_acoustic_inference_path_equals_plain_path():
    """FFT blocks (time-major convolutions, no mask when nothing is padded) and the time-major post-net."""
    model = _acoustic()
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(3))
    durations = torch.tensor([[2, 1, 3, 1, 2, 2, 1, 1, 2], [1, 2, 2, 3, 1, 0, 0, 0, 0]])  # second item padded
    for lens in (torch.tensor([9, 5]), torch.tensor([9, 9])):
        mask = torch.arange(9)[None] < lens[:, None]
        with torch.enable_grad():
            ref_enc = model.encoder(x, mask)
            ref_mel, ref_coarse, _ = model.decode(x, durations)
        with torch.no_grad():
            enc = model.encoder(x, mask)
            mel, coarse, _ = model.decode(x, durations)
        assert torch.allclose(enc, ref_enc, atol=1e-5)
        assert torch.allclose(mel, ref_mel, atol=1e-5) and torch.allclose(coarse, ref_coarse, atol=1e-5)
        assert ref_mel.abs().max() > 1e-2


def test_acoustic_no_grad_training_mode_keeps_plain_path():
    """Dropout in training mode under no_grad (a validation pass on a train-mode model) is not skipped."""
    model = _acoustic()
    model.train()
    x = torch.randn(1, 9, 32)
    mask = torch.ones(1, 9, dtype=torch.bool)
    with torch.no_grad():
        a, b = model.encoder(x, mask), model.encoder(x, mask)
    assert not torch.equal(a, b)  # dropout 0.1 active: two passes differ


# ---------------------------------------------------------------------------------------------------------
# streaming: first audio after one short chunk of the first sentence (or clause)
# ---------------------------------------------------------------------------------------------------------
def _voice(vocoder: dict | None = None):
    from aiprod_tts.presets import PRESETS
    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

    torch.manual_seed(0)
    kw = {**PRESETS["tiny"], "frontend": {"mode": "character"}}
    if vocoder:
        kw["vocoder"] = vocoder
    voice = FastSpeech2HiFiGAN(**kw).eval()
    with torch.no_grad():  # ~6 frames per symbol: sentences long enough to be cut into several chunks
        voice.acoustic.prosody.duration.head.bias.fill_(2.0)
        voice.acoustic.prosody.duration.head.weight.mul_(0.1)
    return voice


V1_SHAPED = {"upsample_initial_channel": 32, "upsample_rates": (8, 8, 2, 2), "upsample_kernel_sizes": (16, 16, 4, 4),
             "resblock_kernel_sizes": (3, 7, 11), "resblock_dilations": ((1, 3, 5),) * 3}
# the v1 preset's layout: HiFi-GAN's last stages replaced by an inverse STFT (rates 8 x 4, n_fft 32, hop 8)
V1_ISTFT_SHAPED = {**V1_SHAPED, "upsample_rates": (8, 4), "upsample_kernel_sizes": (16, 8),
                   "istft": {"n_fft": 32, "hop": 8}}


@pytest.mark.parametrize("fft", [False, True])
@pytest.mark.parametrize("layout", ["hifigan", "istft"])
def test_growing_chunks_of_the_first_sentence_equal_whole_vocoding(monkeypatch, fft, layout):
    if fft:
        monkeypatch.setattr(fastconv, "FFT_MIN_KERNEL", 0)
        monkeypatch.setattr(fastconv, "FFT_MIN_WORK", 0)
    voice = _voice(V1_SHAPED if layout == "hifigan" else V1_ISTFT_SHAPED)
    # HiFi-GAN V1's receptive field: ~14.5 frames either side; with the iSTFT head ~14.3 (8x4 stages + window)
    assert voice.vocoder.context_frames() == 16
    text = "The quick brown fox jumps over the lazy dog. It ran away."
    whole = voice.synthesize(text)
    pieces = list(voice.synthesize_stream(text, first_chunk_seconds=0.05))
    assert pieces[0].numel() == 5 * voice.hop_length  # 0.05 s = 4.7 frames -> 5: the first audio is one short chunk
    assert pieces[1].numel() == 10 * voice.hop_length  # then doubling
    assert pieces[-1].numel() > 20 * voice.hop_length  # the second sentence in one piece
    chunked = torch.cat(pieces)
    assert chunked.shape == whole.shape
    err = (chunked - whole).abs().max()
    assert err < 1e-5 * whole.abs().max()
    # the context is what makes the joins exact: too little of it shows (random weights fade with distance,
    # so the gap is small in absolute terms, but far above float rounding)
    cut = torch.cat(list(voice.synthesize_stream(text, first_chunk_seconds=0.05, context_frames=2)))
    assert (cut - whole).abs().max() > 100 * max(err, 1e-8)


def test_first_clause_split():
    from aiprod_tts.synthesizer import split_first_clause

    s = "On the second of May, at half past ten, the doctor paid three dollars."
    assert split_first_clause(s, 14) == [s]  # 14 words: short enough
    assert split_first_clause(s, 5) == ["On the second of May,", "at half past ten, the doctor paid three dollars."]
    assert split_first_clause("Yes, I think so and more words here.", 3) == ["Yes, I think so and more words here."]
    assert split_first_clause("One two three four five six seven", 3) == ["One two three four five six seven"]


def test_stream_cuts_a_long_first_sentence_at_its_first_clause():
    voice = _voice()
    text = "On the second of May, at half past ten, the doctor paid. Then he left."
    pieces = list(voice.synthesize_stream(text, first_clause_words=5))
    head = voice.synthesize("On the second of May,")
    assert torch.equal(pieces[0], head)  # the first audio is the first clause's
    assert pieces[1].abs().max() == 0 and pieces[1].numel() == int(voice.cfg.clause_pause * voice.sample_rate)
    assert len(list(voice.synthesize_stream(text))) == 3  # off by default: two sentences and a pause


# ---------------------------------------------------------------------------------------------------------
# the shipped demo voice: the fast path says the same as the plain path
# ---------------------------------------------------------------------------------------------------------
DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "tts"


@pytest.mark.skipif(not (DEMO / "model.safetensors").is_file(), reason="demo voice weights/tiny/tts not present")
@pytest.mark.parametrize("fft", [False, True])
def test_demo_voice_fast_path_equals_plain_path(monkeypatch, fft):
    from aiprod_tts import model
    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

    if fft:  # the demo's narrow vocoder takes the direct path by default: force the FFT one too
        monkeypatch.setattr(fastconv, "FFT_MIN_KERNEL", 0)
        monkeypatch.setattr(fastconv, "FFT_MIN_WORK", 0)
    voice = FastSpeech2HiFiGAN.from_pretrained(DEMO).eval()
    text = "On the second of May, the doctor paid three dollars. Then he left."
    fast = voice.synthesize(text)
    streamed = torch.cat(list(voice.synthesize_stream(text, first_chunk_seconds=0.1)))
    monkeypatch.setattr(model, "FAST_INFERENCE", False)
    monkeypatch.setattr(HiFiGANGenerator, "fast_inference", False)
    plain = voice.synthesize(text)
    assert fast.shape == plain.shape == streamed.shape
    assert plain.abs().max() > 0.05  # a trained voice: real speech amplitude
    assert (fast - plain).abs().max() < 1e-4
    assert (streamed - plain).abs().max() < 1e-4
