"""Discriminators for adversarial codec training (used only by the training recipe).

- Multi-period (HiFi-GAN, Kong et al. 2020, https://arxiv.org/abs/2010.05646): the waveform
  folded into [T / p, p] for prime periods p, 2D convs along time; catches periodic artefacts.
- Multi-scale STFT (EnCodec, https://arxiv.org/abs/2210.13438 sec. 3.4): 2D convs over the
  complex STFT (real and imaginary parts as channels) at several window sizes, dilated in time.

Each returns a list (one per sub-discriminator) of ``(logits, feature_maps)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from aiprod_core.config import StrictModel


class DiscriminatorConfig(StrictModel):
    periods: list[int] = Field([2, 3, 5, 7, 11], description="multi-period discriminator periods ([] disables it)")
    period_channels: int = Field(32, description="width of the first period conv (x4 per layer, capped at 1024)")
    stft_ffts: list[int] = Field([2048, 1024, 512], description="multi-scale STFT window sizes ([] disables it)")
    stft_channels: int = Field(32, description="width of the STFT discriminator convs")


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int):
        super().__init__()
        self.period = period
        widths = [1] + [min(channels * 4**i, 1024) for i in range(4)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in zip(widths[:-1], widths[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), 1, padding=(2, 0))))
        self.out = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor):
        x = F.pad(x, (0, (-x.shape[-1]) % self.period), mode="reflect")
        x = rearrange(x, "b c (t p) -> b c t p", p=self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        return self.out(x), feats


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(2, c, (3, 9), padding=(1, 4)))])
        for d in (1, 2, 4):  # dilations along time, stride 2 along frequency
            self.convs.append(weight_norm(nn.Conv2d(c, c, (3, 9), (1, 2), dilation=(d, 1), padding=(d, 4))))
        self.convs.append(weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))))
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor):
        spec = torch.stft(x.float().flatten(0, 1), self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        x = rearrange(torch.view_as_real(spec), "b f t c -> b c t f").to(x.dtype)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class CodecDiscriminator(nn.Module):
    """All sub-discriminators behind one module (one optimizer in the trainer)."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.subs = nn.ModuleList(
            [PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods]
            + [STFTDiscriminator(n, cfg.stft_channels) for n in cfg.stft_ffts]
        )
        if not len(self.subs):
            raise ValueError("the discriminator needs at least one period or STFT size")

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outs = [d(wav) for d in self.subs]
        return [o[0] for o in outs], [o[1] for o in outs]
