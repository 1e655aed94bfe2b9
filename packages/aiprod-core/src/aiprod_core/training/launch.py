"""Launch ``aiprod train`` (or any script) under ``torchrun`` with 2 gloo processes on the CPU: the helper
the distributed tests of every recipe share.

``train_distributed("configs/train/tiny/hwvae.yaml", ["train.max_steps=3"], tmp_path, strategy="fsdp2")``
returns each rank's report (the sha256 of its full weights, the mean step time, the trainable parameter
and optimizer state dtypes, the metric history), written by the trainer when ``AIPROD_TRAIN_DIGEST`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiprod_core.training.loop import DIGEST_ENV


def torchrun(args: list[str], nproc: int = 2, timeout: float = 600, env: dict[str, str] | None = None,
             cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N ARGS`` (a free port each time,
    so parallel test workers never collide); one intra-op thread per process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "AIPROD_QUIET": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def aiprod_script() -> str:
    found = Path(sys.executable).with_name("aiprod")
    return str(found) if found.is_file() else (shutil.which("aiprod") or "aiprod")


def train_distributed(config: str | Path, overrides: list[str], out: str | Path, strategy: str = "ddp",
                      nproc: int = 2, timeout: float = 600) -> list[dict[str, Any]]:
    """Run ``aiprod train CONFIG --set ...`` under torchrun; return the per-rank reports (rank order).
    Raises ``RuntimeError`` with the output's tail when the run fails."""
    out = Path(out)
    digest_dir = out / "digests"
    sets = [f"train.output_dir={out / 'run'}", f"train.strategy={strategy}", "train.progress=false", *overrides]
    args = [aiprod_script(), "train", str(config)]
    for s in sets:
        args += ["--set", s]
    res = torchrun(args, nproc=nproc, timeout=timeout, env={DIGEST_ENV: str(digest_dir)})
    if res.returncode != 0:
        raise RuntimeError(f"torchrun exited {res.returncode}:\n{(res.stdout + res.stderr)[-6000:]}")
    return [json.loads((digest_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
