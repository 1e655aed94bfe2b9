"""HW-VAE: the Haar-wavelet causal video autoencoder (AIPROD-HWVAE v1).

``video [B, 3, 1 + 4k, H, W]`` in [-1, 1]  ↔  ``latents [B, 16, 1 + k, H/8, W/8]``.
H and W must be multiples of 8 (three spatial Haar levels); T must be ``1 + 4k``.

Design (after WF-VAE, Li et al. 2024, arXiv:2411.17459, "wavelet-driven energy flow")::

    video ─ Haar L1 (t+s) ─ c1 [24, 1+2k, H/2] ─ conv_in ─ blocks ─ Haar-down (t+s) ─┐
                └ Haar L2 (t+s) ─ c2 [24, 1+k, H/4] ─ 1×1 ───────────────────── + ─ blocks ─ Haar-down (s) ─┐
                        └ Haar L3 (s) ─ c3 [12, 1+k, H/8] ─ 1×1 ───────────────────────────────────── + ─ blocks ─ mid ─ out ─ + ─ (μ, log σ²)
                                                        └─────────────── 1×1 "energy flow" shortcut ─────────────────┘

    z ─ conv_in ─ mid ─ blocks ─ head3 (+1×1 from z) = w3 ─ iHaar ─ low2 ┐
          └─ Haar-up (s) ─ blocks ─ head2 ─────────────── w2 (low band += low2) ─ iHaar ─ low1 ┐
                └─ Haar-up (t+s) ─ blocks ─ head1 ──────────────────────── w1 (low band += low1) ─ iHaar ─ video

Choices and why:

* **The wavelet does the first ×2 of space and time for free.** The encoder's widest stage
  runs on level-1 coefficients at ``H/2`` and half the frames, and the decoder's last stage
  predicts level-1 coefficients instead of pixels: the most expensive resolution of a plain
  VAE (Wan, CogVideoX decode at full H×W) is never touched by a convolution.
* **Energy flow.** Every level's coefficients are injected into the encoder at their own
  scale, and the low band of each decoder level is the inverse transform of the level below,
  so the network only learns *corrections* to a fixed multiscale path; low frequencies reach
  the latent (and come back) through 1×1 shortcuts.
* **Haar down/up-sampling inside the networks** (orthonormal space-to-channel, then a 1×1
  projection) instead of strided or transposed convs: lossless, no checkerboard, and the same
  causal first-frame rule as the input transform.
* **Causal in time**: every temporal conv is left-padded (replicating frame 0) and the first
  frame is coded alone, so a streaming pass with a cache (``encode(chunk=…)``) equals the full
  pass. Chunk boundaries fall on latent frames (4 video frames).
* **Channel RMS norm per position** (as Wan 2.1's VAE) instead of GroupNorm over T·H·W: it
  sees no other frame (causality holds) and no other pixel, so spatial tiles see the same
  statistics as the whole frame; tiling error only comes from the convs' receptive field.
  No attention, for the same reason.
* Latent statistics (``latent_shift``, ``latent_scale`` per channel) live in the config:
  ``encode`` returns ``(μ − shift) / scale``, what the diffusion model sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aiprod_core.errors import AiprodError
from aiprod_core.weights import PretrainedMixin
from aiprod_hwvae import haar
from aiprod_hwvae.config import TIME_LEVELS, HWVAEConfig  # noqa: F401 - HWVAEConfig re-exported (was defined here)
from aiprod_hwvae.tiling import tiled_2d


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
class Stream:
    """State of a block-wise (streaming) pass: ``first`` chunk flag and the causal conv caches."""

    def __init__(self) -> None:
        self.first = True
        self.cache: dict[nn.Module, torch.Tensor] = {}


def _first(stream: Stream | None) -> bool:
    return stream is None or stream.first


class RMSNorm3d(nn.Module):
    """RMS norm over channels at each (t, h, w), computed in float32, learnable gain."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(1, keepdim=True) + self.eps)
        return (y * self.weight.float().view(1, -1, 1, 1, 1)).to(x.dtype)


class CausalConv3d(nn.Module):
    """3D conv, zero "same" padding in space, causal in time (left pad = copies of frame 0).

    In a streaming pass the padding is replaced by the tail of the previous chunk's input
    (the causal cache), so chunked output equals the full pass.
    """

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int] = 3):
        super().__init__()
        kt, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.kt = kt
        self.conv = nn.Conv3d(cin, cout, (kt, kh, kw), padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        if self.kt == 1:
            return self.conv(x)
        if stream is not None and self in stream.cache:
            x = torch.cat((stream.cache[self], x), dim=2)
        else:
            x = torch.cat((x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1), x), dim=2)
        if stream is not None:
            stream.cache[self] = x[:, :, -(self.kt - 1):].detach()
        return self.conv(x)


class ResBlock(nn.Module):
    """norm → SiLU → causal conv ×2 with a skip; the second conv starts at zero (identity block)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = RMSNorm3d(cin), CausalConv3d(cin, cout)
        self.norm2, self.conv2 = RMSNorm3d(cout), CausalConv3d(cout, cout)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), stream)
        h = self.conv2(F.silu(self.norm2(h)), stream)
        return self.skip(x) + h


class Stage(nn.ModuleList):
    def __init__(self, cin: int, cout: int, n: int):
        super().__init__([ResBlock(cin if i == 0 else cout, cout) for i in range(n)])
        self.out_channels = cout if n else cin

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        for block in self:
            x = block(x, stream)
        return x


class HaarDown(nn.Module):
    """Orthonormal Haar split (space, optionally causal time) then a 1×1 projection."""

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.time = time
        self.proj = nn.Conv3d(cin * haar.bands(time), cout, 1)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        return self.proj(haar.dwt(x, self.time, _first(stream)))


class HaarUp(nn.Module):
    """A 1×1 projection to band coefficients then the inverse Haar (space, optionally time)."""

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.time = time
        self.proj = nn.Conv3d(cin, cout * haar.bands(time), 1)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        return haar.idwt(self.proj(x), self.time, _first(stream))


class Head(nn.Module):
    """norm → SiLU → causal conv to ``cout`` channels (wavelet coefficients or moments)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm, self.conv = RMSNorm3d(cin), CausalConv3d(cin, cout)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)), stream)


# --------------------------------------------------------------------------------------
# encoder / decoder
# --------------------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, in_ch: int, z_ch: int, widths: list[int], blocks: list[int], mid: int):
        super().__init__()
        w1, w2, w3 = widths
        n1, n2, n3 = (in_ch * haar.bands(t) for t in TIME_LEVELS)
        self.conv_in = CausalConv3d(n1, w1)
        self.stage1 = Stage(w1, w1, blocks[0])
        self.down1 = HaarDown(w1, w2, time=True)
        self.inject2 = nn.Conv3d(n2, w2, 1)
        self.stage2 = Stage(w2, w2, blocks[1])
        self.down2 = HaarDown(w2, w3, time=False)
        self.inject3 = nn.Conv3d(n3, w3, 1)
        self.stage3 = Stage(w3, w3, blocks[2] + mid)
        self.head = Head(w3, 2 * z_ch)
        self.shortcut = nn.Conv3d(n3, 2 * z_ch, 1)  # energy flow: coarsest coefficients → moments

    def forward(self, coeffs: list[torch.Tensor], stream: Stream | None = None) -> torch.Tensor:
        c1, c2, c3 = coeffs
        h = self.stage1(self.conv_in(c1, stream), stream)
        h = self.down1(h, stream) + self.inject2(c2)
        h = self.stage2(h, stream)
        h = self.down2(h, stream) + self.inject3(c3)
        h = self.stage3(h, stream)
        return self.head(h, stream) + self.shortcut(c3)


class Decoder(nn.Module):
    def __init__(self, out_ch: int, z_ch: int, widths: list[int], blocks: list[int], mid: int):
        super().__init__()
        w1, w2, w3 = widths
        self.out_ch = out_ch
        n1, n2, n3 = (out_ch * haar.bands(t) for t in TIME_LEVELS)
        self.conv_in = CausalConv3d(z_ch, w3)
        self.stage3 = Stage(w3, w3, mid + blocks[2])
        self.head3 = Head(w3, n3)
        self.shortcut = nn.Conv3d(z_ch, n3, 1)  # energy flow: latent → coarsest coefficients
        self.up2 = HaarUp(w3, w2, time=False)
        self.stage2 = Stage(w2, w2, blocks[1])
        self.head2 = Head(w2, n2)
        self.up1 = HaarUp(w2, w1, time=True)
        self.stage1 = Stage(w1, w1, blocks[0])
        self.head1 = Head(w1, n1)

    def forward(self, z: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        first, c = _first(stream), self.out_ch
        h = self.stage3(self.conv_in(z, stream), stream)
        w3 = self.head3(h, stream) + self.shortcut(z)
        low = haar.idwt(w3, TIME_LEVELS[2], first)  # low band of level 2
        h = self.stage2(self.up2(h, stream), stream)
        w2 = self.head2(h, stream)
        low = haar.idwt(torch.cat((w2[:, :c] + low, w2[:, c:]), 1), TIME_LEVELS[1], first)
        h = self.stage1(self.up1(h, stream), stream)
        w1 = self.head1(h, stream)
        return haar.idwt(torch.cat((w1[:, :c] + low, w1[:, c:]), 1), TIME_LEVELS[0], first)


# --------------------------------------------------------------------------------------
# the autoencoder
# --------------------------------------------------------------------------------------
class DiagonalGaussian:
    """Posterior ``N(μ, diag σ²)``; ``from_moments`` splits ``[μ, log σ²]`` on the channel axis."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean, self.logvar = mean, logvar

    @classmethod
    def from_moments(cls, moments: torch.Tensor, clamp: tuple[float, float] = (-30.0, 20.0)) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(*clamp))

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) averaged over every latent element (nats per element)."""
        m, lv = self.mean.float(), self.logvar.float()
        return 0.5 * (m.pow(2) + lv.exp() - 1.0 - lv).mean()


@dataclass
class HWVAEOutput:
    reconstruction: torch.Tensor  # [B, 3, T, H, W], not clamped (training target space)
    latent_mean: torch.Tensor  # [B, C, 1 + k, H/8, W/8], raw (not normalised)
    latent_logvar: torch.Tensor

    @property
    def posterior(self) -> DiagonalGaussian:
        return DiagonalGaussian(self.latent_mean, self.latent_logvar)


class HWVAE(PretrainedMixin, nn.Module):
    """Haar-wavelet causal video VAE; see the module docstring."""

    config_class = HWVAEConfig
    component_kind = "video-autoencoder"
    component_name = "hwvae"
    spatial_compression = 8
    temporal_compression = 4

    def __init__(
        self,
        *,
        in_channels: int = 3,
        latent_channels: int = 16,
        encoder_channels: list[int] = (128, 256, 512),
        decoder_channels: list[int] = (128, 256, 512),
        encoder_blocks: list[int] = (2, 2, 2),
        decoder_blocks: list[int] = (2, 2, 2),
        mid_blocks: int = 2,
        latent_shift: list[float] | None = None,
        latent_scale: list[float] | None = None,
        logvar_clamp: tuple[float, float] = (-30.0, 20.0),
    ):
        super().__init__()
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.latent_shift, self.latent_scale = latent_shift, latent_scale
        self.logvar_clamp = tuple(logvar_clamp)
        self.pyramid = haar.HaarPyramid(TIME_LEVELS)
        self.encoder = Encoder(in_channels, latent_channels, list(encoder_channels), list(encoder_blocks), mid_blocks)
        self.decoder = Decoder(in_channels, latent_channels, list(decoder_channels), list(decoder_blocks), mid_blocks)

    # -- checks ------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor, what: str = "video") -> None:
        if video.ndim != 5 or video.shape[1] != self.in_channels:
            raise AiprodError(f"HWVAE: {what} has shape {tuple(video.shape)}, expected [B, {self.in_channels}, T, H, W]")
        t, h, w = video.shape[2:]
        if (t - 1) % 4:
            raise AiprodError(f"HWVAE: {what} has T={t} frames, expected 1 + 4k (1, 5, 9, …, 97)")
        if h % 8 or w % 8:
            raise AiprodError(f"HWVAE: {what} is {h}×{w}, expected height and width multiples of 8")

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise AiprodError(
                f"HWVAE: latents have shape {tuple(z.shape)}, expected [B, {self.latent_channels}, T, H, W]"
            )

    def _stats(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.latent_channels
        shift = torch.tensor(self.latent_shift or [0.0] * c, device=ref.device, dtype=ref.dtype)
        scale = torch.tensor(self.latent_scale or [1.0] * c, device=ref.device, dtype=ref.dtype)
        return shift.view(1, c, 1, 1, 1), scale.view(1, c, 1, 1, 1)

    def normalize(self, mean: torch.Tensor) -> torch.Tensor:
        shift, scale = self._stats(mean)
        return (mean - shift) / scale

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        shift, scale = self._stats(z)
        return z * scale + shift

    # -- raw passes (one chunk, one tile) ----------------------------------------------
    def _moments(self, video: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        return self.encoder(self.pyramid(video, _first(stream)), stream)

    def _decode_raw(self, z: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        return self.decoder(z, stream)

    def _moments_blockwise(self, video: torch.Tensor, chunk: int | None) -> torch.Tensor:
        """Encode ``chunk`` latent frames at a time with the causal cache (None: one pass)."""
        if chunk is None:
            return self._moments(video)
        stream, outs, n = Stream(), [], 1 + (video.shape[2] - 1) // 4
        for j0 in range(0, n, chunk):
            j1 = min(n, j0 + chunk)
            outs.append(self._moments(video[:, :, _frame(j0):_frame(j1)], stream))
            stream.first = False
        return torch.cat(outs, dim=2)

    def _decode_blockwise(self, z: torch.Tensor, chunk: int | None) -> torch.Tensor:
        if chunk is None:
            return self._decode_raw(z)
        stream, out = Stream(), None
        for j0 in range(0, z.shape[2], chunk):
            y = self._decode_raw(z[:, :, j0:j0 + chunk], stream)
            if out is None:  # written in place: no second copy of the decoded video
                out = y.new_empty((*y.shape[:2], 1 + 4 * (z.shape[2] - 1), *y.shape[3:]))
            out[:, :, _frame(j0):_frame(j0) + y.shape[2]] = y
            stream.first = False
        return out

    # -- public API ----------------------------------------------------------------------
    def encode_posterior(
        self,
        video: torch.Tensor,
        *,
        chunk: int | None = None,
        tile: int | None = None,
        overlap: int = 64,
        blend: float = 0.5,
    ) -> DiagonalGaussian:
        """Raw posterior. ``chunk``: latent frames per temporal block (causal cache);
        ``tile``/``overlap``: spatial tile and overlap in pixels (multiples of 8), cross-faded over the
        central ``blend`` fraction of the overlap (see :mod:`aiprod_hwvae.tiling`)."""
        self._check_video(video)
        if tile is not None:
            _check_tile(tile, overlap, 8, "pixels")
            moments = tiled_2d(lambda x: self._moments_blockwise(x, chunk), video, tile, overlap, 8, True, blend)
        else:
            moments = self._moments_blockwise(video, chunk)
        return DiagonalGaussian.from_moments(moments, self.logvar_clamp)

    def encode(
        self,
        video: torch.Tensor,
        sample: bool = False,
        *,
        generator: torch.Generator | None = None,
        chunk: int | None = None,
        tile: int | None = None,
        overlap: int = 64,
        blend: float = 0.5,
    ) -> torch.Tensor:
        """``video [B, 3, 1 + 4k, H, W]`` in [-1, 1] → normalised latents ``[B, C, 1 + k, H/8, W/8]``."""
        post = self.encode_posterior(video, chunk=chunk, tile=tile, overlap=overlap, blend=blend)
        return self.normalize(post.sample(generator) if sample else post.mode())

    def decode(
        self,
        latents: torch.Tensor,
        *,
        chunk: int | None = None,
        tile: int | None = None,
        overlap: int = 16,
        blend: float = 0.5,
    ) -> torch.Tensor:
        """Normalised latents ``[B, C, 1 + k, h, w]`` → ``video [B, 3, 1 + 4k, 8h, 8w]`` in [-1, 1].

        ``chunk``: latent frames per temporal block; ``tile``/``overlap``: spatial tile and overlap in
        latent pixels. Memory then grows with the output only, not with T·H·W activations.
        Tiles equal the untiled pass when the unused tile edge ``(overlap − ramp)/2`` covers the
        decoder's receptive field (analytically ≈ 16 latent px for ``v1``, ≤ 6 for ``tiny``);
        the default (16, blend 0.5: 4 px) is a cross-faded approximation, cheaper by far.
        """
        self._check_latents(latents)
        z = self.denormalize(latents)
        if tile is not None:
            _check_tile(tile, overlap, 1, "latent pixels")
            video = tiled_2d(lambda x: self._decode_blockwise(x, chunk), z, tile, overlap, 8, False, blend)
        else:
            video = self._decode_blockwise(z, chunk)
        return video.clamp_(-1.0, 1.0)

    def forward(
        self, video: torch.Tensor, sample_posterior: bool = False, generator: torch.Generator | None = None
    ) -> HWVAEOutput:
        """Training pass: reconstruction (unclamped) and the raw posterior moments."""
        self._check_video(video)
        post = DiagonalGaussian.from_moments(self._moments(video), self.logvar_clamp)
        z = post.sample(generator) if sample_posterior else post.mode()
        return HWVAEOutput(self._decode_raw(z), post.mean, post.logvar)


def _frame(j: int) -> int:
    """Index of the first video frame of latent frame ``j`` (frame 0 alone, then groups of 4)."""
    return 0 if j == 0 else 4 * j - 3


def _check_tile(tile: int, overlap: int, multiple: int, unit: str) -> None:
    if tile % multiple or overlap % multiple or tile <= 0 or overlap < 0:
        raise AiprodError(f"HWVAE: tile={tile}, overlap={overlap} {unit}: expected positive multiples of {multiple}")
    if overlap >= tile:
        raise AiprodError(f"HWVAE: overlap={overlap} must be smaller than tile={tile} ({unit})")


__all__ = ["HWVAE", "HWVAEConfig", "HWVAEOutput", "DiagonalGaussian", "Stream"]
