"""Every shipped YAML validates against its installed pipeline or recipe, without loading a weight,
and every training config starts with the command that runs it."""

from pathlib import Path

import pytest

from aiprod_core.pipeline import load_document

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted([*ROOT.glob("configs/train/**/*.yaml"), *ROOT.glob("examples/*.yaml")])


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_yaml_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    what, spec, cfg = load_document(path)
    assert what in ("pipeline", "recipe")


@pytest.mark.parametrize("path", [p for p in YAMLS if "configs" in p.parts], ids=lambda p: p.name)
def test_training_config_says_how_to_run_it(path):
    head = path.read_text().lstrip().splitlines()[0]
    assert head.startswith("#") and "aiprod train" in head, f"{path.name}: first line should show `aiprod train ...`"


def test_card_config_names_exist():
    for name in ("full_finetune", "lora_phase1", "vae_finetune", "audio_vae", "tts_training"):
        assert (ROOT / "configs" / "train" / f"{name}.yaml").is_file(), name
