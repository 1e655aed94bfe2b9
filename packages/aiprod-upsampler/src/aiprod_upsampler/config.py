"""Config of the latent upsampler, without torch: what ``aiprod validate`` reads (the model is in
:mod:`aiprod_upsampler.model`), and :func:`state_dict_shapes`, what that config builds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiprod_core.config import StrictModel
from aiprod_core.shapes import Shapes


class LatentUpsamplerConfig(StrictModel):
    """Every constructor argument of :class:`LatentUpsampler` (saved as ``config.json``)."""

    latent_channels: int = Field(16, ge=1, description="channels of the autoencoder latents (HW-VAE: 16)")
    mid_channels: int = Field(512, ge=8, description="width of the residual trunk")
    blocks_before: int = Field(6, ge=0, description="residual blocks at the input (low) resolution")
    blocks_after: int = Field(4, ge=0, description="residual blocks at the output (high) resolution")
    temporal_kernel: int = Field(3, ge=1, description="temporal kernel of the block convs; 1 = per-frame 2D convs")
    base: Literal["bilinear", "nearest", "none"] = Field(
        "bilinear", description="fixed upsampling the network corrects; 'none' = predict the latent outright"
    )
    norm_eps: float = Field(1e-6, gt=0, description="epsilon of the channel RMS norms")



def state_dict_shapes(cfg: LatentUpsamplerConfig) -> Shapes:
    """State-dict key -> shape of ``LatentUpsampler(**cfg.model_dump())`` (no torch)."""
    s, c, m = Shapes(), cfg.latent_channels, cfg.mid_channels
    kernel = (cfg.temporal_kernel, 3, 3)
    s.conv("conv_in", c, m, kernel)
    for name, n in (("blocks_before", cfg.blocks_before), ("blocks_after", cfg.blocks_after)):
        for i in range(n):
            s.param(f"{name}.{i}.norm1.weight", m).conv(f"{name}.{i}.conv1", m, m, kernel)
            s.param(f"{name}.{i}.norm2.weight", m).conv(f"{name}.{i}.conv2", m, m, kernel)
    s.conv("upsample.conv", m, 4 * m, (1, 3, 3))
    s.param("norm_out.weight", m).conv("conv_out", m, c, kernel)
    return s
