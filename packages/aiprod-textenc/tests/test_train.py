"""The recipe: shipped YAMLs validate, the tiny config trains through `aiprod train`, a killed run
resumes exactly."""

import json
from pathlib import Path

import pytest
import torch

from aiprod_core.config import load_yaml, validate
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.training import Trainer
from aiprod_textenc.data import read_pairs, synthetic_pairs, write_pairs
from aiprod_textenc.train import LossSection, TextEncoderTask, TextEncoderTrainConfig, alignment_loss

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = [ROOT / "configs/train/text_encoder.yaml", ROOT / "configs/train/tiny/text_encoder.yaml"]


def tiny_config(tmp_path, **train) -> TextEncoderTrainConfig:
    data = load_yaml(CONFIGS[1])
    assert data.pop("recipe") == "text-encoder"
    data["train"].update({"output_dir": str(tmp_path / "run"), **train})
    return validate(TextEncoderTrainConfig, data, source="tiny")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    data = load_yaml(path)
    assert path.read_text().startswith(f"# aiprod train configs/train/{path.relative_to(ROOT / 'configs/train')}")
    assert data.pop("recipe") == "text-encoder"
    validate(TextEncoderTrainConfig, data, source=str(path))


def test_config_errors_name_the_key(tmp_path):
    data = load_yaml(CONFIGS[1])
    data.pop("recipe")
    data["loss"]["tokens"] = 1.0
    data["train"]["batch_size"] = 1
    with pytest.raises(ConfigError) as exc:
        validate(TextEncoderTrainConfig, data, source="x.yaml")
    assert "loss.tokens: unknown key" in str(exc.value)


def test_jsonl_errors_name_the_line(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", synthetic_pairs(3))
    assert len(read_pairs(path)) == 3
    path.write_text(path.read_text() + '{"prompt": "x"}\n')
    with pytest.raises(AiprodError, match=r"p.jsonl:4: expected non-empty string fields 'prompt' and 'caption'"):
        read_pairs(path)


def test_loss_is_zero_on_identical_inputs_and_contrastive_prefers_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    loss, parts = alignment_loss(x, mask, x, mask, LossSection(contrastive=0.0))
    assert loss.abs().item() < 1e-6
    w = LossSection(pooled_cosine=0, pooled_mse=0, token=0, contrastive=1.0)
    matched, _ = alignment_loss(x, mask, x, mask, w)
    shuffled, _ = alignment_loss(x, mask, x[[1, 2, 0]], mask, w)
    assert matched < shuffled


def test_cli_trains_tiny_config(tmp_path):
    from aiprod_core.pipeline import run_document

    out = tmp_path / "cli"
    metrics = run_document(CONFIGS[1], [f"train.output_dir={out}", "train.max_steps=6", "train.log_every=3"],
                           expect="recipe", quiet=True)
    assert metrics["step"] == 6
    assert (out / "final" / "model" / "config.json").is_file() and (out / "metrics.jsonl").is_file()


def test_resume_equals_uninterrupted(tmp_path):
    whole = tiny_config(tmp_path / "a", max_steps=12, checkpoint_every=4, log_every=1, eval_every=None)
    Trainer(whole.train, task_a := TextEncoderTask(whole)).fit()
    cut = tiny_config(tmp_path / "b", max_steps=12, checkpoint_every=4, log_every=1, eval_every=None)
    assert Trainer(cut.train, TextEncoderTask(cut)).fit(stop_after=6)["stopped"]
    resumed = Trainer(cut.train, task_b := TextEncoderTask(cut))
    resumed.fit()
    assert resumed.history[0]["step"] == 5  # restarted from the step-4 checkpoint
    a, b = task_a.model.state_dict(), task_b.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = lambda root: [  # noqa: E731
        (r["step"], r["loss"]) for r in map(json.loads, (root / "run" / "metrics.jsonl").read_text().splitlines())
        if "loss" in r]
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 12
