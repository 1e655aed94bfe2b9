"""AIPROD-Upsampler: latent spatial upsampler ×2 and two-stage (upsample + refine) generation."""

# Lazy (PEP 562): importing the package -- as the plugin registry does to locate its modules -- must not
# import torch, so that ``aiprod --help`` and ``aiprod plugins`` start fast.
_LAZY = {
    "LatentUpsampler": "aiprod_upsampler.model",
    "LatentUpsamplerConfig": "aiprod_upsampler.config",
    "two_stage_refine": "aiprod_upsampler.two_stage",
}

__all__ = ["LatentUpsampler", "LatentUpsamplerConfig", "two_stage_refine"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
