"""The torch-free config module: ``state_dict_shapes`` equals a meta build, for every preset and the demo weights."""

import json
from pathlib import Path

import pytest

from aiprod_core.shapes import assert_shapes_match
from aiprod_shdt.config import SHDTConfig, state_dict_shapes
from aiprod_shdt.model import SHDT
from aiprod_shdt.presets import PRESETS

DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "shdt" / "config.json"
CASES = {**{f"preset-{k}": v for k, v in PRESETS.items()},
         "guidance-no-single": {"in_channels": 4, "patch_size": 1, "hidden_size": 24, "num_heads": 2, "depth_double": 1,
                                "depth_single": 0, "mlp_ratio": 2.5, "text_dim": 8, "rope_axes_dim": (4, 4, 4),
                                "guidance_embed": True},
         "out-conv": {**PRESETS["tiny"], "out_conv": 8}}
if DEMO.exists():
    CASES["demo"] = {k: v for k, v in json.loads(DEMO.read_text()).items() if k != "_aiprod"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_equal_the_built_model(name):
    assert_shapes_match(state_dict_shapes, SHDT, SHDTConfig(**CASES[name]))


def test_model_module_reexports_the_config():
    from aiprod_shdt import model

    assert model.SHDTConfig is SHDTConfig
