from pathlib import Path

import pytest
import torch
import yaml

from aiprod_shdt.train import SHDTTrainConfig

TINY = Path(__file__).resolve().parents[3] / "configs" / "train" / "tiny" / "shdt.yaml"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the CI box is shared: one intra-op thread is faster than two contended ones for tiny models
    torch.set_num_threads(1)


def _tiny_config(tmp_path: Path, **over) -> SHDTTrainConfig:
    """configs/train/tiny/shdt.yaml with output under ``tmp_path`` and top-level sections overridden
    (dicts are merged one level deep); max_steps follows the curriculum."""
    data = yaml.safe_load(TINY.read_text())
    data.pop("recipe")
    data["train"]["output_dir"] = str(tmp_path / "run")
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    data["train"]["max_steps"] = sum(s["steps"] for s in data["curriculum"])
    return SHDTTrainConfig.model_validate(data)


@pytest.fixture
def tiny_config():
    return _tiny_config
