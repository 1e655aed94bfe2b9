#!/usr/bin/env python
"""Encode a captioned video corpus split into SHDT training clips (HW-VAE latents + caption embeddings).

    python tools/cache_latents.py data/video_corpus/train runs/demo/shdt_cache \
        --autoencoder weights/tiny/hwvae --text-encoder weights/tiny/text_encoder --size 64

See aiprod_pipelines.latent_cache for the layout.
"""

from aiprod_pipelines.latent_cache import main

if __name__ == "__main__":
    main()
