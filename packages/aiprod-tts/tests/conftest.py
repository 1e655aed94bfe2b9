"""Shared fixtures: one small espeak-ng corpus per session, features cached once."""

from __future__ import annotations

import shutil

import pytest

from aiprod_tts.presets import PRESETS
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("system package espeak-ng not installed")
    from aiprod_tts.corpus import make_corpus

    return make_corpus(tmp_path_factory.mktemp("tts") / "corpus", n=8, seed=0, short=True)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tts-features")


@pytest.fixture
def tiny():
    import torch

    torch.manual_seed(0)
    return FastSpeech2HiFiGAN(**PRESETS["tiny"]).eval()
