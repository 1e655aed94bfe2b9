import torch

from aiprod_core.testing import ComponentContract


class TestLatentX2Contract(ComponentContract):
    kind = "latent-upsampler"
    name = "latent-x2"
    preset = "tiny"

    def make_inputs(self, module):
        return {"latents": torch.randn(2, 16, 3, 6, 10, generator=torch.Generator().manual_seed(0))}

    def expected_shapes(self, inputs):
        b, c, t, h, w = inputs["latents"].shape
        return (b, c, t, 2 * h, 2 * w)
