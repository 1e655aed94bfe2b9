"""The torch-free config module: ``state_dict_shapes`` equals a meta build, for every preset and the demo weights."""

import json
from pathlib import Path

import pytest

from aiprod_audio.config import NACConfig, state_dict_shapes
from aiprod_audio.model import NACCodec
from aiprod_audio.presets import PRESETS
from aiprod_core.shapes import assert_shapes_match

DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "audio_codec" / "config.json"
CASES = {**{f"preset-{k}": v for k, v in PRESETS.items()},
         "depthwise-no-lstm": {"strides": [2, 3], "encoder_dim": 4, "decoder_dim": 16, "latent_dim": 8, "lstm_layers": 0,
                               "dilations": [1, 2], "kernel_size": 5, "depthwise_residual": True, "num_codebooks": 2,
                               "codebook_size": 16, "codebook_dim": 4}}
if DEMO.exists():
    CASES["demo"] = {k: v for k, v in json.loads(DEMO.read_text()).items() if k != "_aiprod"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_equal_the_built_model(name):
    assert_shapes_match(state_dict_shapes, NACCodec, NACConfig(**CASES[name]))


def test_model_module_reexports_the_config():
    from aiprod_audio import model

    assert model.NACConfig is NACConfig
