"""The ``train:`` section every recipe YAML shares, and its learning-rate schedule."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field

from aiprod_core.config import StrictModel

EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


#: an AdamW beta: in [0, 1)
Beta = Annotated[float, Field(ge=0, lt=1)]


class TrainConfig(StrictModel):
    """The ``train:`` section of every recipe YAML."""

    output_dir: str
    max_steps: int = Field(ge=1)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    batch_size: int = Field(1, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False)
    #: compute precision. Trainable parameters, reduced gradients, AdamW moments and EMA are fp32 whatever
    #: dtype the init folder stores: "bf16" computes in bf16 (FSDP2 MixedPrecisionPolicy, autocast for
    #: DDP / one process) and may keep frozen weights in their stored dtype; "no" computes in fp32.
    mixed_precision: Literal["no", "bf16"] = "no"
    #: dtype of the exported component folders (the model card stores every model in bf16)
    export_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    ema_decay: float | None = Field(None, ge=0, lt=1)
    checkpoint_every: int = Field(100, ge=1)
    #: full: one torch.save file gathered on rank 0 (simple, portable); sharded: torch.distributed.checkpoint,
    #: every rank writes its own shards (needed at 19B: a full gather would not fit on one host). Sharded
    #: checkpoints on several nodes need output_dir on a filesystem every node sees (NFS, Lustre, ...).
    checkpoint_format: Literal["full", "sharded"] = "full"
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)
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
