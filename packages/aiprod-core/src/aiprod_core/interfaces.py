"""Component interfaces. Every component of a kind satisfies its Protocol.

Conventions across the stack:
- video is ``[B, 3, T, H, W]`` float in [-1, 1]; ``T = 1 + 4k`` (the first frame is coded alone);
- latents are ``[B, C, T', H', W']`` *normalised* with the autoencoder's stored statistics;
- audio is mono, ``[B, 1, N]`` float in [-1, 1] at ``sample_rate`` (24 kHz across the stack);
- the diffusion time is ``sigma`` in [0, 1] (rectified flow: ``x_t = (1 - sigma) x_0 + sigma * noise``).
Tensors come back on the module's device; dtype follows the module unless stated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class TextEncoder(Protocol):
    """kind ``text-encoder``: prompts to the denoiser's text space."""

    out_dim: int

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(embeddings [B, L, out_dim] float, mask [B, L] bool)``; mask is True on real tokens."""
        ...


@runtime_checkable
class VideoDenoiser(Protocol):
    """kind ``video-denoiser``: predicts the rectified-flow velocity ``noise - x_0``."""

    in_channels: int
    text_dim: int
    patch_size: int

    def forward(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``latents [B, C, T, H, W]``, ``sigma [B]`` in [0, 1], ``text [B, L, text_dim]``,
        ``text_mask [B, L]`` bool → velocity ``[B, C, T, H, W]``. H and W are multiples of ``patch_size``."""
        ...


@runtime_checkable
class VideoAutoencoder(Protocol):
    """kind ``video-autoencoder``: pixels ↔ normalised latents."""

    latent_channels: int
    spatial_compression: int
    temporal_compression: int

    def encode(self, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """``video [B, 3, 1 + 4k, H, W]`` in [-1, 1] → ``latents [B, C, 1 + k, H / 8, W / 8]``, normalised."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``latents [B, C, 1 + k, h, w]`` → ``video [B, 3, 1 + 4k, 8h, 8w]`` in [-1, 1]."""
        ...


@runtime_checkable
class LatentUpsampler(Protocol):
    """kind ``latent-upsampler``: ``[B, C, T, H, W]`` → ``[B, C, T, 2H, 2W]``, normalised latents in and out."""

    def forward(self, latents: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AudioCodec(Protocol):
    """kind ``audio-codec``: waveform ↔ discrete codes ``[B, Q, F]`` at ``frame_rate`` Hz."""

    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """``wav [B, 1, N]`` float in [-1, 1] → ``codes [B, Q, F]`` int64 (Q ≤ num_codebooks sets the bitrate)."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, Q, F]`` → ``wav [B, 1, N']`` float in [-1, 1]."""
        ...

    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents ``[B, D, F]``."""
        ...


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """kind ``speech-synthesizer``: text → mono waveform at ``sample_rate``."""

    sample_rate: int

    def synthesize(
        self,
        text: str,
        *,
        speed: float = 1.0,
        pitch_shift: float = 0.0,
        pitch_scale: float = 1.0,
        energy_scale: float = 1.0,
    ) -> torch.Tensor:
        """Return ``wav [N]`` float32 in [-1, 1] on the CPU. ``speed`` 2 halves the duration;
        ``pitch_shift`` is in semitones."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """kind ``sampler``: integrates a velocity model from noise (``sigma = 1``) to data (``sigma = 0``)."""

    def sigmas(self, steps: int, num_tokens: int) -> torch.Tensor:
        """Decreasing ``[steps + 1]`` schedule from 1 to 0 (shifted for ``num_tokens``)."""
        ...

    def sample(self, velocity_fn: Any, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """``velocity_fn(x, sigma [B]) -> v``; returns ``x_0`` with the shape of ``noise``."""
        ...


@runtime_checkable
class Quantizer(Protocol):
    """kind ``quantizer``: turns a component folder into a lower-precision one and loads it back."""

    name: str

    def quantize_folder(self, src: Path, dst: Path, *, weights: str = "fp8", exclude: list[str] | None = None) -> Path:
        """Quantize the Linear weights of the component in ``src`` into a new folder ``dst``."""
        ...

    def load(self, folder: Path, *, device: torch.device | None = None) -> torch.nn.Module:
        """Build the component on the meta device and load its quantized weights."""
        ...


PROTOCOLS: dict[str, type] = {
    "text-encoder": TextEncoder,
    "video-denoiser": VideoDenoiser,
    "video-autoencoder": VideoAutoencoder,
    "latent-upsampler": LatentUpsampler,
    "audio-codec": AudioCodec,
    "speech-synthesizer": SpeechSynthesizer,
    "sampler": Sampler,
    "quantizer": Quantizer,
}
