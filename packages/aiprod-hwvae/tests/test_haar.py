import pytest
import torch

from aiprod_hwvae import haar


@pytest.mark.parametrize("first", [True, False])
def test_pyramid_reconstructs_perfectly(first):
    torch.manual_seed(0)
    t = 9 if first else 8
    x = torch.randn(2, 3, t, 32, 48, dtype=torch.float64)
    pyr = haar.HaarPyramid((True, True, False))
    coeffs = pyr(x, first)
    assert [tuple(c.shape) for c in coeffs] == [
        (2, 24, 5 if first else 4, 16, 24), (2, 24, 3 if first else 2, 8, 12), (2, 12, 3 if first else 2, 4, 6)]
    err = (pyr.inverse(coeffs, 3, first) - x).abs().max().item()
    print(f"Haar pyramid round trip max abs error (float64): {err:.2e}")
    assert err < 1e-12
    err32 = (pyr.inverse(pyr(x.float(), first), 3, first) - x.float()).abs().max().item()
    print(f"Haar pyramid round trip max abs error (float32): {err32:.2e}")
    assert err32 < 1e-5


def test_levels_are_orthonormal():
    """Energy is preserved: the transform is orthonormal on the non-padded coefficients."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 5, 8, 8, dtype=torch.float64)
    w = haar.dwt(x, time=True, first=True)
    assert torch.allclose(w.pow(2).sum(), x.pow(2).sum())
    # the lone first frame has an exactly zero temporal high band
    bands = w.view(1, 4, 2, 3, 3, 4, 4)  # (spatial band, temporal band, channel)
    assert bands[:, :, 1, :, :1].abs().max() == 0
    assert bands[:, :, 0, :, :1].abs().max() > 0
    # the low band of a constant video is the constant times the band gain; highs are zero
    c = torch.ones(1, 1, 3, 4, 4, dtype=torch.float64)
    wc = haar.dwt(c, time=True, first=True)
    assert torch.allclose(wc[:, 0, 1:], torch.full_like(wc[:, 0, 1:], 2 * 2**0.5))
    assert wc[:, 1:].abs().max() < 1e-12


def test_time_levels_need_causal_frame_counts():
    with pytest.raises(ValueError, match="1 \\+ 2m"):
        haar.dwt_time(torch.zeros(1, 1, 4, 2, 2), first=True)
