import pytest
import torch

from aiprod_upsampler.model import LatentUpsampler, SubPixelUp, upsample_base
from aiprod_upsampler.presets import PRESETS


def tiny(**kw) -> LatentUpsampler:
    torch.manual_seed(0)
    return LatentUpsampler(**{**PRESETS["tiny"], **kw}).eval()


def randomise_(model: torch.nn.Module) -> None:
    """Give the zero-initialised convs weights so the trunk is exercised."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_v1_parameter_count_matches_card():
    with torch.device("meta"):
        model = LatentUpsampler(**PRESETS["v1"])
    n = model.num_parameters()
    print(f"v1 parameters: {n:,}")
    assert 135e6 <= n <= 165e6, n  # model card: ~150M (± 10%)
    assert all(p.is_meta for p in model.parameters())


def test_tiny_is_small():
    assert tiny().num_parameters() < 300_000


def test_untrained_model_is_exactly_bilinear():
    x = torch.randn(2, 16, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(tiny()(x), upsample_base(x, "bilinear"))
        assert torch.equal(tiny(base="nearest")(x), upsample_base(x, "nearest"))


def test_shapes_single_frame_and_odd_sizes():
    model = tiny()
    randomise_(model)
    for shape in [(1, 16, 1, 4, 4), (2, 16, 5, 3, 9)]:
        with torch.no_grad():
            y = model(torch.randn(shape))
        b, c, t, h, w = shape
        assert y.shape == (b, c, t, 2 * h, 2 * w) and torch.isfinite(y).all()


def test_wrong_channels_is_one_line_error():
    with pytest.raises(ValueError, match=r"expected latents \[B, 16, T, H, W\], got \(1, 8, 1, 4, 4\)"):
        tiny()(torch.randn(1, 8, 1, 4, 4))


def test_icnr_subpixel_starts_without_checkerboard():
    """ICNR: on a constant input the four sub-pixel phases are identical (no checkerboard)."""
    torch.manual_seed(0)
    up = SubPixelUp(8)
    y = up(torch.ones(1, 8, 1, 6, 6))[..., 2:-2, 2:-2]  # away from the border
    assert torch.allclose(y[..., 0::2, 0::2], y[..., 1::2, 1::2], atol=1e-6)
    assert torch.allclose(y[..., 0::2, 1::2], y[..., 1::2, 0::2], atol=1e-6)
    assert y.std() > 0


def test_frames_are_coupled_by_3d_convs_and_not_by_2d():
    x = torch.randn(1, 16, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change the first frame only
    m3, m2 = tiny(), tiny(temporal_kernel=1)
    randomise_(m3)
    randomise_(m2)
    with torch.no_grad():
        d3 = (m3(x) - m3(x2))[:, :, 1].abs().max()
        d2 = (m2(x) - m2(x2))[:, :, 1].abs().max()
    assert d3 > 1e-4 and d2 == 0


def test_base_commutes_with_latent_normalisation():
    """Bilinear weights sum to 1: upsampling raw or normalised latents is the same up to shift/scale."""
    x = torch.randn(1, 16, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    shift, scale = torch.randn(1, 16, 1, 1, 1), torch.rand(1, 16, 1, 1, 1) + 0.5
    a = upsample_base((x - shift) / scale, "bilinear")
    b = (upsample_base(x, "bilinear") - shift) / scale
    assert torch.allclose(a, b, atol=1e-5)


def test_gradients_reach_every_parameter_after_one_step():
    model = tiny().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 16, 2, 8, 8)
    for _ in range(3):  # zero-initialised convs unlock the trunk after the first steps
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead
