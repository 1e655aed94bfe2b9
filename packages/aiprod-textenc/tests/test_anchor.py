"""The recipe's target is anchored: the teacher reads the caption through the projection as the run
started, so training the student cannot move its own target (the old target, read through the current
projection, could, and collapsed the token embeddings of the demo encoder)."""

from pathlib import Path

import torch

from aiprod_core.config import load_yaml, validate
from aiprod_core.training import StepContext, Trainer
from aiprod_textenc.train import TextEncoderTask, TextEncoderTrainConfig

ROOT = Path(__file__).resolve().parents[3]


def _config(tmp_path, steps: int) -> TextEncoderTrainConfig:
    data = load_yaml(ROOT / "configs/train/tiny/text_encoder.yaml")
    data.pop("recipe")
    data["train"].update({"output_dir": str(tmp_path / "run"), "max_steps": steps, "lr": 1e-2, "log_every": 1,
                          "eval_every": None, "checkpoint_every": 1000})
    return validate(TextEncoderTrainConfig, data, source="tiny")


def _teacher_and_head(task: TextEncoderTask, tokens: dict[str, torch.Tensor]):
    model = task.model
    ctx = StepContext.__new__(StepContext)  # the teacher needs modules / raw / autocast only
    ctx.modules = ctx.raw = {"model": model}
    ctx.autocast = lambda: torch.autocast("cpu", enabled=False)
    with torch.no_grad():
        target = task.teacher(ctx, tokens["caption_ids"], tokens["caption_mask"])
        current = model(tokens["caption_ids"], tokens["caption_mask"])[0]
    return target, current


def test_target_does_not_move_while_the_projection_trains(tmp_path):
    cfg = _config(tmp_path, steps=8)
    task = TextEncoderTask(cfg)
    tokens = task._tokens(task.eval_pairs[:4])
    before, _ = _teacher_and_head(task, tokens)
    Trainer(cfg.train, task).fit()
    after, current = _teacher_and_head(task, tokens)
    torch.testing.assert_close(after, before)  # the anchor: frozen
    assert (current - before).abs().max() > 1e-3  # while the trained projection did move
