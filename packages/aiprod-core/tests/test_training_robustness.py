"""The trainer's guarantees for real runs: fp32 masters from a bf16 start, GAN steps isolated with gradient
accumulation, one clear line for torchrun without a strategy, and the failure modes of long runs (torn
metrics line, stale temporary checkpoints, a full disk)."""

import errno
import json

import pytest
import torch
from torch import nn

from aiprod_core.errors import AiprodError
from aiprod_core.training import TrainConfig, Trainer, TrainTask


class Regression(TrainTask):
    def __init__(self, dtype=torch.float32):
        from toy import Toy

        torch.manual_seed(0)
        self.model = Toy(dim=8, depth=2).to(dtype)

    def modules(self):
        return {"model": self.model}

    def make_batch(self, step, generator):
        x = torch.randn(16, 8, generator=generator)
        return {"x": x, "y": x[:, :1] * 2 - x[:, 1:2]}

    def train_step(self, batch, ctx):
        with ctx.autocast():
            pred = ctx.modules["model"](batch["x"])
        loss = (pred.float() - batch["y"]).pow(2).mean()
        ctx.backward_step("model", loss)
        return {"loss": loss.item()}


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), max_steps=3, lr=2e-5, checkpoint_every=100, log_every=1,
                progress=False, grad_clip=None, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("mixed_precision", ["bf16", "no"])
def test_bf16_start_trains_fp32_masters(tmp_path, mixed_precision):
    task = Regression(torch.bfloat16)
    before = {k: v.float().clone() for k, v in task.model.state_dict().items()}
    trainer = Trainer(config(tmp_path, mixed_precision=mixed_precision), task)
    trainer.fit()
    params = [p for p in task.model.parameters()]
    assert all(p.dtype == torch.float32 for p in params)
    state = [v for s in trainer.optimizers["model"].state.values() for v in s.values() if v.numel() > 1]
    assert state and all(v.dtype == torch.float32 for v in state)
    after = task.model.state_dict()
    changed = sum(int((after[k].float() != before[k]).sum()) for k in before)
    total = sum(v.numel() for v in before.values())
    assert changed / total >= 0.95, changed / total
    # the export is the card's bf16 by default
    from safetensors import safe_open

    files = list((tmp_path / "run" / "final").rglob("*.safetensors"))
    assert files
    for f in files:
        with safe_open(str(f), "pt") as fh:
            assert all(fh.get_tensor(k).dtype == torch.bfloat16 for k in fh.keys())


class ToyGAN(TrainTask):
    """G maps noise to samples, D scores them; D's optimizer step checks the gradient it is given."""

    def __init__(self):
        torch.manual_seed(0)
        self.gen = nn.Linear(4, 4)
        self.disc = nn.Linear(4, 1)
        self.expected: list[torch.Tensor] | None = None
        self.checked = 0

    def modules(self):
        return {"gen": self.gen, "disc": self.disc}

    def make_batch(self, step, generator):
        return {"z": torch.randn(8, 4, generator=generator), "real": torch.randn(8, 4, generator=generator) + 2}

    def train_step(self, batch, ctx):
        fake = ctx.modules["gen"](batch["z"])
        scores = ctx.modules["disc"](torch.cat([batch["real"], fake.detach()]))
        d_loss = (scores[:8] - 1).pow(2).mean() + scores[8:].pow(2).mean()
        grads = torch.autograd.grad(d_loss / ctx.accum, list(self.disc.parameters()), retain_graph=True)
        if ctx.micro == 0:
            self.expected = [g.clone() for g in grads]
        else:
            self.expected = [e + g for e, g in zip(self.expected, grads)]
        ctx.backward_step("disc", d_loss)
        g_loss = (ctx.raw["disc"](fake) - 1).pow(2).mean()  # D inside G's loss
        ctx.backward_step("gen", g_loss)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


@pytest.mark.parametrize("accum", [1, 3])
def test_discriminator_update_sees_only_its_own_loss(tmp_path, accum):
    task = ToyGAN()
    trainer = Trainer(config(tmp_path, grad_accum_steps=accum, lr=1e-2), task)

    def check(opt, args, kwargs):
        for p, e in zip(task.disc.parameters(), task.expected):
            torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)
        task.checked += 1

    trainer.optimizers["disc"].register_step_pre_hook(check)
    trainer.fit()
    assert task.checked == 3


def test_single_strategy_under_torchrun_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AiprodError, match="independent model per rank"):
        Trainer(config(tmp_path, strategy="single"), Regression())


def test_torn_metrics_line_and_stale_tmp_do_not_block_resume(tmp_path):
    cfg = config(tmp_path, max_steps=6, checkpoint_every=2, lr=1e-2)
    Trainer(cfg, Regression()).fit(stop_after=4)
    run = tmp_path / "run"
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.1')  # killed mid-write
    stale = [run / "checkpoints" / ".step-00000006.pt.x1y2.tmp", run / "checkpoints" / ".step-00000006.dcp.tmp"]
    stale[0].write_bytes(b"partial")
    stale[1].mkdir()
    trainer = Trainer(cfg, Regression())
    trainer.fit()
    assert not any(p.exists() for p in stale)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("fmt", ["full", "sharded"])
def test_full_disk_is_one_line_and_previous_checkpoint_stays(tmp_path, monkeypatch, fmt):
    cfg = config(tmp_path, max_steps=6, checkpoint_every=2, lr=1e-2, checkpoint_format=fmt)
    Trainer(cfg, Regression()).fit(stop_after=3)
    trainer = Trainer(cfg, Regression())

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fmt == "full":
        monkeypatch.setattr(torch, "save", full_disk)
    else:
        import torch.distributed.checkpoint as dcp

        monkeypatch.setattr(dcp, "save", full_disk)
    with pytest.raises(AiprodError, match="no space left on device") as err:
        trainer.fit()
    assert "\n" not in str(err.value) and "step-00000002" in str(err.value)
    monkeypatch.undo()
    ckpt = trainer.checkpoints()
    assert [p.name.split(".")[0] for p in ckpt] == ["step-00000002"]
    assert not [p for p in ckpt[0].parent.iterdir() if p.name.startswith(".")]
    assert Trainer(cfg, Regression()).load_checkpoint(ckpt[-1]) == 2
