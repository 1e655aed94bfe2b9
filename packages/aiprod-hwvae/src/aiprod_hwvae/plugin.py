"""aiprod hook implementations of HW-VAE (cheap to import: everything heavy is a string)."""

from __future__ import annotations

from aiprod_core import ComponentSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_hwvae.presets import PRESETS

    return [
        ComponentSpec(
            kind="video-autoencoder",
            name="hwvae",
            factory="aiprod_hwvae.model:HWVAE",
            config_model="aiprod_hwvae.config:HWVAEConfig",
            shapes="aiprod_hwvae.config:state_dict_shapes",
            presets=PRESETS,
            description="HW-VAE: Haar-wavelet causal video VAE, x8 space, x4 time, 16 latent channels",
        )
    ]


@hookimpl
def aiprod_register_recipes():
    return [
        RecipeSpec(
            name="hwvae",
            config_model="aiprod_hwvae.train:HWVAETrainConfig",
            run="aiprod_hwvae.train:train",
            description="train or fine-tune HW-VAE (L1 + VGG16 perceptual + spectral + KL, optional GAN)",
        )
    ]
