"""What a recipe provides (:class:`TrainTask`) and the small pieces every task shares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from aiprod_core.training.loop import StepContext


class TrainTask:
    """What a recipe provides. Override ``modules``, ``make_batch`` and ``train_step``.

    The contract (stable: recipes, context parallelism and the data layer build on it):

    - ``modules()`` returns the modules by name; each module with trainable parameters gets its own AdamW,
      LR schedule, gradient clipping and (optionally) EMA. Several modules (a generator and a discriminator)
      are first-class: ``ctx.backward_step(name, loss)`` puts gradients into module ``name`` only, so a
      GAN's discriminator update never sees the generator's loss, with gradient accumulation too.
    - In ``train_step`` / ``evaluate`` call modules through ``ctx.modules[name]`` — ``module(x)`` and
      ``module.method(x)`` / ``module.submodule(x)`` alike: under DDP / FSDP2 the call goes through the
      wrapper, so gradients are reduced and sharded weights gathered. A forward that only carries another
      module's loss (the discriminator inside the generator's loss) may use ``ctx.raw[name]``; its
      gradients are discarded by ``backward_step``.
    - ``make_batch(step, generator)`` draws only from ``generator`` (seeded from seed, step, rank): exact
      resume. Choices that must agree across ranks (an aspect bucket, a resolution) come from
      :func:`shared_generator` ``(seed, step)`` instead.
    """

    def modules(self) -> dict[str, nn.Module]:
        """Modules by name; each with trainable parameters gets its own AdamW and LR schedule."""
        raise NotImplementedError

    def lr_scale(self) -> dict[str, float]:
        """Optional per-module LR multiplier."""
        return {}

    def make_batch(self, step: int, generator: torch.Generator) -> Any:
        """The batch of ``step``, drawn only from ``generator`` (seeded from seed, step, rank)."""
        raise NotImplementedError

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """Forward through ``ctx.modules[...]``, then ``ctx.backward_step(name, loss)``; return metrics
        (the trainer averages them over micro-batches and ranks)."""
        raise NotImplementedError

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        """Evaluation figures (every rank runs it; the trainer logs the mean over ranks)."""
        return {}

    def shard(self, name: str, module: nn.Module, fully_shard: Any) -> None:
        """FSDP2: shard sub-modules before the root. ``fully_shard`` already carries the trainer's
        mixed-precision policy. Default: the outermost children of every ``nn.ModuleList`` (lists nested
        in lists are descended into, never sharded themselves)."""
        for block in default_blocks(module):
            fully_shard(block)

    def init_weights(self, name: str, module: nn.Module, ctx: StepContext) -> None:
        """Fill a module that ``modules()`` returned on the meta device, once it is sharded (FSDP2) and
        materialised with ``to_empty``. Random init: seed identically on every rank; pretrained weights:
        ``load_full_state_dict(module, state_on_rank0_or_None)`` reads on rank 0 and broadcasts shards."""
        raise NotImplementedError(f"module {name!r} was built on the meta device; implement TrainTask.init_weights")

    def fsdp_root_kwargs(self, name: str) -> dict[str, Any]:
        """FSDP2: extra keyword arguments of the root ``fully_shard`` call."""
        return {}

    def ddp_kwargs(self, name: str) -> dict[str, Any]:
        """DDP: extra keyword arguments of ``DistributedDataParallel`` (e.g. ``find_unused_parameters``)."""
        return {}

    def export(self, out_dir: Path, ctx: StepContext) -> None:
        """Save the trained modules as component folders (EMA weights when enabled, ``export_dtype``)."""
        from aiprod_core.weights import PretrainedMixin

        for name, module in ctx.raw.items():
            if isinstance(module, PretrainedMixin):
                ctx.trainer.save_component(name, out_dir / name)


def default_blocks(module: nn.Module) -> list[nn.Module]:
    """The outermost non-container children of ``nn.ModuleList``s that hold parameters."""
    blocks: list[nn.Module] = []
    seen: set[int] = set()

    def visit(parent: nn.Module) -> None:
        for child in parent.children():
            container = isinstance(child, (nn.ModuleList, nn.ModuleDict))
            if (isinstance(parent, nn.ModuleList) and not container and id(child) not in seen
                    and any(True for _ in child.parameters())):
                seen.add(id(child))
                blocks.append(child)
            else:
                visit(child)

    visit(module)
    return blocks


class EMA:
    """Exponential moving average of a module's trainable parameters, kept in fp32."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in module.named_parameters() if p.is_floating_point() and p.requires_grad]
        params = dict(module.named_parameters())
        self.shadow = [params[n].detach().clone().float() for n in self.names]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        for s, n in zip(self.shadow, self.names):
            s.lerp_(params[n].detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: full_tensor(s) for n, s in zip(self.names, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, n in enumerate(self.names):
            self.shadow[i].copy_(like(state[n], self.shadow[i]))


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective: every rank calls it), on the CPU."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


def like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if hasattr(ref, "device_mesh"):  # DTensor under FSDP2
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)
    return full.to(ref.device, ref.dtype)


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
    """Load a full state dict into a (possibly FSDP2-sharded) module. Under torch.distributed only rank 0
    needs ``state`` (others pass None); each rank receives its own shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    distributed = dist.is_initialized() and dist.get_world_size() > 1
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=distributed)
    set_model_state_dict(module, state if state is not None else {}, options=options)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator a batch is drawn from: a pure function of (seed, step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 9_176 + rank * 7_919) % (2**63 - 1))


def shared_generator(seed: int, step: int) -> torch.Generator:
    """A generator equal on every rank at ``step``: for choices the ranks must agree on (a bucket)."""
    return torch.Generator().manual_seed((seed * 2_000_029 + step * 6_151 + 104_729) % (2**63 - 1))
