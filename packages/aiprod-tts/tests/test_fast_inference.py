"""Issue 21: the inference paths (vocoder: folded weight norm, FFT convolutions; acoustic model: time-major
convolutions as matrix products) equal the plain paths."""

from __future__ import annotations

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


def _generator() -> HiFiGANGenerator:
    torch.manual_seed(0)
    cfg = VocoderConfig(upsample_initial_channel=32, upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8),
                        resblock_kernel_sizes=(3, 7, 11), resblock_dilations=((1, 3, 5),) * 3)
    return HiFiGANGenerator(cfg, n_mels=12).eval()


def test_vocoder_fft_path_equals_plain_path(force_fft):
    voc = _generator()
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
