"""Shared fixtures: a few seconds of speech synthesised offline with espeak-ng (or a synthetic
voiced signal where espeak-ng is missing), written at 22.05 kHz so resampling is exercised."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SENTENCES = [
    "The quick brown fox jumps over the lazy dog. A neural codec learns to compress speech.",
    "Residual vector quantization keeps eight codebooks of one thousand and twenty four entries.",
]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the CI box is shared: one intra-op thread is faster than two contended ones
    torch.set_num_threads(1)


def _synthetic_voice(seconds: float, sr: int, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.1 * np.sin(2 * math.pi * 0.7 * t))
    phase = 2 * math.pi * np.cumsum(pitch) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * math.pi * 3 * t)) * (rng.random() * 0.5 + 0.5)
    return (0.2 * voice * envelope + 0.003 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("speech")
    espeak = shutil.which("espeak-ng")
    for i, text in enumerate(SENTENCES):
        path = root / f"utt{i}.wav"
        if espeak:
            subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True)
        else:
            sf.write(str(path), _synthetic_voice(5.0, 22050, 110 + 40 * i, i), 22050)
    return root
