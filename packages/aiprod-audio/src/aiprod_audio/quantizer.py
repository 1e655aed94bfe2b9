"""Residual vector quantization with factorized, L2-normalised codes and dead-code restart.

Each stage projects the residual to a small space (``codebook_dim`` = 8), L2-normalises it,
takes the nearest unit-norm code and projects back. Low-dimensional,
normalised look-up is DAC's remedy for codebook collapse ("Improved RVQGAN",
Kumar et al. 2023, https://arxiv.org/abs/2306.06546, sec. 3.2). On top of it we keep an
EMA of each code's usage and re-seed codes that fall out of use with vectors from
the current batch (the dead-code restart of SoundStream/EnCodec, Zeghidour et al. 2021,
https://arxiv.org/abs/2107.03312), so codebooks stay in use even on tiny data. The training forward only
counts usage and keeps the batch's encoder vectors; the restart itself is :meth:`ResidualVQ.restart_dead_codes`,
which the recipe calls after the optimizer step, outside any forward: under FSDP2 a write made inside the
forward lands on the gathered copy of the codebook and is lost when it is freed.
Quantizer dropout (SoundStream sec. 3.3) trains every prefix of the codebooks, so
fewer codebooks give a lower bitrate with graceful degradation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from aiprod_audio.layers import CausalConv1d


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, D, F] sum of the active stages (straight-through)
    codes: torch.Tensor  # [B, Q, F] int64
    commitment_loss: torch.Tensor  # scalar, encoder pulled towards its codes
    codebook_loss: torch.Tensor  # scalar, codes pulled towards the encoder


class FactorizedVQ(nn.Module):
    """One RVQ stage: project D -> d, cosine look-up in K codes, project d -> D."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int, usage_decay: float, dead_threshold: float):
        super().__init__()
        self.codebook_size = codebook_size
        self.usage_decay = usage_decay
        self.dead_threshold = dead_threshold
        self.in_proj = CausalConv1d(dim, codebook_dim, 1)
        self.out_proj = CausalConv1d(codebook_dim, dim, 1)
        self.codebook = nn.Parameter(torch.randn(codebook_size, codebook_dim))
        # EMA of how many vectors picked each code per step; persistent so that a resumed
        # run restarts exactly the same codes (and so a meta-built module gets it back).
        # Starts at zero, which marks a fresh codebook: the restart after the first training step seeds
        # every code from the batch, a data-driven initialisation (EnCodec uses k-means for the same reason).
        self.register_buffer("usage", torch.zeros(codebook_size))
        self._candidates: torch.Tensor | None = None  # encoder vectors of the last training forward
        self._fresh = False  # a forward since the last restart saw a never-used (fresh) codebook

    def normalized_codebook(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    @torch.no_grad()
    def lookup(self, z_e: torch.Tensor) -> torch.Tensor:
        """``z_e [B, d, F]`` -> nearest code indices ``[B, F]`` (cosine similarity)."""
        enc = F.normalize(rearrange(z_e, "b d f -> b f d").float(), dim=-1)
        return (enc @ self.normalized_codebook().float().t()).argmax(dim=-1)

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Re-seed the codes whose usage EMA fell below ``dead_threshold`` x the mean usage (every code of a
        fresh codebook) with encoder vectors kept by the last training forward. Call it outside the forward
        (after the optimizer step) on every rank: it is a collective under torch.distributed, the codebook
        may be an FSDP2-sharded DTensor. Returns the number of codes re-seeded (equal on every rank)."""
        vecs, self._candidates = self._candidates, None
        fresh, self._fresh = self._fresh, False
        if vecs is None or self.dead_threshold <= 0:
            return 0
        if fresh:  # the forward found a fresh codebook (usage all zero): seed every code from the batch
            dead = torch.ones_like(self.usage, dtype=torch.bool)
        else:
            dead = self.usage < self.dead_threshold * self.usage.mean()
        n_dead = int(dead.sum())  # usage is all-reduced in the forward: the same on every rank
        if n_dead == 0:
            return 0
        param = self.codebook.data
        sharded = hasattr(param, "full_tensor")  # a DTensor: FSDP2 keeps only this rank's rows
        full = param.full_tensor() if sharded else param
        pick = torch.randint(0, vecs.shape[0], (n_dead,), device=vecs.device)
        full[dead] = vecs[pick].to(full.device, full.dtype)
        self.usage[dead] = self.usage.mean().clamp_min(1.0 / self.codebook_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(full, src=0)
            torch.distributed.broadcast(self.usage, src=0)
        if sharded:
            from torch.distributed.tensor import distribute_tensor

            mine = distribute_tensor(full, param.device_mesh, param.placements).to_local()
            param.to_local().copy_(mine)
        return n_dead

    @torch.no_grad()
    def _keep_candidates(self, z_e: torch.Tensor, mask: torch.Tensor) -> None:
        """Keep this batch's encoder vectors ``[N, d]`` for :meth:`restart_dead_codes`: those of the items
        that use this stage, all of them when none does (so every rank has candidates)."""
        self._fresh = self._fresh or not bool(self.usage.any())  # before this forward counts its codes
        flat = rearrange(z_e, "b d f -> (b f) d")
        active = rearrange(mask.expand(-1, z_e.shape[-1]), "b f -> (b f)")
        self._candidates = (flat[active] if bool(active.any()) else flat).clone()

    @torch.no_grad()
    def _update_usage(self, codes: torch.Tensor, mask: torch.Tensor) -> None:
        counts = torch.bincount(codes[mask.expand_as(codes)], minlength=self.codebook_size).to(self.usage.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)

    def forward(self, residual: torch.Tensor, mask: torch.Tensor):
        """``residual [B, D, F]``, ``mask [B, 1]`` bool (stage active for that item).

        Returns ``(out [B, D, F], codes [B, F], commitment [B], codebook [B])``."""
        z_e = self.in_proj(residual)
        if self.training and self.dead_threshold > 0:
            self._keep_candidates(z_e.detach(), mask)
        codes = self.lookup(z_e)
        # quantise on the unit sphere: both the encoder vector and its code are L2-normalised
        # (ViT-VQGAN, Yu et al. 2021, https://arxiv.org/abs/2110.04627), so the losses are bounded
        # and a code's norm can never run away; out_proj learns the scale.
        z_e = F.normalize(z_e, dim=1)
        z_q = rearrange(F.embedding(codes, self.normalized_codebook()), "b f d -> b d f").to(z_e.dtype)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean(dim=(1, 2))
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean(dim=(1, 2))
        if self.training:
            self._update_usage(codes, mask)
        z_q = z_e + (z_q - z_e).detach()  # straight-through estimator
        return self.out_proj(z_q), codes, commitment, codebook

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        z_q = rearrange(F.embedding(codes, self.normalized_codebook()), "b f d -> b d f")
        return self.out_proj(z_q.to(self.out_proj.weight_v.dtype))


class ResidualVQ(nn.Module):
    """``num_codebooks`` stages, each quantising what the previous ones left."""

    def __init__(
        self,
        *,
        dim: int,
        num_codebooks: int,
        codebook_size: int,
        codebook_dim: int,
        quantizer_dropout: float,
        usage_decay: float,
        dead_threshold: float,
    ):
        super().__init__()
        self.num_codebooks = num_codebooks
        self.quantizer_dropout = quantizer_dropout
        self.stages = nn.ModuleList(
            FactorizedVQ(dim, codebook_size, codebook_dim, usage_decay, dead_threshold) for _ in range(num_codebooks)
        )

    def forward(self, z: torch.Tensor, num_codebooks: int | None = None) -> QuantizerOutput:
        B = z.shape[0]
        n_q = torch.full((B,), num_codebooks or self.num_codebooks, device=z.device)
        if self.training and num_codebooks is None and self.quantizer_dropout > 0:
            # per item: with probability p use a random prefix of 1..Q codebooks
            drop = torch.rand(B, device=z.device) < self.quantizer_dropout
            n_q = torch.where(drop, torch.randint(1, self.num_codebooks + 1, (B,), device=z.device), n_q)
        # every stage runs (masked per item) so all parameters take part in each step (DDP-safe)
        n_stages = num_codebooks or self.num_codebooks
        quantized = torch.zeros_like(z)
        residual = z
        codes, commit, cbl = [], z.new_zeros(()), z.new_zeros(())
        for i, stage in enumerate(self.stages[:n_stages]):
            mask = (n_q > i)[:, None]  # [B, 1]
            out, idx, c, k = stage(residual, mask)
            m = mask.to(z.dtype)
            quantized = quantized + out * m[:, :, None]
            residual = residual - out
            commit = commit + (c * m[:, 0]).sum() / B
            cbl = cbl + (k * m[:, 0]).sum() / B
            codes.append(idx)
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), commit, cbl)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        residual, codes = z, []
        for stage in self.stages[:num_codebooks]:
            z_e = stage.in_proj(residual)
            idx = stage.lookup(z_e)
            residual = residual - stage.decode(idx).to(residual.dtype)
            codes.append(idx)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Every stage's :meth:`FactorizedVQ.restart_dead_codes` (after the optimizer step, on every rank);
        the number of codes re-seeded."""
        return sum(stage.restart_dead_codes() for stage in self.stages)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, Q', F]`` with Q' <= num_codebooks -> ``[B, D, F]``."""
        return sum(stage.decode(codes[:, i]) for i, stage in enumerate(self.stages[: codes.shape[1]]))
