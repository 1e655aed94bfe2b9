"""Codec metrics: SI-SDR, multi-scale mel distance, bitrate, per-codebook perplexity."""

from __future__ import annotations

import math

import torch

from aiprod_audio.losses import MultiScaleMelLoss


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item (Le Roux et al. 2019, https://arxiv.org/abs/1811.02508).

    ``[..., N]`` tensors (cropped to the shorter length); mean removed first."""
    n = min(estimate.shape[-1], reference.shape[-1])
    est = estimate[..., :n].double()
    ref = reference[..., :n].double()
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return (10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))).float()


_MEL_CACHE: dict[int, MultiScaleMelLoss] = {}


def mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = 24000) -> float:
    """Multi-scale mel distance (DAC's evaluation: windows 32..2048, log + linear L1). Lower is better."""
    if sample_rate not in _MEL_CACHE:
        _MEL_CACHE[sample_rate] = MultiScaleMelLoss(
            sample_rate, [32, 64, 128, 256, 512, 1024, 2048], [5, 10, 20, 40, 80, 160, 320]
        )
    n = min(estimate.shape[-1], reference.shape[-1])
    with torch.no_grad():
        return float(_MEL_CACHE[sample_rate].to(estimate.device)(estimate[..., :n], reference[..., :n]))


def bitrate(num_codebooks: int, codebook_size: int, frame_rate: float) -> float:
    """Bits per second of the code stream (uncompressed): Q * log2(K) * frame rate."""
    return num_codebooks * math.log2(codebook_size) * frame_rate


def codebook_perplexity(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """``exp(entropy)`` of the code histogram of each codebook of ``codes [B, Q, F]``.

    1 = one code used; ``codebook_size`` = uniform use. A collapsed codebook sits near 1."""
    out = []
    for q in range(codes.shape[1]):
        counts = torch.bincount(codes[:, q].reshape(-1).cpu(), minlength=codebook_size).double()
        p = counts / counts.sum()
        out.append(float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())))
    return out
