import pytest
import torch

from aiprod_audio.model import NACCodec
from aiprod_audio.presets import PRESETS
from aiprod_core.errors import AiprodError


def tiny(**kw):
    torch.manual_seed(0)
    return NACCodec(**{**PRESETS["tiny"], **kw})


def test_v1_is_50m_parameters_on_meta():
    with torch.device("meta"):
        m = NACCodec(**PRESETS["v1"])
    n = m.num_parameters()
    assert 45e6 <= n <= 55e6, n
    assert m.sample_rate == 24000 and m.frame_rate == 75.0 and m.hop_length == 320
    assert (m.num_codebooks, m.codebook_size) == (8, 1024)
    assert m.bandwidth_kbps() == pytest.approx(6.0)


def test_shapes_and_latents():
    m = tiny().eval()
    wav = torch.randn(2, 1, 24000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        codes = m.encode(wav)
        lat = m.encode_latents(wav)
        out = m.decode(codes)
    assert m.hop_length == 32 and m.frame_rate == 750.0  # tiny: 4 x 8
    assert codes.shape == (2, 8, 750) and codes.dtype == torch.int64
    assert lat.shape == (2, PRESETS["tiny"]["latent_dim"], 750)
    assert out.shape == (2, 1, 24000) and out.abs().max() <= 1
    # a length that is not a whole number of frames is padded to the next frame
    assert m.encode(wav[..., :1000]).shape[-1] == 32


def test_bandwidth_selects_codebook_prefix():
    with torch.device("meta"):
        v1 = NACCodec(**PRESETS["v1"])
    assert [v1.codebooks_for_bandwidth(b) for b in (1.5, 3, 6, 12)] == [2, 4, 8, 8]
    with pytest.raises(AiprodError, match="below one codebook"):
        v1.codebooks_for_bandwidth(0.5)
    m = tiny().eval()
    wav = torch.randn(1, 1, 3200) * 0.1
    with torch.no_grad():
        full, two = m.encode(wav), m.encode(wav, num_codebooks=2)
        assert torch.equal(full[:, :2], two)  # residual stages: a prefix of the codes
        assert m.decode(two).shape == (1, 1, 3200)


def test_bad_inputs_are_one_line_errors():
    m = tiny().eval()
    with pytest.raises(AiprodError, match=r"expected mono wav \[B, 1, N\]"):
        m.encode(torch.zeros(1, 2, 320))
    with pytest.raises(AiprodError, match="values must lie in 0..1023"):
        m.decode(torch.full((1, 8, 3), 1024))
    with pytest.raises(AiprodError, match="num_codebooks=9"):
        m.encode(torch.zeros(1, 1, 320), num_codebooks=9)


def test_quantizer_dropout_trains_codebook_prefixes():
    m = tiny(quantizer_dropout=1.0, dead_code_threshold=0.0).train()
    torch.manual_seed(3)
    lat = m.encode_latents(torch.randn(16, 1, 640) * 0.1)
    out = m.quantizer(lat)
    used = []
    for b in range(16):  # which prefix of the codebooks produced this item's quantized latents?
        sums = [m.quantizer.decode(out.codes[b : b + 1, :k]) for k in range(1, 9)]
        used.append(next(k + 1 for k, s in enumerate(sums) if torch.allclose(s, out.quantized[b : b + 1], atol=1e-5)))
    assert len(set(used)) >= 3 and min(used) < 8


def test_dead_codes_are_restarted_from_the_batch():
    m = tiny().train()
    stage = m.quantizer.stages[0]
    with torch.no_grad():
        stage.codebook.data[:] = stage.codebook.data[:1]  # collapse: every code identical
    wav = torch.randn(4, 1, 3200) * 0.3
    m(wav)  # first step: usage counted (only one code index wins)
    m.restart_dead_codes()  # after it (the recipe: after the optimizer step) codes are seeded from encoder outputs
    distinct = torch.unique(stage.codebook.detach(), dim=0).shape[0]
    assert distinct > 30
    assert (stage.usage > 0).all()
