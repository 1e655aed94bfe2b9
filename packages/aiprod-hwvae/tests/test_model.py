import time

import pytest
import torch

from aiprod_core.errors import AiprodError
from aiprod_hwvae.model import HWVAE
from aiprod_hwvae.presets import PRESETS


def test_v1_parameter_count_matches_the_card():
    with torch.device("meta"):
        model = HWVAE(**PRESETS["v1"])
    n = model.num_parameters()
    print(f"HW-VAE v1: {n / 1e6:.2f}M parameters (card: ~150M)")
    assert 135e6 <= n <= 165e6
    assert model.latent_channels == 16


def test_shapes_and_interface(tiny_vae):
    video = torch.rand(2, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        z = tiny_vae.encode(video)
        out = tiny_vae.decode(z)
        zs = tiny_vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 16, 3, 4, 6)
    assert out.shape == video.shape and out.abs().max() <= 1.0
    assert not torch.equal(z, zs)
    assert tiny_vae.spatial_compression == 8 and tiny_vae.temporal_compression == 4


@pytest.mark.parametrize(
    "shape, message",
    [((1, 3, 8, 32, 32), "1 \\+ 4k"), ((1, 3, 5, 36, 32), "multiples of 8"), ((1, 4, 5, 32, 32), "expected \\[B, 3")],
)
def test_bad_video_is_a_clear_error(tiny_vae, shape, message):
    with pytest.raises(AiprodError, match=message):
        tiny_vae.encode(torch.zeros(shape))


def test_latent_statistics_normalise(tiny_vae):
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    shift, scale = [0.5] * 16, [2.0] * 16
    stats = HWVAE(**{**PRESETS["tiny"], "latent_shift": shift, "latent_scale": scale})
    stats.load_state_dict(tiny_vae.state_dict())
    stats.eval()
    with torch.no_grad():
        raw, norm = tiny_vae.encode(video), stats.encode(video)
        assert torch.allclose(norm, (raw - 0.5) / 2.0, atol=1e-6)
        assert torch.allclose(stats.decode(norm), tiny_vae.decode(raw), atol=1e-6)
    with pytest.raises(AiprodError, match="latent_shift"):
        HWVAE(**{**PRESETS["tiny"], "latent_shift": [0.0] * 3})


def test_causal_first_frame_is_independent_of_later_frames(tiny_vae):
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    other = video.clone()
    other[:, :, 1:] = torch.rand_like(other[:, :, 1:])
    with torch.no_grad():
        a, b = tiny_vae.encode(video), tiny_vae.encode(other)
        assert torch.equal(a[:, :, 0], b[:, :, 0])
        assert not torch.allclose(a[:, :, 1:], b[:, :, 1:])
        da, db = tiny_vae.decode(a), tiny_vae.decode(b)
    assert torch.allclose(da[:, :, 0], db[:, :, 0], atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_equals_full(tiny_vae, chunk):
    torch.manual_seed(0)
    video = torch.rand(1, 3, 17, 32, 32) * 2 - 1
    with torch.no_grad():
        z_full = tiny_vae.encode(video)
        z_chunk = tiny_vae.encode(video, chunk=chunk)
        v_full = tiny_vae.decode(z_full)
        v_chunk = tiny_vae.decode(z_full, chunk=chunk)
    enc_err = (z_full - z_chunk).abs().max().item()
    dec_err = (v_full - v_chunk).abs().max().item()
    print(f"chunk={chunk} latent frames: encode max abs diff {enc_err:.2e}, decode max abs diff {dec_err:.2e}")
    assert enc_err <= 1e-4 and dec_err <= 1e-4


def test_tiled_decode_matches_untiled(tiny_vae):
    """With the unused tile edge ((overlap − ramp)/2 = 6 latent px) covering the tiny decoder's
    receptive field (≤ 5 latent px), tiled == untiled up to float rounding: tolerance 1e-5.
    With a narrow overlap it is a cross-faded approximation: reported, bounded loosely."""
    torch.manual_seed(0)
    z = torch.randn(1, 16, 2, 32, 26)
    with torch.no_grad():
        full = tiny_vae.decode(z)
        exact = tiny_vae.decode(z, tile=20, overlap=14, blend=1 / 7, chunk=1)  # 3 × 2 tiles
        approx = tiny_vae.decode(z, tile=20, overlap=12, blend=0.5)
    err_exact = (full - exact).abs().max().item()
    err_approx = (full - approx).abs().max().item()
    print(f"tiled decode max abs diff: {err_exact:.2e} (tile 20, overlap 14), "
          f"{err_approx:.2e} (tile 20, overlap 12, random-init tiny model)")
    assert err_exact <= 1e-5
    assert 0 < err_approx < 0.1


def test_tiled_encode_matches_untiled(tiny_vae):
    torch.manual_seed(0)
    video = torch.rand(1, 3, 5, 192, 160) * 2 - 1
    with torch.no_grad():
        full = tiny_vae.encode(video)
        tiled = tiny_vae.encode(video, tile=128, overlap=96, blend=0.1)
    err = (full - tiled).abs().max().item()
    print(f"tiled encode max abs diff (tile 128 px, overlap 96 px): {err:.2e}")
    assert err <= 1e-5
    with pytest.raises(AiprodError, match="multiples of 8"):
        tiny_vae.encode(video, tile=100, overlap=20)


def test_bf16_forward_is_finite(tiny_vae):
    video = (torch.rand(1, 3, 5, 16, 16) * 2 - 1).bfloat16()
    model = tiny_vae.to(torch.bfloat16)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(video)
    assert out.reconstruction.dtype == torch.bfloat16
    assert torch.isfinite(out.reconstruction.float()).all()
    assert time.perf_counter() - t0 < 30
