"""AIPROD-Upsampler: latent spatial upsampler ×2 and two-stage (upsample + refine) generation."""

from aiprod_upsampler.model import LatentUpsampler, LatentUpsamplerConfig
from aiprod_upsampler.two_stage import two_stage_refine

__all__ = ["LatentUpsampler", "LatentUpsamplerConfig", "two_stage_refine"]
