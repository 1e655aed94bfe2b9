"""The core's component contract with the tiny preset."""

import torch

from aiprod_core.testing import ComponentContract


class TestSHDTContract(ComponentContract):
    kind = "video-denoiser"
    name = "shdt"
    preset = "tiny"

    def make_inputs(self, module):
        g = torch.Generator().manual_seed(0)
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[1, 3:] = False
        return {
            "latents": torch.randn(2, 16, 2, 4, 6, generator=g),
            "sigma": torch.tensor([0.3, 0.9]),
            "text": torch.randn(2, 5, module.text_dim, generator=g),
            "text_mask": mask,
        }

    def expected_shapes(self, inputs):
        return (2, 16, 2, 4, 6)
