"""The one training loop every recipe uses.

A recipe describes *what* to train with a :class:`TrainTask` (modules, batches, loss);
:class:`Trainer` does the rest the same way everywhere: AdamW per module with warmup and a
schedule, bf16 autocast, gradient clipping, optional EMA, atomic checkpoints that a
killed run resumes from exactly (model, optimizer, schedule, RNG and data position),
JSONL metrics, a progress bar, and DDP / FSDP2 under ``torchrun``.

Exact resume rests on one rule: ``make_batch(step, generator)`` draws only from the
generator it is given, which is seeded from ``(seed, step, rank)``; the data position is
then the step itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.device import pick_device, rng_state, seed_everything, set_rng_state
from aiprod_core.store import atomic_path

CKPT_RE = re.compile(r"^step-(\d{8})\.(pt|dcp)$")


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
    mixed_precision: Literal["no", "bf16"] = "no"
    ema_decay: float | None = None
    checkpoint_every: int = 100
    #: full: one torch.save file gathered on rank 0 (simple, portable); sharded: torch.distributed.checkpoint,
    #: every rank writes its own shards (needed at 19B: a full gather would not fit on one host)
    checkpoint_format: Literal["full", "sharded"] = "full"
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int | None = None
    device: str = "auto"
    strategy: Literal["single", "ddp", "fsdp2"] = "single"
    activation_checkpointing: bool = False
    resume: bool = True
    #: stop once this many steps are done (a checkpoint is written there) without exporting: a later run,
    #: with another max_steps if wanted, resumes from it. Makes "trained to N, then extended" reproducible.
    stop_at: int | None = Field(None, ge=1)
    progress: bool = True


class TrainTask:
    """What a recipe provides. Override ``modules``, ``make_batch`` and ``train_step``."""

    def modules(self) -> dict[str, nn.Module]:
        """Trainable modules by name; each gets its own AdamW and LR schedule."""
        raise NotImplementedError

    def lr_scale(self) -> dict[str, float]:
        """Optional per-module LR multiplier."""
        return {}

    def make_batch(self, step: int, generator: torch.Generator) -> Any:
        """The batch of ``step``, drawn only from ``generator`` (seeded from seed, step, rank)."""
        raise NotImplementedError

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """Forward through ``ctx.modules[...]``, then ``ctx.backward_step(name, loss)``; return metrics."""
        raise NotImplementedError

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return {}

    def shard(self, name: str, module: nn.Module, fully_shard: Any) -> None:
        """FSDP2: shard sub-modules before the root. Default: every child of each ``nn.ModuleList``."""
        for sub in module.modules():
            if isinstance(sub, nn.ModuleList):
                for block in sub:
                    fully_shard(block)

    def init_weights(self, name: str, module: nn.Module, ctx: StepContext) -> None:
        """Fill a module that ``modules()`` returned on the meta device, once it is sharded (FSDP2) and
        materialised with ``to_empty``. Random init: seed identically on every rank; pretrained weights:
        ``load_full_state_dict(module, state_on_rank0_or_None)`` reads on rank 0 and broadcasts shards."""
        raise NotImplementedError(f"module {name!r} was built on the meta device; implement TrainTask.init_weights")

    def fsdp_root_kwargs(self, name: str) -> dict[str, Any]:
        """FSDP2: keyword arguments of the root ``fully_shard`` call (e.g. ``mp_policy``)."""
        return {}

    def export(self, out_dir: Path, ctx: StepContext) -> None:
        """Save the trained modules as component folders (EMA weights when enabled)."""
        from aiprod_core.weights import PretrainedMixin

        for name, module in ctx.raw.items():
            if isinstance(module, PretrainedMixin):
                ctx.trainer.save_component(name, out_dir / name)


class EMA:
    """Exponential moving average of a module's floating-point parameters."""

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
        return {n: _full(s) for n, s in zip(self.names, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, n in enumerate(self.names):
            self.shadow[i].copy_(_like(state[n], self.shadow[i]))


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


def _like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
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


def _frozen_names(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not p.requires_grad}


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator a batch is drawn from: a pure function of (seed, step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 9_176 + rank * 7_919) % (2**63 - 1))


def _lr_lambda(cfg: TrainConfig):
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


class StepContext:
    """What ``train_step`` sees: wrapped and raw modules, autocast and the optimizer step."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.modules: dict[str, nn.Module] = {}
        self.raw: dict[str, nn.Module] = {}
        self.step = 0
        self.device = trainer.device
        self.rank = trainer.rank
        self.world_size = trainer.world_size
        self.config = trainer.cfg
        self.micro = 0
        self.accum = trainer.cfg.grad_accum_steps
        self._extra: dict[str, float] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.mixed_precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward_step(self, name: str, loss: torch.Tensor, retain_graph: bool = False) -> float:
        """zero_grad → backward → clip → optimizer step → LR step → EMA; returns the grad norm."""
        t = self.trainer
        opt = t.optimizers[name]
        if self.micro == 0:
            opt.zero_grad(set_to_none=True)
        (loss / self.accum if self.accum > 1 else loss).backward(retain_graph=retain_graph)
        if self.micro != self.accum - 1:
            return 0.0  # accumulate; gradients are synchronised and applied on the last micro-batch
        params = [p for p in self.raw[name].parameters() if p.grad is not None]
        norm = 0.0
        if self.config.grad_clip is not None and params:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        opt.step()
        t.schedulers[name].step()
        if name in t.emas:
            t.emas[name].update(self.raw[name])
        return norm

    def log(self, metrics: dict[str, float]) -> None:
        self._extra.update(metrics)


class Trainer:
    def __init__(self, cfg: TrainConfig, task: TrainTask):
        self.cfg = cfg
        self.task = task
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.rank, self.world_size, self.device = self._init_distributed()
        self.history: list[dict[str, Any]] = []
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.emas: dict[str, EMA] = {}
        self.ctx = StepContext(self)
        self._setup()

    # -- setup -------------------------------------------------------------------------
    def _init_distributed(self) -> tuple[int, int, torch.device]:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            device = pick_device(self.cfg.device)
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        if dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            device = pick_device(self.cfg.device)
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            return rank, world, device
        if self.cfg.strategy != "single":
            # one process: DDP/FSDP degrade to a plain module, so a recipe runs unchanged
            pass
        return 0, 1, pick_device(self.cfg.device)

    def _setup(self) -> None:
        cfg = self.cfg
        modules = self.task.modules()
        scales = self.task.lr_scale()
        for name, module in modules.items():
            on_meta = any(t.is_meta for t in [*module.parameters(), *module.buffers()])
            if on_meta:
                # large models: build on meta, shard first, then materialise only this rank's part
                if self.world_size > 1 and cfg.strategy == "fsdp2":
                    from torch.distributed.fsdp import fully_shard

                    self.task.shard(name, module, fully_shard)
                    fully_shard(module, **self.task.fsdp_root_kwargs(name))
                module.to_empty(device=self.device)
                self.task.init_weights(name, module, self.ctx)
            else:
                module.to(self.device)
            if self.world_size > 1 and not on_meta:
                for t in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(t.data, src=0)  # identical start on every rank
            wrapped = module
            if self.world_size > 1 and cfg.strategy == "ddp" and any(p.requires_grad for p in module.parameters()):
                wrapped = nn.parallel.DistributedDataParallel(
                    module, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
            elif self.world_size > 1 and cfg.strategy == "fsdp2" and not on_meta:
                from torch.distributed.fsdp import fully_shard

                self.task.shard(name, module, fully_shard)
                fully_shard(module, **self.task.fsdp_root_kwargs(name))
            self.ctx.raw[name] = module
            self.ctx.modules[name] = wrapped
            params = [p for p in module.parameters() if p.requires_grad]
            if not params:
                continue
            self.optimizers[name] = torch.optim.AdamW(
                params, lr=cfg.lr * scales.get(name, 1.0), betas=cfg.betas, weight_decay=cfg.weight_decay
            )
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(self.optimizers[name], _lr_lambda(cfg))
            if cfg.ema_decay is not None:
                self.emas[name] = EMA(module, cfg.ema_decay)

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        return sorted(p for p in self.ckpt_dir.iterdir() if CKPT_RE.search(p.name))

    def _module_states(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        models, optims = {}, {}
        for name, module in self.ctx.raw.items():
            if name in self.optimizers:
                models[name], optims[name] = get_state_dict(module, self.optimizers[name], options=opts)
                # frozen parameters (a LoRA base, a fixed teacher) are rebuilt by the task, not checkpointed
                frozen = _frozen_names(module)
                models[name] = {k: v for k, v in models[name].items() if k not in frozen}
            else:
                models[name] = {k: _full(v) for k, v in module.state_dict().items()}
        return models, optims

    def _rng_all(self) -> list[Any]:
        rng = rng_state()
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng)
            return gathered
        return [rng]

    def _prune(self) -> None:
        for old in self.checkpoints()[: -self.cfg.keep_checkpoints]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)

    def _sharded_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        state: dict[str, Any] = {}
        for name, module in self.ctx.raw.items():
            if name in self.optimizers:
                msd, osd = get_state_dict(module, self.optimizers[name])
                frozen = _frozen_names(module)
                state[f"model.{name}"] = {k: v for k, v in msd.items() if k not in frozen}
                state[f"optim.{name}"] = osd
            else:
                state[f"model.{name}"] = module.state_dict()
        for name, ema in self.emas.items():
            state[f"ema.{name}"] = dict(zip(ema.names, ema.shadow))
        return state

    def _save_sharded(self, step: int) -> Path:
        import torch.distributed.checkpoint as dcp

        final = self.ckpt_dir / f"step-{step:08d}.dcp"
        tmp = self.ckpt_dir / f".step-{step:08d}.dcp.tmp"
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        if self.world_size > 1:
            dist.barrier()
        dcp.save(self._sharded_state(), checkpoint_id=str(tmp))
        rng_all = self._rng_all()
        if self.rank == 0:
            extra = {"step": step, "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                     "rng": rng_all, "world_size": self.world_size}
            torch.save(extra, tmp / "trainer.pt")
            os.replace(tmp, final)
            self._prune()
        if self.world_size > 1:
            dist.barrier()
        return final

    def _load_sharded(self, path: Path) -> int:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = self._sharded_state()
        dcp.load(state, checkpoint_id=str(path))  # reshards: any world size, one process included
        for name, module in self.ctx.raw.items():
            if name in self.optimizers:
                opts = StateDictOptions(strict=not _frozen_names(module))
                set_state_dict(module, self.optimizers[name], model_state_dict=state[f"model.{name}"],
                               optim_state_dict=state[f"optim.{name}"], options=opts)
            else:
                module.load_state_dict(state[f"model.{name}"])
        # EMA shadows were loaded in place
        extra = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        for name, sched in self.schedulers.items():
            sched.load_state_dict(extra["schedulers"][name])
        rngs = extra["rng"]
        set_rng_state(rngs[self.rank] if len(rngs) == self.world_size else rngs[0])
        return int(extra["step"])

    def save_checkpoint(self, step: int) -> Path | None:
        if self.cfg.checkpoint_format == "sharded":
            return self._save_sharded(step)
        models, optims = self._module_states()
        emas = {n: e.state_dict() for n, e in self.emas.items()}
        rng_all = self._rng_all()
        path = self.ckpt_dir / f"step-{step:08d}.pt"
        if self.rank == 0:
            state = {
                "step": step,
                "modules": models,
                "optimizers": optims,
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                "ema": emas,
                "rng": rng_all,
                "world_size": self.world_size,
            }
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            self._prune()
        if self.world_size > 1:
            dist.barrier()
        return path

    def load_checkpoint(self, path: Path) -> int:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        if path.is_dir():
            return self._load_sharded(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, module in self.ctx.raw.items():
            if name in self.optimizers:
                frozen = _frozen_names(module)
                expected = set(module.state_dict()) - frozen
                got = set(state["modules"][name])
                if got != expected:
                    raise RuntimeError(f"{path}: module {name!r} does not match the checkpoint "
                                       f"(missing {sorted(expected - got)[:3]}, unexpected {sorted(got - expected)[:3]})")
                opts = StateDictOptions(full_state_dict=True, strict=not frozen)
                set_state_dict(module, self.optimizers[name], model_state_dict=state["modules"][name],
                               optim_state_dict=state["optimizers"][name], options=opts)
            else:
                module.load_state_dict(state["modules"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        for name, ema in self.emas.items():
            ema.load_state_dict(state["ema"][name])
        rngs = state["rng"]
        set_rng_state(rngs[self.rank] if len(rngs) == self.world_size else rngs[0])
        return int(state["step"])

    def save_component(self, name: str, folder: Path) -> None:
        """Save module ``name`` as a component folder (EMA weights when enabled); rank 0 writes."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        module = self.ctx.raw[name]
        full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if name in self.emas:
            full.update(self.emas[name].state_dict())
        if self.rank == 0:
            with torch.device("meta"):
                fresh = type(module).from_config(module.config)  # type: ignore[attr-defined]
            fresh.load_state_dict({k: v.to(full[k].dtype) for k, v in full.items()}, assign=True)
            fresh.save_pretrained(folder)
        if self.world_size > 1:
            dist.barrier()

    # -- loop ----------------------------------------------------------------------------
    def _metrics_file(self) -> Path:
        return self.out / "metrics.jsonl"

    def _truncate_metrics(self, step: int) -> None:
        path = self._metrics_file()
        if self.rank != 0 or not path.is_file():
            return
        kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(k + "\n" for k in kept))

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self._metrics_file(), "a") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming when a checkpoint exists). ``stop_after`` simulates a kill."""
        cfg = self.cfg
        start = 0
        ckpts = self.checkpoints() if cfg.resume else []
        if ckpts:
            start = self.load_checkpoint(ckpts[-1])
            self._truncate_metrics(start)
        else:
            seed_everything(cfg.seed + self.rank)
        from tqdm import tqdm

        quiet = os.environ.get("AIPROD_QUIET", "") not in ("", "0")
        bar = tqdm(total=cfg.max_steps, initial=start, desc="train", unit="step",
                   disable=quiet or not cfg.progress or self.rank != 0)
        last: dict[str, Any] = {}
        t0 = time.perf_counter()
        for step in range(start, cfg.max_steps):
            if stop_after is not None and step >= stop_after:
                bar.close()
                return {"step": step, "stopped": True, **last}
            self.ctx.step = step
            for m in self.ctx.raw.values():
                m.train()
            metrics = {}
            for micro in range(cfg.grad_accum_steps):
                self.ctx.micro = micro
                self._set_grad_sync(micro == cfg.grad_accum_steps - 1)
                draw = step * cfg.grad_accum_steps + micro  # == step without accumulation
                batch = _to_device(self.task.make_batch(step, step_generator(cfg.seed, draw, self.rank)), self.device)
                out = dict(self.task.train_step(batch, self.ctx))
                out.update(self.ctx._extra)
                self.ctx._extra = {}
                for k, v in out.items():
                    metrics[k] = metrics.get(k, 0.0) + float(v) / cfg.grad_accum_steps
            done = step + 1
            record = {"step": done, **{k: float(v) for k, v in metrics.items()}}
            if self.schedulers:
                record["lr"] = next(iter(self.schedulers.values())).get_last_lr()[0]
            self.history.append(record)
            last = record
            if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.max_steps:
                record.update(self._evaluate())
            if done % cfg.log_every == 0 or done == cfg.max_steps:
                record["elapsed_s"] = round(time.perf_counter() - t0, 3)
                self._log(record)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if isinstance(v, float)}, refresh=False)
            bar.update()
            if done % cfg.checkpoint_every == 0 and done != cfg.max_steps:
                self.save_checkpoint(done)
            if cfg.stop_at is not None and done == cfg.stop_at and done != cfg.max_steps:
                if done % cfg.checkpoint_every:
                    self.save_checkpoint(done)
                bar.close()
                return {"step": done, "stopped": True, **last}
        bar.close()
        if start < cfg.max_steps or not (self.out / "final").exists():
            final_eval = self._evaluate()
            if final_eval:
                last.update(final_eval)
                self._log({"step": cfg.max_steps, **final_eval})
            self.save_checkpoint(cfg.max_steps)
            self.task.export(self.out / "final", self.ctx)
        return {"step": cfg.max_steps, **last}

    def _set_grad_sync(self, sync: bool) -> None:
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
        if self.world_size == 1 or self.cfg.grad_accum_steps == 1:
            return
        for wrapped in self.ctx.modules.values():
            if isinstance(wrapped, nn.parallel.DistributedDataParallel):
                wrapped.require_backward_grad_sync = sync
            elif hasattr(wrapped, "set_requires_gradient_sync"):
                wrapped.set_requires_gradient_sync(sync)

    def _evaluate(self) -> dict[str, float]:
        for m in self.ctx.raw.values():
            m.eval()
        with torch.no_grad():
            out = self.task.evaluate(self.ctx)
        return {f"eval/{k}": float(v) for k, v in out.items()}


def iterate_with_progress(it, **kw) -> Iterator:
    from tqdm import tqdm

    quiet = os.environ.get("AIPROD_QUIET", "") not in ("", "0")
    return iter(tqdm(it, disable=quiet, **kw))
