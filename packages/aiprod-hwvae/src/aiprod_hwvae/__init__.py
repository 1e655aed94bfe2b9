"""AIPROD-HWVAE: the Haar-wavelet causal video autoencoder (kind ``video-autoencoder``, name ``hwvae``)."""

# Lazy (PEP 562): importing the package -- as the plugin registry does to locate its modules -- must not
# import torch, so that ``aiprod --help`` and ``aiprod plugins`` start fast.
_LAZY = {
    "HWVAE": "aiprod_hwvae.model",
    "HWVAEConfig": "aiprod_hwvae.config",
    "HWVAEOutput": "aiprod_hwvae.model",
}

__all__ = ["HWVAE", "HWVAEConfig", "HWVAEOutput"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
