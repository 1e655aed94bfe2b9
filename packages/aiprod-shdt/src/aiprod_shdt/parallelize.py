"""Parallelism for SHDT, applied from outside the model code (torchtitan's ``parallelize.py``).

The core :class:`aiprod_core.training.Trainer` creates the process group and calls
:func:`shard_model` through ``TrainTask.shard`` for ``strategy: fsdp2`` (then shards the root), or
wraps the model in DDP for ``strategy: ddp``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def shard_model(model: nn.Module, fully_shard: Callable[..., object], **kwargs: object) -> None:
    """FSDP2: one shard group per transformer block (dual-stream, then single-stream). The root
    (embedders, final layer) is sharded by the caller afterwards. With per-block groups only one
    block's full parameters are resident at a time (plus prefetch)."""
    for blocks in (model.double_blocks, model.single_blocks):
        for block in blocks:
            fully_shard(block, **kwargs)


def apply_activation_checkpointing(model: nn.Module, enabled: bool = True) -> None:
    """Per-block activation checkpointing (non-reentrant; composes with FSDP2 and peft LoRA)."""
    model.set_activation_checkpointing(enabled)
