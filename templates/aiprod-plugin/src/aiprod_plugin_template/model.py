"""A mu-law audio codec (ITU-T G.711 companding): 1 codebook of 2**bits levels per sample.

Small on purpose — it shows the component contract: a config model whose fields are the
keyword-only constructor arguments, ``PretrainedMixin`` for checksummed save/load, and the
``audio-codec`` interface.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.weights import PretrainedMixin


class MuLawCodecConfig(StrictModel):
    bits: int = 8  # codebook size 2**bits
    mu: float = 255.0  # companding strength
    sample_rate: int = 24000


class MuLawCodec(PretrainedMixin, nn.Module):
    config_class = MuLawCodecConfig
    component_kind = "audio-codec"
    component_name = "mulaw"
    component_license = "MIT"

    def __init__(self, *, bits: int = 8, mu: float = 255.0, sample_rate: int = 24000):
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_rate = float(sample_rate)
        self.num_codebooks = 1
        self.codebook_size = 2**bits
        self.mu = mu
        # a learnable input gain: the one trained parameter of this toy codec
        self.gain = nn.Parameter(torch.ones(1))

    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        x = (wav * self.gain).clamp(-1, 1)
        return torch.sign(x) * torch.log1p(self.mu * x.abs()) / math.log1p(self.mu)

    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        y = self.encode_latents(wav)
        return ((y + 1) / 2 * (self.codebook_size - 1)).round().long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        y = codes.to(self.gain.dtype) / (self.codebook_size - 1) * 2 - 1
        x = torch.sign(y) * (torch.pow(1 + self.mu, y.abs()) - 1) / self.mu
        return x / self.gain

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Round trip through the continuous companding curve (differentiable)."""
        y = self.encode_latents(wav)
        return torch.sign(y) * (torch.pow(1 + self.mu, y.abs()) - 1) / self.mu / self.gain
