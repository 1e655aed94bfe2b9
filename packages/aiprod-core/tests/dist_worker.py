"""Run under torchrun by test_training.py: trains the regression task with DDP or FSDP2."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from test_training import MetaInitTask, RegressionTask

from aiprod_core.training import TrainConfig, Trainer

out, strategy = Path(sys.argv[1]), sys.argv[2]
task = MetaInitTask() if strategy.endswith("-meta") else RegressionTask()
fmt = "sharded" if strategy.endswith("-sharded") else "full"
cfg = TrainConfig(output_dir=str(out / "run"), max_steps=12, checkpoint_every=6, lr=1e-2, progress=False,
                  strategy=strategy.split("-")[0], device="cpu", checkpoint_format=fmt)
trainer = Trainer(cfg, task)
trainer.fit()
full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in trainer.ctx.raw["model"].state_dict().items()}
torch.save(full, out / f"rank{dist.get_rank()}.pt")
dist.barrier()
dist.destroy_process_group()
# everything is on disk: leave without the interpreter's teardown, as aiprod_core.training.launch's workers do
# (the fsdp2-sharded case aborted there once: "terminate called without an active exception", SIGABRT)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
