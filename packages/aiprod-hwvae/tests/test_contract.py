import torch

from aiprod_core.testing import ComponentContract


class TestHWVAEContract(ComponentContract):
    kind = "video-autoencoder"
    name = "hwvae"
    preset = "tiny"

    def make_inputs(self, module):
        g = torch.Generator().manual_seed(0)
        return {"video": torch.rand(1, 3, 5, 16, 24, generator=g) * 2 - 1}

    def expected_shapes(self, inputs):
        return {"reconstruction": (1, 3, 5, 16, 24), "latent_mean": (1, 16, 2, 2, 3), "latent_logvar": (1, 16, 2, 2, 3)}
