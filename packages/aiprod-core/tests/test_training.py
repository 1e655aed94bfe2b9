"""The shared trainer: loss falls, a killed run resumes exactly, checkpoints are atomic, torchrun works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from aiprod_core.training import TrainConfig, Trainer, TrainTask

HERE = Path(__file__).parent


class RegressionTask(TrainTask):
    def __init__(self, ema=False):
        torch.manual_seed(0)
        from toy import Toy

        self.model = Toy(dim=8, depth=2)
        self.drop = nn.Dropout(0.2)  # exercises the RNG state on resume

    def modules(self):
        return {"model": self.model}

    def make_batch(self, step, generator):
        x = torch.randn(16, 8, generator=generator)
        return {"x": x, "y": x[:, :1] * 2 - x[:, 1:2]}

    def train_step(self, batch, ctx):
        with ctx.autocast():
            pred = ctx.modules["model"](self.drop(batch["x"]))
        loss = (pred.float() - batch["y"]).pow(2).mean()
        ctx.backward_step("model", loss)
        return {"loss": loss.item()}

    def evaluate(self, ctx):
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(99))
        return {"mse": (ctx.raw["model"](x) - (x[:, :1] * 2 - x[:, 1:2])).pow(2).mean().item()}


def cfg(tmp_path, name, **kw):
    base = dict(output_dir=str(tmp_path / name), max_steps=40, lr=3e-2, checkpoint_every=10, log_every=1,
                progress=False, warmup_steps=5, lr_schedule="cosine", ema_decay=0.9)
    return TrainConfig(**{**base, **kw})


def test_loss_falls_and_outputs_are_written(tmp_path):
    tr = Trainer(cfg(tmp_path, "a"), RegressionTask())
    out = tr.fit()
    first = sum(r["loss"] for r in tr.history[:5]) / 5
    last = sum(r["loss"] for r in tr.history[-5:]) / 5
    assert last < first / 4, (first, last)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 1 and "lr" in lines[0] and "eval/mse" in out
    from toy import Toy

    exported = Toy.from_pretrained(tmp_path / "a" / "final" / "model")  # EMA weights, verified
    assert exported.config.dim == 8


def test_killed_run_resumes_exactly(tmp_path):
    full = Trainer(cfg(tmp_path, "full"), RegressionTask())
    full.fit()
    Trainer(cfg(tmp_path, "killed"), RegressionTask()).fit(stop_after=27)  # dies between checkpoints
    resumed = Trainer(cfg(tmp_path, "killed"), RegressionTask())
    resumed.fit()
    a, b = full.ctx.raw["model"].state_dict(), resumed.ctx.raw["model"].state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(full.emas["model"].shadow[0], resumed.emas["model"].shadow[0])
    la = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda ls: [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in ls]  # noqa: E731
    assert strip(la) == strip(lb)


def test_stop_at_then_extend_is_one_reproducible_run(tmp_path):
    """train.stop_at: trained to 20 of 30 scheduled steps, then extended to 40 — twice, bit-identically."""
    finals = []
    for name in ("x", "y"):
        first = Trainer(cfg(tmp_path, name, max_steps=30, stop_at=20, checkpoint_every=7), RegressionTask()).fit()
        assert first["stopped"] and first["step"] == 20 and not (tmp_path / name / "final").exists()
        assert (tmp_path / name / "checkpoints" / "step-00000020.pt").is_file()  # written although 20 % 7 != 0
        tr = Trainer(cfg(tmp_path, name, max_steps=40, checkpoint_every=7), RegressionTask())
        tr.fit()
        assert (tmp_path / name / "final" / "model").is_dir() and tr.history[0]["step"] == 21
        finals.append(tr.ctx.raw["model"].state_dict())
    straight = Trainer(cfg(tmp_path, "z", max_steps=40, checkpoint_every=7), RegressionTask())
    straight.fit()
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k
    # the LR schedule changed at step 20 (cosine over 30, then over 40): not the straight 40-step run
    assert any(not torch.equal(finals[0][k], v) for k, v in straight.ctx.raw["model"].state_dict().items())


def test_sharded_checkpoints_resume_exactly(tmp_path):
    full = Trainer(cfg(tmp_path, "sfull", checkpoint_format="sharded"), RegressionTask())
    full.fit()
    Trainer(cfg(tmp_path, "skill", checkpoint_format="sharded"), RegressionTask()).fit(stop_after=27)
    names = sorted(p.name for p in (tmp_path / "skill" / "checkpoints").iterdir())
    assert names == ["step-00000010.dcp", "step-00000020.dcp"]
    resumed = Trainer(cfg(tmp_path, "skill", checkpoint_format="sharded"), RegressionTask())
    resumed.fit()
    for k, v in full.ctx.raw["model"].state_dict().items():
        assert torch.equal(v, resumed.ctx.raw["model"].state_dict()[k]), k
    assert torch.equal(full.emas["model"].shadow[0], resumed.emas["model"].shadow[0])


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    tr = Trainer(cfg(tmp_path, "c", keep_checkpoints=2), RegressionTask())
    tr.fit()
    names = sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir())
    assert names == ["step-00000030.pt", "step-00000040.pt"]

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        tr.save_checkpoint(41)
    assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir()) == names  # no partial file


def test_bf16_autocast_runs(tmp_path):
    out = Trainer(cfg(tmp_path, "bf", mixed_precision="bf16", max_steps=5), RegressionTask()).fit()
    assert out["step"] == 5


class MetaInitTask(RegressionTask):
    """Builds the model on the meta device; rank 0 supplies the weights (as a 19B run would)."""

    def __init__(self):
        super().__init__()
        self.reference = self.model.state_dict()
        from toy import Toy

        with torch.device("meta"):
            self.model = Toy(dim=8, depth=2)

    def init_weights(self, name, module, ctx):
        from aiprod_core.training import load_full_state_dict

        load_full_state_dict(module, self.reference if ctx.rank == 0 else None)


def test_meta_built_modules_are_materialised_by_the_task(tmp_path):
    plain = Trainer(cfg(tmp_path, "plain", max_steps=10), RegressionTask())
    plain.fit()
    meta = Trainer(cfg(tmp_path, "meta", max_steps=10), MetaInitTask())
    meta.fit()
    for k, v in plain.ctx.raw["model"].state_dict().items():
        assert torch.equal(v, meta.ctx.raw["model"].state_dict()[k]), k


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2", "fsdp2-meta", "fsdp2-sharded"])
def test_torchrun_two_processes_on_cpu(tmp_path, strategy):
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(HERE / "dist_worker.py"), str(tmp_path), strategy]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    p0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"ranks diverged at {k}"
    # the checkpoint written under DDP/FSDP reloads in a single process
    single = Trainer(TrainConfig(output_dir=str(tmp_path / "run"), max_steps=12, progress=False,
                                 checkpoint_every=6, lr=1e-2), RegressionTask())  # reads either format
    ckpt = single.checkpoints()[-1]
    assert single.load_checkpoint(ckpt) == 12
    for k, v in single.ctx.raw["model"].state_dict().items():
        assert torch.equal(v, p0[k]), k


class FrozenBaseTask(RegressionTask):
    def __init__(self):
        super().__init__()
        for p in self.model.blocks.parameters():
            p.requires_grad_(False)


def test_frozen_parameters_are_not_checkpointed_and_resume_is_exact(tmp_path):
    full = Trainer(cfg(tmp_path, "f", ema_decay=None), FrozenBaseTask())
    full.fit()
    state = torch.load(full.checkpoints()[-1], weights_only=True)
    assert not any(k.startswith("blocks.") for k in state["modules"]["model"])
    assert "head.weight" in state["modules"]["model"] and "scale" in state["modules"]["model"]
    Trainer(cfg(tmp_path, "k", ema_decay=None), FrozenBaseTask()).fit(stop_after=23)
    resumed = Trainer(cfg(tmp_path, "k", ema_decay=None), FrozenBaseTask())
    resumed.fit()
    for k, v in full.ctx.raw["model"].state_dict().items():
        assert torch.equal(v, resumed.ctx.raw["model"].state_dict()[k]), k


class FixedBatchTask(RegressionTask):
    def __init__(self):
        super().__init__()
        self.drop = nn.Identity()

    def make_batch(self, step, generator):
        return super().make_batch(step, torch.Generator().manual_seed(step))


def test_gradient_accumulation_equals_the_same_batch_once(tmp_path):
    one = Trainer(cfg(tmp_path, "one", ema_decay=None, max_steps=6), FixedBatchTask())
    one.fit()
    two = Trainer(cfg(tmp_path, "two", ema_decay=None, max_steps=6, grad_accum_steps=2), FixedBatchTask())
    two.fit()
    for k, v in one.ctx.raw["model"].state_dict().items():
        torch.testing.assert_close(v, two.ctx.raw["model"].state_dict()[k], rtol=1e-5, atol=1e-6)
    killed = Trainer(cfg(tmp_path, "acc", grad_accum_steps=2), RegressionTask())
    killed.fit(stop_after=25)
    resumed = Trainer(cfg(tmp_path, "acc", grad_accum_steps=2), RegressionTask())
    resumed.fit()
    full = Trainer(cfg(tmp_path, "accfull", grad_accum_steps=2), RegressionTask())
    full.fit()
    for k, v in full.ctx.raw["model"].state_dict().items():
        assert torch.equal(v, resumed.ctx.raw["model"].state_dict()[k]), k
