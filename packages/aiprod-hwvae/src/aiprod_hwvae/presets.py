"""Named sizes of HW-VAE (keyword arguments of :class:`aiprod_hwvae.model.HWVAE`).

* ``tiny``: CI/demo flavour (~0.2M parameters); overfits a few clips on a CPU in seconds.
* ``v1``: AIPROD-HWVAE v1 of the model card, ~152M parameters (card: ~150M), counted on the
  meta device: encoder 66.8M (widths 128/256/512 at H/2, H/4, H/8, two residual blocks per
  stage + two mid blocks), decoder 85.5M (same widths, three blocks per stage + two mid
  blocks: the decoder synthesises detail and gets the larger share, as in LTX-Video and Wan).
  Latent: 16 channels, ×8 space, ×4 time (compression 48 on RGB values).
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "tiny": {
        "latent_channels": 16,
        "encoder_channels": [16, 32, 48],
        "decoder_channels": [16, 32, 48],
        "encoder_blocks": [1, 1, 1],
        "decoder_blocks": [1, 1, 1],
        "mid_blocks": 0,
    },
    "v1": {
        "latent_channels": 16,
        "encoder_channels": [128, 256, 512],
        "decoder_channels": [128, 256, 512],
        "encoder_blocks": [2, 2, 2],
        "decoder_blocks": [3, 3, 3],
        "mid_blocks": 2,
    },
}
