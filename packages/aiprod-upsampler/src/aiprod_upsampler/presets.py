"""Named sizes of the latent upsampler (keyword arguments of ``LatentUpsampler``).

* ``tiny``: CI/debug flavour, ~0.18M parameters, trains in seconds on a CPU.
* ``v1``: AIPROD-Upsampler v1 of the model card, ~151M parameters (card: ~150M):
  10 residual blocks of 512 channels with 3×3×3 convs, 6 at the input resolution (4×
  cheaper) and 4 after the sub-pixel upsample, where the new detail is synthesised.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "tiny": {
        "latent_channels": 16,
        "mid_channels": 32,
        "blocks_before": 1,
        "blocks_after": 1,
        "temporal_kernel": 3,
    },
    "v1": {
        "latent_channels": 16,
        "mid_channels": 512,
        "blocks_before": 6,
        "blocks_after": 4,
        "temporal_kernel": 3,
    },
}
