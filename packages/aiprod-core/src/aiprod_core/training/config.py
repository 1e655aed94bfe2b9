"""The ``train:`` section every recipe YAML shares, and its learning-rate schedule."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from aiprod_core.config import StrictModel

EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class TrainConfig(StrictModel):
    """The ``train:`` section of every recipe YAML."""

    output_dir: str
    max_steps: int
    seed: int = 0
    batch_size: int = 1
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    #: compute precision. Trainable parameters, reduced gradients, AdamW moments and EMA are fp32 whatever
    #: dtype the init folder stores: "bf16" computes in bf16 (FSDP2 MixedPrecisionPolicy, autocast for
    #: DDP / one process) and may keep frozen weights in their stored dtype; "no" computes in fp32.
    mixed_precision: Literal["no", "bf16"] = "no"
    #: dtype of the exported component folders (the model card stores every model in bf16)
    export_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    ema_decay: float | None = None
    checkpoint_every: int = 100
    #: full: one torch.save file gathered on rank 0 (simple, portable); sharded: torch.distributed.checkpoint,
    #: every rank writes its own shards (needed at 19B: a full gather would not fit on one host). Sharded
    #: checkpoints on several nodes need output_dir on a filesystem every node sees (NFS, Lustre, ...).
    checkpoint_format: Literal["full", "sharded"] = "full"
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int | None = None
    device: str = "auto"
    #: auto: DDP under torchrun (WORLD_SIZE > 1), one plain process otherwise. "single" under torchrun is
    #: refused: it would train one independent model per rank.
    strategy: Literal["auto", "single", "ddp", "fsdp2"] = "auto"
    activation_checkpointing: bool = False
    resume: bool = True
    #: stop once this many steps are done (a checkpoint is written there) without exporting: a later run,
    #: with another max_steps if wanted, resumes from it. Makes "trained to N, then extended" reproducible.
    stop_at: int | None = Field(None, ge=1)
    progress: bool = True


def lr_lambda(cfg: TrainConfig):
    """Warmup, then constant / linear / cosine decay to ``min_lr_ratio`` at ``max_steps``."""

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        if cfg.lr_schedule == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape

    return f
