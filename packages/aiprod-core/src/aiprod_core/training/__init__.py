"""The one training loop every recipe uses.

A recipe describes *what* to train with a :class:`TrainTask` (modules, batches, loss);
:class:`Trainer` does the rest the same way everywhere:

- ``config``: :class:`TrainConfig`, the ``train:`` section of every recipe YAML, and the LR schedule.
- ``task``: :class:`TrainTask` (the recipe's contract), :class:`EMA`, the batch generators.
- ``parallel``: process group, fp32 master weights, DDP / FSDP2 (bf16 ``MixedPrecisionPolicy``) applied
  from outside the model code; rank means of metrics.
- ``checkpointing``: atomic full / sharded checkpoints, exact resume, stale temporary files, full disks,
  component export in ``export_dtype``.
- ``loop``: :class:`Trainer` and :class:`StepContext` (per-module ``backward_step``: a GAN's generator
  and discriminator each see only their own loss).
- ``launch``: a 2-process gloo launcher for tests.

Exact resume rests on one rule: ``make_batch(step, generator)`` draws only from the
generator it is given, which is seeded from ``(seed, step, rank)``; the data position is
then the step itself.
"""

from aiprod_core.training.checkpointing import CKPT_RE, Checkpointing
from aiprod_core.training.config import EXPORT_DTYPES, TrainConfig, lr_lambda
from aiprod_core.training.loop import StepContext, Trainer, iterate_with_progress, to_device
from aiprod_core.training.parallel import FSDPProxy, ModuleProxy, fp32_masters, rank_mean
from aiprod_core.training.task import (
    EMA,
    TrainTask,
    default_blocks,
    load_full_state_dict,
    shared_generator,
    step_generator,
)

_lr_lambda = lr_lambda  # older name
_to_device = to_device

__all__ = [
    "CKPT_RE",
    "EMA",
    "EXPORT_DTYPES",
    "Checkpointing",
    "FSDPProxy",
    "ModuleProxy",
    "StepContext",
    "TrainConfig",
    "TrainTask",
    "Trainer",
    "default_blocks",
    "fp32_masters",
    "iterate_with_progress",
    "load_full_state_dict",
    "lr_lambda",
    "rank_mean",
    "shared_generator",
    "step_generator",
    "to_device",
]
