#!/usr/bin/env python
"""Encode prepared clips (captions.jsonl + mp4) into SHDT training shards: HW-VAE latents + caption embeddings.

    torchrun --nproc-per-node 8 tools/cache_latents.py data/prepared runs/shdt_cache \
        --autoencoder weights/tiny/hwvae --text-encoder weights/tiny/text_encoder --batch-size 8

Same as `aiprod data cache`. Each rank encodes its share into its own WebDataset shards; a rerun resumes.
See aiprod_pipelines.latent_cache for the layout.
"""

from aiprod_pipelines.latent_cache import main

if __name__ == "__main__":
    main()
