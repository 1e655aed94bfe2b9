import pytest
import torch

from aiprod_hwvae.model import HWVAE
from aiprod_hwvae.presets import PRESETS


@pytest.fixture
def tiny_vae() -> HWVAE:
    """The tiny preset with its zero-initialised convs randomised, so every path carries signal."""
    torch.manual_seed(0)
    model = HWVAE(**PRESETS["tiny"])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0.0, 0.05)
    return model.eval()
