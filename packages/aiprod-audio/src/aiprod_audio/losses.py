"""Reconstruction and adversarial losses of the codec.

- multi-scale mel: L1 on log-mel and on mel magnitude at several window sizes (DAC,
  https://arxiv.org/abs/2306.06546 sec. 3.5; windows 32..2048 with 5..320 mel bands);
- multi-resolution STFT: spectral convergence + log-magnitude L1 (Parallel WaveGAN,
  https://arxiv.org/abs/1910.11480);
- least-squares GAN losses (Mao et al. 2017) and relative feature matching (EnCodec eq. 2:
  L1 between feature maps divided by the mean magnitude of the real ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


class MultiScaleMelLoss(nn.Module):
    def __init__(self, sample_rate: int, windows: list[int], n_mels: list[int]):
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError("windows and n_mels must have the same length")
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=w,
                win_length=w,
                hop_length=w // 4,
                n_mels=m,
                f_min=0.0,
                f_max=sample_rate / 2,
                power=1.0,
                center=True,
                norm="slaney",
                mel_scale="slaney",
            )
            for w, m in zip(windows, n_mels)
        )

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake, real = fake.float(), real.float()
        loss = fake.new_zeros(())
        for mel in self.mels:
            mf, mr = mel(fake), mel(real)
            loss = loss + F.l1_loss(mf.clamp_min(1e-5).log10(), mr.clamp_min(1e-5).log10()) + F.l1_loss(mf, mr)
        return loss / len(self.mels)


class MultiResolutionSTFTLoss(nn.Module):
    def __init__(self, ffts: list[int]):
        super().__init__()
        self.ffts = list(ffts)
        for n in self.ffts:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake, real = fake.float().flatten(0, 1), real.float().flatten(0, 1)
        loss = fake.new_zeros(())
        for n in self.ffts:
            win = getattr(self, f"window_{n}")
            sf = torch.stft(fake, n, n // 4, window=win, return_complex=True).abs().clamp_min(1e-7)
            sr = torch.stft(real, n, n // 4, window=win, return_complex=True).abs().clamp_min(1e-7)
            sc = torch.linalg.norm(sr - sf) / torch.linalg.norm(sr).clamp_min(1e-7)
            loss = loss + sc + F.l1_loss(sf.log(), sr.log())
        return loss / len(self.ffts)


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: real -> 1, fake -> 0, averaged over sub-discriminators."""
    loss = sum(((1 - r.float()) ** 2).mean() + (f.float() ** 2).mean() for r, f in zip(real_logits, fake_logits))
    return loss / len(real_logits)


def generator_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return sum(((1 - f.float()) ** 2).mean() for f in fake_logits) / len(fake_logits)


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean over sub-discriminators and layers of ``|f - r|_1 / mean|r|`` (EnCodec's relative form)."""
    terms = [
        F.l1_loss(f.float(), r.detach().float()) / r.detach().float().abs().mean().clamp_min(1e-8)
        for rs, fs in zip(real_feats, fake_feats)
        for r, f in zip(rs, fs)
    ]
    return torch.stack(terms).mean()
