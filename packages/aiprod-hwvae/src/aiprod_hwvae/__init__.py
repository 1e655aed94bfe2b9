"""AIPROD-HWVAE: the Haar-wavelet causal video autoencoder (kind ``video-autoencoder``, name ``hwvae``)."""

from aiprod_hwvae.model import HWVAE, HWVAEConfig, HWVAEOutput

__all__ = ["HWVAE", "HWVAEConfig", "HWVAEOutput"]
