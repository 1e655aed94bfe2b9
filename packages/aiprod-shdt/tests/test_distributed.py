"""2 processes on CPU (gloo) under torchrun: DDP and FSDP2 stay in sync, agree with each other, and a
checkpoint written under FSDP2 reloads in a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aiprod_core.training import Trainer
from aiprod_shdt.model import SHDT
from aiprod_shdt.train import SHDTTask

sys.path.insert(0, str(Path(__file__).parent))
from dist_worker import config  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AIPROD_QUIET": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).parent / "dist_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def test_ranks_in_sync(run):
    _, report = run
    for strategy, (r0, r1) in report.items():
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["full"] == r1["full"], f"{strategy}: ranks hold different weights"
        assert r0["losses"] != r1["losses"], f"{strategy}: ranks saw the same data"
        assert r0["logged"] == r1["logged"], f"{strategy}: logged losses are not the rank means"
    d0, d1 = report["ddp"]
    assert d0["local"] == d1["local"] == d0["full"]  # DDP replicas identical


def test_fsdp2_matches_ddp(run):
    out, report = run
    ddp, fsdp = load_file(str(out / "ddp.safetensors")), load_file(str(out / "fsdp2.safetensors"))
    assert ddp.keys() == fsdp.keys()
    for k in ddp:
        assert torch.allclose(ddp[k], fsdp[k], atol=1e-5), k
    for a, b in zip(report["ddp"], report["fsdp2"]):
        assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)


def test_fsdp2_checkpoint_reloads_in_one_process(run):
    out, _ = run
    fsdp = load_file(str(out / "fsdp2.safetensors"))
    cfg = config(out, "fsdp2")
    ckpts = sorted((out / "fsdp2" / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in ckpts] == ["step-00000002.pt", "step-00000004.pt"]
    task = SHDTTask(cfg)
    trainer = Trainer(cfg.train, task)  # no torchrun: one process, strategy degrades to a plain module
    assert trainer.world_size == 1
    assert trainer.load_checkpoint(ckpts[-1]) == 4
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, fsdp[k]), k
    exported = SHDT.from_pretrained(out / "fsdp2" / "final" / "model")
    for k, v in exported.state_dict().items():
        assert torch.equal(v, fsdp[k]), k
