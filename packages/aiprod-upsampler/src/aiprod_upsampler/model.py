"""Latent spatial upsampler ×2 (AIPROD-Upsampler v1).

Maps NORMALISED video latents ``[B, C, T, H, W]`` (what the video-autoencoder's
``encode`` returns and what the denoiser sees) to normalised latents ``[B, C, T, 2H, 2W]``.
It is the middle step of two-stage generation (LTX-Video, arXiv:2501.00103; LTX-2):
sample at half resolution, upsample the latent ×2, re-noise partially and refine.

Architecture, read top to bottom::

    x ─┬─ conv_in ─ ResBlock3d × blocks_before ─ SubPixelUp ×2 ─ ResBlock3d × blocks_after ─ norm ─ SiLU ─ conv_out ─┐
       └──────────────────────────── bilinear ×2 (the "base") ─────────────────────────────────────────────────────── + ── y

Choices and why (better than a plain "res blocks + pixel shuffle"):

* **Residual on a bilinear base.** The network predicts a correction to the bilinear
  upsample of its input, and ``conv_out`` starts at zero, so an untrained model *is*
  bilinear upsampling and training starts from that baseline, never below it (the same
  trick as the zero-initialised last layer of ControlNet, arXiv:2302.05543, and the
  global residual of VDSR, arXiv:1511.04587).
* **Latent statistics.** Input and output are the autoencoder's *normalised* latents (its
  stored per-channel shift/scale applied), the space the denoiser works in, so stage 2 needs
  no denormalise → upsample → renormalise round trip (diffusers' LTX upsample pipeline does
  one). Bilinear weights sum to one, so the base commutes with any per-channel shift/scale:
  the starting point does not depend on which statistics an autoencoder release ships.
* **Sub-pixel convolution with ICNR init.** Upsampling is a learned conv to ``4·C``
  channels followed by a pixel shuffle (Shi et al. 2016, arXiv:1609.05158), initialised
  with ICNR (Aitken et al. 2017, arXiv:1707.02937) so that the four sub-pixel phases start
  identical: no checkerboard at initialisation, unlike a transposed conv.
* **3D convolutions** (kernel ``temporal_kernel × 3 × 3``) in the residual blocks: a latent
  frame already stands for 4 video frames, and neighbouring latent frames carry the same
  edges, so temporal context makes the upsampled detail consistent across frames
  (LTX-Video's latent upsampler uses 3D convs too). The sub-pixel conv itself is per-frame
  (``1 × 3 × 3``): upsampling is purely spatial. ``temporal_kernel=1`` gives a 2D model.
  Padding is replicate (edge) padding in all three axes, so borders are not pulled
  towards 0 and a single-frame latent (``T = 1``, an image) is handled like a still video.
* **Channel RMS norm** (per position, learnable gain) instead of GroupNorm: it does not
  depend on the clip's size, so tiled or shorter inference sees exactly the statistics of
  training (GroupNorm over T·H·W does not).
* **Zero-initialised second conv in every residual block** (Goyal et al. 2017,
  arXiv:1706.02677): each block starts as the identity, so depth does not destabilise
  early training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from aiprod_core.weights import PretrainedMixin
from aiprod_upsampler.config import LatentUpsamplerConfig  # noqa: F401 - re-exported (was defined here)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel axis of ``[B, C, T, H, W]``, one gain per channel."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x.to(dtype) * self.weight.view(1, -1, 1, 1, 1).to(dtype)


class ReplicateConv3d(nn.Conv3d):
    """A ``kt × kh × kw`` conv with replicate ("same") padding in time and space."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int]) -> None:
        super().__init__(cin, cout, kernel, padding=0)
        kt, kh, kw = kernel
        # F.pad order: (w_left, w_right, h_top, h_bottom, t_front, t_back)
        self._pad = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2, kt // 2, (kt - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = F.pad(x, self._pad, mode="replicate")
        return super().forward(x)


class ResBlock3d(nn.Module):
    """Pre-norm residual block: ``x + conv(SiLU(norm(conv(SiLU(norm(x))))))``."""

    def __init__(self, channels: int, temporal_kernel: int, eps: float) -> None:
        super().__init__()
        kernel = (temporal_kernel, 3, 3)
        self.norm1 = ChannelRMSNorm(channels, eps)
        self.conv1 = ReplicateConv3d(channels, channels, kernel)
        self.norm2 = ChannelRMSNorm(channels, eps)
        self.conv2 = ReplicateConv3d(channels, channels, kernel)
        nn.init.zeros_(self.conv2.weight)  # the block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class SubPixelUp(nn.Module):
    """Per-frame ``3 × 3`` conv to ``4·C`` channels, then a 2× spatial pixel shuffle (ICNR init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ReplicateConv3d(channels, 4 * channels, (1, 3, 3))
        self.icnr_()

    @torch.no_grad()
    def icnr_(self) -> None:
        """ICNR: one kernel per output channel, repeated over the 4 sub-pixel phases."""
        w = self.conv.weight
        if w.is_meta:
            return
        sub = torch.empty(w.shape[0] // 4, *w.shape[1:], dtype=w.dtype, device=w.device)
        nn.init.kaiming_uniform_(sub, a=5**0.5)  # nn.Conv default init, on the sub-kernel
        w.copy_(sub.repeat_interleave(4, dim=0))  # channel index = c·4 + r1·2 + r2 (see forward)
        self.conv.bias.copy_(self.conv.bias[::4].repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.conv(x), "b (c r1 r2) t h w -> b c t (h r1) (w r2)", r1=2, r2=2)


def upsample_base(latents: torch.Tensor, mode: str) -> torch.Tensor:
    """The fixed ×2 spatial upsample of ``[B, C, T, H, W]``: 'bilinear' (half-pixel centres) or 'nearest'."""
    if mode == "nearest":
        return latents.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    if mode == "bilinear":
        b = latents.shape[0]
        frames = rearrange(latents, "b c t h w -> (b t) c h w")
        up = F.interpolate(frames.float(), scale_factor=2, mode="bilinear", align_corners=False)
        return rearrange(up.to(latents.dtype), "(b t) c h w -> b c t h w", b=b)
    raise ValueError(f"upsample_base: mode {mode!r}, expected 'bilinear' or 'nearest'")


class LatentUpsampler(PretrainedMixin, nn.Module):
    """Spatial ×2 upsampler of normalised video latents (kind ``latent-upsampler``, name ``latent-x2``)."""

    config_class = LatentUpsamplerConfig
    component_kind = "latent-upsampler"
    component_name = "latent-x2"

    def __init__(
        self,
        *,
        latent_channels: int = 16,
        mid_channels: int = 512,
        blocks_before: int = 6,
        blocks_after: int = 4,
        temporal_kernel: int = 3,
        base: str = "bilinear",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.scale_factor = 2
        self.base = base
        kernel = (temporal_kernel, 3, 3)
        self.conv_in = ReplicateConv3d(latent_channels, mid_channels, kernel)
        self.blocks_before = nn.ModuleList(
            ResBlock3d(mid_channels, temporal_kernel, norm_eps) for _ in range(blocks_before)
        )
        self.upsample = SubPixelUp(mid_channels)
        self.blocks_after = nn.ModuleList(
            ResBlock3d(mid_channels, temporal_kernel, norm_eps) for _ in range(blocks_after)
        )
        self.norm_out = ChannelRMSNorm(mid_channels, norm_eps)
        self.conv_out = ReplicateConv3d(mid_channels, latent_channels, kernel)
        if base != "none":  # start exactly at the fixed base upsample
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"LatentUpsampler: expected latents [B, {self.latent_channels}, T, H, W], got {tuple(latents.shape)}"
            )
        h = self.conv_in(latents)
        for block in self.blocks_before:
            h = block(h)
        h = self.upsample(h)
        for block in self.blocks_after:
            h = block(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if self.base != "none":
            out = out + upsample_base(latents, self.base)
        return out
