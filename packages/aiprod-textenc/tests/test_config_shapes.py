"""The torch-free config module: ``state_dict_shapes`` equals a meta build, for every preset and the demo weights."""

import json
from pathlib import Path

import pytest

from aiprod_core.shapes import assert_shapes_match
from aiprod_textenc.config import GEMMA3_SHAPE_DEFAULTS, REQUIRED, Gemma3LoraConfig, state_dict_shapes
from aiprod_textenc.model import Gemma3LoraTextEncoder
from aiprod_textenc.presets import GEMMA3_TINY, PRESETS

DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "text_encoder" / "config.json"
CASES = {**{f"preset-{k}": v for k, v in PRESETS.items()},
         "subset": {**PRESETS["tiny"], "lora_targets": ["q_proj", "down_proj"], "hidden_layers": [0, -1],
                    "connector_layers": 0, "base_config": {**GEMMA3_TINY, "attention_bias": True}},
         "defaults": {"lora_rank": 2, "connector_layers": 0, "connector_heads": 2, "out_dim": 8}}
if DEMO.exists():
    CASES["demo"] = {k: v for k, v in json.loads(DEMO.read_text()).items() if k != "_aiprod"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_equal_the_built_model(name):
    assert_shapes_match(state_dict_shapes, Gemma3LoraTextEncoder, Gemma3LoraConfig(**CASES[name]))


def test_what_it_cannot_describe_is_left_to_a_build():
    tiny = PRESETS["tiny"]
    for cfg in ({**tiny, "base_path": "/some/gemma"}, {**tiny, "lora_targets": ["embed_tokens"]},
                {**tiny, "base_config": {**GEMMA3_TINY, "num_experts": 4}},
                {**tiny, "base_config": {**GEMMA3_TINY, "hidden_size": 0}}):
        assert state_dict_shapes(Gemma3LoraConfig(**cfg)) is None


def test_constants_follow_transformers_and_the_base_module():
    from transformers import Gemma3TextConfig

    from aiprod_textenc import base, model

    defaults = Gemma3TextConfig()
    assert {k: getattr(defaults, k) for k in GEMMA3_SHAPE_DEFAULTS} == GEMMA3_SHAPE_DEFAULTS
    assert REQUIRED == base.REQUIRED
    assert model.Gemma3LoraConfig is Gemma3LoraConfig


@pytest.mark.parametrize("change", [{"connector_heads": 3}, {"hidden_layers": [5]}])
def test_refuses_what_the_constructor_refuses_with_its_message(change):
    from aiprod_core.errors import AiprodError
    from aiprod_core.weights import meta_device

    cfg = Gemma3LoraConfig(**{**PRESETS["tiny"], **change})
    with pytest.raises(AiprodError) as ours:
        state_dict_shapes(cfg)
    with meta_device(), pytest.raises(AiprodError) as built:
        Gemma3LoraTextEncoder(**cfg.model_dump())
    assert str(ours.value) == str(built.value)
