"""The torch-free config module: ``state_dict_shapes`` equals a meta build, for every preset and the demo weights."""

import json
from pathlib import Path

import pytest

from aiprod_core.shapes import assert_shapes_match
from aiprod_hwvae.config import HWVAEConfig, state_dict_shapes
from aiprod_hwvae.model import HWVAE
from aiprod_hwvae.presets import PRESETS

DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "hwvae" / "config.json"
CASES = {**{f"preset-{k}": v for k, v in PRESETS.items()},
         "uneven": {"in_channels": 1, "latent_channels": 4, "encoder_channels": [8, 8, 16], "decoder_channels": [16, 8, 8],
                    "encoder_blocks": [0, 1, 2], "decoder_blocks": [2, 0, 1], "mid_blocks": 0}}
if DEMO.exists():
    CASES["demo"] = {k: v for k, v in json.loads(DEMO.read_text()).items() if k != "_aiprod"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_equal_the_built_model(name):
    assert_shapes_match(state_dict_shapes, HWVAE, HWVAEConfig(**CASES[name]))


def test_model_module_reexports_the_config():
    from aiprod_hwvae import model

    assert model.HWVAEConfig is HWVAEConfig
