import math

import pytest
import torch

from aiprod_core.errors import AiprodError
from aiprod_tts.model import beta_binomial_prior, forward_sum_loss, monotonic_alignment_search
from aiprod_tts.presets import PRESETS
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN
from aiprod_tts.vocoder import HiFiGANDiscriminator


def test_v1_is_80m_parameters_on_meta():
    with torch.device("meta"):
        model = FastSpeech2HiFiGAN(**PRESETS["v1"])
    total = model.num_parameters()
    assert 72e6 <= total <= 88e6, total  # model card: ~80M (acoustic + vocoder)
    vocoder = sum(p.numel() for p in model.vocoder.parameters())
    assert 12.8e6 < vocoder < 13.2e6  # HiFi-GAN V1 (13.9M in the paper) with its last stages cut for the iSTFT
    assert model.vocoder.istft.hop * math.prod(model.cfg.vocoder.upsample_rates) == 256
    assert model.sample_rate == 24000 and model.hop_length == 256


def test_mas_is_monotonic_and_sums_to_frames():
    g = torch.Generator().manual_seed(0)
    log_p = torch.randn(3, 40, 12, generator=g)
    text_lens, mel_lens = torch.tensor([12, 7, 5]), torch.tensor([40, 31, 5])
    hard = monotonic_alignment_search(log_p, text_lens, mel_lens)
    for b in range(3):
        t, n = int(mel_lens[b]), int(text_lens[b])
        h = hard[b, :t, :n]
        assert torch.all(h.sum(1) == 1)  # each frame → exactly one token
        d = h.sum(0)
        assert torch.all(d >= 1) and int(d.sum()) == t  # surjective, sums to the frame count
        idx = h.argmax(1)
        assert torch.all(idx[1:] - idx[:-1] >= 0) and torch.all(idx[1:] - idx[:-1] <= 1)  # monotonic steps
        assert hard[b, t:].sum() == 0 and hard[b, :, n:].sum() == 0


def test_mas_finds_the_best_path():
    # a clear diagonal with 2 frames per token is recovered exactly
    log_p = torch.full((1, 8, 4), -10.0)
    for j in range(8):
        log_p[0, j, j // 2] = 0.0
    hard = monotonic_alignment_search(log_p, torch.tensor([4]), torch.tensor([8]))
    assert hard[0].sum(0).tolist() == [2, 2, 2, 2]


def test_prior_and_forward_sum():
    prior = beta_binomial_prior(5, 20)
    assert prior.shape == (20, 5)
    assert torch.allclose(prior.exp().sum(1), torch.ones(20), atol=1e-4)
    assert prior[0].argmax() == 0 and prior[-1].argmax() == 4  # near-diagonal
    good = torch.full((1, 8, 4), -20.0)
    for j in range(8):
        good[0, j, j // 2] = 0.0
    bad = good.flip(2)
    lens = (torch.tensor([4]), torch.tensor([8]))
    assert forward_sum_loss(good, *lens) < forward_sum_loss(bad, *lens)


def _duration_model(tiny):
    torch.manual_seed(1)
    with torch.no_grad():  # random predictions around 8 frames per token
        tiny.acoustic.prosody.duration.head.bias.fill_(math.log(9.0))
        tiny.acoustic.prosody.duration.head.weight.normal_(0, 0.3)
    return tiny


def test_speed_two_halves_frames_within_one_per_phoneme(tiny):
    model = _duration_model(tiny)
    tokens = torch.randint(1, 60, (1, 30), generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([30])
    normal = model.acoustic.infer(tokens, lens, speed=1.0)
    fast = model.acoustic.infer(tokens, lens, speed=2.0)
    assert normal.durations.float().std() > 0.5  # durations actually vary
    assert torch.all((fast.durations.float() - normal.durations.float() / 2).abs() <= 1)
    n1, n2 = int(normal.mel_lens), int(fast.mel_lens)
    assert abs(n2 - n1 / 2) <= 30 and n2 < 0.6 * n1


def test_prosody_controls_change_the_output(tiny):
    model = _duration_model(tiny)
    tokens = torch.randint(1, 60, (1, 12), generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([12])
    base = model.acoustic.infer(tokens, lens)
    up = model.acoustic.infer(tokens, lens, pitch_shift=12.0, pitch_std=0.25)
    # one octave = log(2) in log-F0; normalised by the std of the corpus
    assert torch.allclose(up.pitch_pred - base.pitch_pred, torch.full((1, 12), math.log(2) / 0.25), atol=1e-5)
    flat = model.acoustic.infer(tokens, lens, pitch_scale=0.0)
    assert flat.pitch_pred.std() < 1e-5
    loud = model.acoustic.infer(tokens, lens, energy_scale=2.0, energy_std=0.5)
    assert torch.allclose(loud.energy_pred - base.energy_pred, torch.full((1, 12), math.log(2) / 0.5), atol=1e-5)
    assert not torch.equal(up.mel, base.mel) and not torch.equal(loud.mel, base.mel)


def test_synthesize_long_text_with_pauses():
    # character mode: no espeak-ng needed for this test
    model = _duration_model(FastSpeech2HiFiGAN(**{**PRESETS["tiny"], "frontend": {"mode": "character"}}).eval())
    one = model.synthesize("Hello there.")
    two = model.synthesize("Hello there. Hello there.")
    assert one.dtype == torch.float32 and one.dim() == 1 and one.abs().max() <= 1
    pause = int(model.cfg.sentence_pause * model.sample_rate)
    assert two.numel() == 2 * one.numel() + pause
    assert two[one.numel(): one.numel() + pause].abs().max() == 0
    faster = model.synthesize("Hello there. Hello there.", speed=2.0)
    assert faster.numel() < 0.6 * two.numel()
    with pytest.raises(AiprodError, match="speed"):
        model.synthesize("hi", speed=0)
    with pytest.raises(AiprodError, match="empty"):
        model.synthesize("   ")


def test_vocoder_and_discriminators(tiny):
    mel = torch.randn(2, 80, 10)
    wav = tiny.vocoder(mel)
    assert wav.shape == (2, 1, 2560) and wav.abs().max() <= 1
    disc = HiFiGANDiscriminator(width=1 / 16)
    outs, feats = disc(wav)
    assert len(outs) == 8 and len(feats) == 8  # 5 periods + 3 scales
    with torch.device("meta"):
        full = HiFiGANDiscriminator()
    assert 65e6 < sum(p.numel() for p in full.parameters()) < 75e6  # paper-size MPD + MSD


def test_config_errors_are_explicit():
    with pytest.raises(AiprodError, match="hop_length"):
        FastSpeech2HiFiGAN(**{**PRESETS["tiny"], "vocoder": {"upsample_rates": (8, 8, 2)}})


def test_speaker_embedding_changes_the_voice():
    torch.manual_seed(0)
    model = FastSpeech2HiFiGAN(**{**PRESETS["tiny"], "acoustic": {**PRESETS["tiny"]["acoustic"], "n_speakers": 3}})
    model = _duration_model(model.eval())
    tokens, lens = torch.randint(1, 60, (1, 10), generator=torch.Generator().manual_seed(0)), torch.tensor([10])
    a = model.acoustic.infer(tokens, lens, torch.tensor([0]), durations=torch.full((1, 10), 3))
    b = model.acoustic.infer(tokens, lens, torch.tensor([2]), durations=torch.full((1, 10), 3))
    assert a.mel.shape == b.mel.shape and not torch.allclose(a.mel, b.mel)
