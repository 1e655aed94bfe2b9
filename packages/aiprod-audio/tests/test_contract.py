import torch

from aiprod_core.testing import ComponentContract


class TestNACCodecContract(ComponentContract):
    kind = "audio-codec"
    name = "nac-rvq"
    preset = "tiny"

    def make_inputs(self, module):
        return {"wav": torch.randn(1, 1, 2400, generator=torch.Generator().manual_seed(0)) * 0.1}

    def expected_shapes(self, inputs):
        latent_dim = 32  # tiny preset
        frames = 75  # 2400 samples / hop 32
        return {
            "audio": (1, 1, 2400),
            "codes": (1, 8, frames),
            "latents": (1, latent_dim, frames),
            "commitment_loss": (),
            "codebook_loss": (),
        }
