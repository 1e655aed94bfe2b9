import torch

from aiprod_audio.model import NACCodec
from aiprod_audio.presets import PRESETS


def test_streaming_equals_offline():
    torch.manual_seed(0)
    m = NACCodec(**PRESETS["tiny"]).eval()
    wav = torch.randn(2, 1, 24000 + 123, generator=torch.Generator().manual_seed(1)) * 0.2
    with torch.no_grad():
        codes = m.encode(wav)
        audio = m.decode(codes)
        with m.streaming():
            # uneven chunk sizes, including ones shorter than a frame
            pieces = [m.encode(c) for c in wav.split([100, 1000, 4321, 320, 7000, 11382], dim=-1)]
            pieces.append(m.flush())
        s_codes = torch.cat(pieces, dim=-1)
        with m.streaming():
            s_audio = torch.cat([m.decode(c) for c in s_codes.split([1, 7, 300, 446], dim=-1)], dim=-1)
    assert torch.equal(s_codes, codes)
    assert s_audio.shape == audio.shape
    torch.testing.assert_close(s_audio, audio, rtol=0, atol=1e-5)
    # state is reset when the context exits: a second stream gives the same codes
    with torch.no_grad(), m.streaming():
        assert torch.equal(torch.cat([m.encode(wav[..., :9600]), m.flush()], dim=-1), codes[..., :300])


def test_algorithmic_latency_is_one_frame():
    with torch.device("meta"):
        m = NACCodec(**PRESETS["v1"])
    assert m.latency_seconds == 320 / 24000  # 13.3 ms


def test_encoder_is_causal():
    torch.manual_seed(0)
    m = NACCodec(**PRESETS["tiny"]).eval()
    wav = torch.randn(1, 1, 6400) * 0.2
    changed = wav.clone()
    changed[..., 3200:] = torch.randn(1, 1, 3200)
    with torch.no_grad():
        a, b = m.encode_latents(wav), m.encode_latents(changed)
    hop = m.hop_length
    torch.testing.assert_close(a[..., : 3200 // hop], b[..., : 3200 // hop])  # frames before sample 3200 untouched
    assert not torch.allclose(a[..., 3200 // hop :], b[..., 3200 // hop :])
