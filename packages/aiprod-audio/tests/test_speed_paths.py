"""Inference fast paths of the codec (issue 21) compute what the training-time ops compute."""

from __future__ import annotations

import pytest
import torch

from aiprod_audio.layers import CausalConv1d
from aiprod_audio.model import NACCodec
from aiprod_audio.presets import PRESETS


def _codec(**over) -> NACCodec:
    torch.manual_seed(0)
    return NACCodec(**{**PRESETS["tiny"], **over}).eval()


def _wav(n: int = 2048) -> torch.Tensor:
    return torch.randn(1, 1, n, generator=torch.Generator().manual_seed(0)) * 0.1


@pytest.mark.parametrize("depthwise", [False, True])
def test_inference_path_equals_autograd_path(depthwise):
    codec, wav = _codec(depthwise_residual=depthwise), _wav()
    with torch.enable_grad():
        lat_ref = codec.encode_latents(wav)
        wav_ref = codec.decode_latents(lat_ref)
    with torch.inference_mode():
        lat = codec.encode_latents(wav)
        out = codec.decode_latents(lat)
    assert torch.allclose(lat, lat_ref, atol=1e-5)
    assert torch.allclose(out, wav_ref, atol=1e-5)


def test_streaming_under_inference_mode_equals_offline():
    codec, wav = _codec(), _wav(32 * 40)
    with torch.inference_mode():
        offline = codec.encode(wav)
        with codec.streaming():
            codes = torch.cat([codec.encode(c) for c in wav.split(96, dim=-1)], dim=-1)
            audio = torch.cat([codec.decode(c) for c in offline.split(7, dim=-1)], dim=-1)
        assert torch.equal(codes, offline)
        assert torch.allclose(audio, codec.decode(offline), atol=1e-5)


def test_cached_weight_follows_parameter_changes():
    conv = CausalConv1d(3, 4, 5, dilation=2)
    x = torch.randn(1, 3, 50)
    with torch.no_grad():
        a = conv(x)
        conv.weight_g.mul_(2.0)  # in place: the version counter moves
        b = conv(x)
        conv.load_state_dict({k: v * 0.5 for k, v in conv.state_dict().items()})
        c = conv(x)
    with torch.enable_grad():
        ref = conv(x)
    assert torch.allclose(b, 2 * a, atol=1e-5)  # biases start at zero
    assert torch.allclose(c, ref, atol=1e-6)


def test_training_still_gets_gradients_through_weight_norm():
    codec, wav = _codec(), _wav(256)
    codec.train()
    codec(wav, num_codebooks=8).audio.square().mean().backward()
    assert codec.encoder.layers[0].weight_g.grad is not None
    assert codec.decoder.layers[-2].weight_v.grad.abs().sum() > 0
