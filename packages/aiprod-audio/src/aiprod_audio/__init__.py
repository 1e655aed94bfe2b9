"""AIPROD Audio-VAE v1: the ``nac-rvq`` neural audio codec (24 kHz, 75 Hz, RVQ 8 x 1024)."""

__version__ = "0.1.0"
