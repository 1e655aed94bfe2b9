"""AIPROD-SHDT: the Sovereign Hybrid Diffusion Transformer video denoiser, its rectified-flow
sampler and its training recipe (LoRA phase 1, full fine-tune phase 2)."""

__version__ = "0.1.0"
