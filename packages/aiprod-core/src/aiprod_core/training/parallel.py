"""Process group, precision and DDP / FSDP2 wrapping, applied from outside the model code (torchtitan style).

- :func:`init_distributed`: the process group under ``torchrun`` (nccl on CUDA, gloo otherwise); the
  strategy a run uses (``auto`` → DDP when WORLD_SIZE > 1; ``single`` under torchrun is refused).
- :func:`fp32_masters`: trainable parameters become fp32 whatever the init folder stores (AdamW moments,
  reduced gradients and EMA follow them); frozen weights keep their stored dtype under bf16 compute.
- :func:`wrap`: DDP (around a dispatcher) or FSDP2 (with ``MixedPrecisionPolicy`` bf16 params / fp32
  reduce, FSDP forward methods), so ``ctx.modules[name].encode(x)`` or ``.vocoder(x)`` goes through the
  wrapper exactly as ``ctx.modules[name](x)`` does: gradients are reduced and sharded weights gathered
  for every entry point.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from aiprod_core.device import pick_device
from aiprod_core.errors import AiprodError


def init_distributed(device_name: str, strategy: str) -> tuple[int, int, torch.device, str]:
    """(rank, world size, device, effective strategy). Creates the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and strategy == "single":
        raise AiprodError(f"train.strategy: 'single' under torchrun (WORLD_SIZE={world}) would train one "
                          "independent model per rank; use 'auto', 'ddp' or 'fsdp2'")
    if world > 1 and not dist.is_initialized():
        device = pick_device(device_name)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized() and dist.get_world_size() > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = pick_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if strategy == "single":
            raise AiprodError(f"train.strategy: 'single' with {world} processes would train one independent "
                              "model per rank; use 'auto', 'ddp' or 'fsdp2'")
        return rank, world, device, "ddp" if strategy == "auto" else strategy
    return 0, 1, pick_device(device_name), "single"  # one process: DDP / FSDP2 degrade to the plain module


def fp32_masters(module: nn.Module, mixed_precision: str) -> None:
    """Trainable parameters (and floating buffers) in fp32; under ``mixed_precision: no`` every floating
    parameter, so fp32 compute never meets a bf16 weight. Works on the meta device too."""
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != torch.float32 and (p.requires_grad or mixed_precision == "no"):
            p.data = p.data.float()
    for b in module.buffers():
        if b.is_floating_point() and b.dtype != torch.float32:
            b.data = b.data.float()


def fsdp_shard_fn(mixed_precision: str):
    """``fully_shard`` carrying the run's mixed-precision policy (bf16 all-gather, fp32 reduce-scatter)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if mixed_precision == "bf16":
        return functools.partial(fully_shard, mp_policy=MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    return fully_shard


class Dispatch(nn.Module):
    """The module DDP wraps: ``forward(None, ...)`` calls the module, ``forward("encode", ...)`` its method
    or sub-module, so every entry point runs DDP's hooks."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, _entry: str | None, *args: Any, **kwargs: Any) -> Any:
        fn = self.module if _entry is None else getattr(self.module, _entry)
        return fn(*args, **kwargs)


_MODULE_API = set(dir(nn.Module))


def _is_entry(raw: nn.Module, attr: str, value: Any) -> bool:
    return callable(value) and attr not in _MODULE_API and not attr.startswith("_")


class ModuleProxy:
    """What ``ctx.modules[name]`` is under DDP: ``proxy(x)``, ``proxy.encode(x)`` and ``proxy.vocoder(x)``
    run through the DDP wrapper; ``nn.Module`` methods and plain attributes are the raw module's."""

    def __init__(self, wrapper: nn.Module, raw: nn.Module):
        self.wrapper = wrapper
        self.raw = raw

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapper(None, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self.raw, attr)
        return functools.partial(self.wrapper, attr) if _is_entry(self.raw, attr, value) else value


class FSDPProxy:
    """What ``ctx.modules[name]`` is under FSDP2 (the module itself is the sharded root).

    ``proxy(x)`` is the root's forward. ``proxy.encode(x)`` / ``proxy.vocoder(x)``: with gradients on,
    ``encode`` (or an entry calling the sub-module) is registered once as an FSDP forward method, so the
    root's weights are gathered and the gradients reduce-scattered; under ``torch.no_grad`` (evaluation)
    every shard unit of the module is gathered for the call, so entry points that reach into a block's
    sub-modules (``stage.in_proj(x)`` rather than ``stage(x)``) work too."""

    def __init__(self, raw: nn.Module):
        self.raw = raw
        self.originals: dict[str, Any] = {}
        self.registered: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        value = self.originals.get(attr) or getattr(self.raw, attr)
        if not _is_entry(self.raw, attr, value):
            return value
        self.originals.setdefault(attr, value)
        return functools.partial(self._call, attr)

    def _call(self, attr: str, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            with gathered(self.raw):
                return self.originals[attr](*args, **kwargs)
        if attr not in self.registered:
            from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

            value = self.originals[attr]
            if isinstance(value, FSDPModule):  # its own shard unit: its hooks gather its weights
                self.registered[attr] = value
            else:
                entry = attr
                if isinstance(value, nn.Module):
                    entry = f"_aiprod_entry_{attr}"
                    object.__setattr__(self.raw, entry, value.__call__)
                register_fsdp_forward_method(self.raw, entry)
                self.registered[attr] = getattr(self.raw, entry)
        return self.registered[attr](*args, **kwargs)


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Every FSDP2 shard unit inside ``module`` unsharded (and kept so through forwards) for the block."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    groups = [g for g in (m._get_fsdp_state()._fsdp_param_group for m in units) if g is not None]
    saved = [g.post_forward_mesh_info for g in groups]
    for g in groups:
        g.post_forward_mesh_info = None  # no reshard after an inner forward
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for g, info in zip(groups, saved):
            g.post_forward_mesh_info = info
        for m in units:
            m.reshard()


def wrap(name: str, module: nn.Module, strategy: str, task: Any, device: torch.device,
         mixed_precision: str) -> tuple[nn.Module | None, Any]:
    """(wrapper or None, what ``ctx.modules[name]`` is). FSDP2 shards blocks first, then the root."""
    if strategy == "fsdp2":
        shard = fsdp_shard_fn(mixed_precision)
        task.shard(name, module, shard)
        shard(module, **task.fsdp_root_kwargs(name))
        return module, FSDPProxy(module)
    if strategy == "ddp" and any(p.requires_grad for p in module.parameters()):
        ddp = nn.parallel.DistributedDataParallel(
            Dispatch(module), device_ids=[device.index] if device.type == "cuda" else None,
            **task.ddp_kwargs(name))
        return ddp, ModuleProxy(ddp, module)
    return None, module


def set_grad_sync(wrappers: dict[str, nn.Module], sync: bool) -> None:
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch."""
    for wrapper in wrappers.values():
        if isinstance(wrapper, nn.parallel.DistributedDataParallel):
            wrapper.require_backward_grad_sync = sync
        elif hasattr(wrapper, "set_requires_gradient_sync"):
            wrapper.set_requires_gradient_sync(sync)


def rank_mean(values: dict[str, float], world_size: int, device: torch.device) -> dict[str, float]:
    """The mean of each value over ranks (keys must be the same on every rank: same code path)."""
    if world_size == 1 or not values:
        return values
    keys = sorted(values)
    where = device if device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([float(values[k]) for k in keys] + [float(len(keys))], dtype=torch.float64, device=where)
    dist.all_reduce(t)
    if int(round(t[-1].item())) != len(keys) * world_size:
        raise RuntimeError(f"ranks logged different metric sets (rank {dist.get_rank()}: {keys})")
    return {k: v / world_size for k, v in zip(keys, t[:-1].tolist())}


def any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if world_size == 1:
        return flag
    where = device if device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=where)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
