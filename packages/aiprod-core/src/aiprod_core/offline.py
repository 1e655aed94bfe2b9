"""The offline guarantee: the core opens no connection and tells the HF libraries not to."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def enforce_offline() -> None:
    """Set the Hugging Face offline switches for every library we drive (before they are imported)."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
