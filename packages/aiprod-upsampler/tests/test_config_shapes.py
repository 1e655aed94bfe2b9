"""The torch-free config module: ``state_dict_shapes`` equals a meta build, for every preset and the demo weights."""

import json
from pathlib import Path

import pytest

from aiprod_core.shapes import assert_shapes_match
from aiprod_upsampler.config import LatentUpsamplerConfig, state_dict_shapes
from aiprod_upsampler.model import LatentUpsampler
from aiprod_upsampler.presets import PRESETS

DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "upsampler" / "config.json"
CASES = {**{f"preset-{k}": v for k, v in PRESETS.items()},
         "2d-no-blocks": {"mid_channels": 8, "blocks_before": 0, "blocks_after": 2, "temporal_kernel": 1, "base": "none"}}
if DEMO.exists():
    CASES["demo"] = {k: v for k, v in json.loads(DEMO.read_text()).items() if k != "_aiprod"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_equal_the_built_model(name):
    assert_shapes_match(state_dict_shapes, LatentUpsampler, LatentUpsamplerConfig(**CASES[name]))


def test_model_module_reexports_the_config():
    from aiprod_upsampler import model

    assert model.LatentUpsamplerConfig is LatentUpsamplerConfig
