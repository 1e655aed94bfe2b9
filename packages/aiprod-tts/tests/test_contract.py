"""The core's component contract, run on the tiny preset."""

import torch

from aiprod_core.testing import ComponentContract


class TestFastSpeech2HiFiGANContract(ComponentContract):
    kind = "speech-synthesizer"
    name = "fastspeech2-hifigan"
    preset = "tiny"

    def make_inputs(self, module):
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(1, len(module.frontend.table), (2, 7), generator=g)
        tokens[1, 5:] = 0  # second utterance is 5 tokens long
        durations = torch.tensor([[2, 3, 1, 4, 2, 2, 1], [3, 3, 3, 3, 3, 0, 0]])
        return {"tokens": tokens, "durations": durations}

    def expected_shapes(self, inputs):
        frames = int(inputs["durations"].sum(-1).max())
        return {"mel": (2, 80, frames), "wav": (2, 1, frames * 256)}
