"""The loop: :class:`Trainer` (set-up, fit, evaluation) and :class:`StepContext` (what a step sees)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from aiprod_core.device import seed_everything
from aiprod_core.training.checkpointing import Checkpointing
from aiprod_core.training.config import TrainConfig, lr_lambda
from aiprod_core.training.parallel import fp32_masters, init_distributed, rank_mean, set_grad_sync, wrap
from aiprod_core.training.task import EMA, TrainTask, full_tensor, step_generator

#: folder: at the end of ``fit`` every rank writes ``rank<N>.json`` there (sha256 of its full weights, mean
#: step time): how the distributed tests check that the ranks ended identical
DIGEST_ENV = "AIPROD_TRAIN_DIGEST"


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class StepContext:
    """What ``train_step`` sees: wrapped and raw modules, autocast and the per-module optimizer step."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        #: call modules through these (DDP / FSDP2 wrappers behind a proxy; the plain module in one process)
        self.modules: dict[str, Any] = {}
        #: the modules themselves (state dicts, attributes; a forward whose gradients are discarded)
        self.raw: dict[str, nn.Module] = {}
        self.step = 0
        self.device = trainer.device
        self.rank = trainer.rank
        self.world_size = trainer.world_size
        self.strategy = trainer.strategy
        self.config = trainer.cfg
        self.micro = 0
        self.accum = trainer.cfg.grad_accum_steps
        self._extra: dict[str, float] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.mixed_precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward_step(self, name: str, loss: torch.Tensor, retain_graph: bool = False) -> float:
        """Gradients of ``loss`` into module ``name`` only → (last micro-batch) clip → AdamW step → LR
        step → EMA; returns the grad norm (0.0 on accumulating micro-batches).

        Gradients the same backward leaves in the *other* trainable modules (the discriminator inside the
        generator's loss) are discarded: each module's update sees only its own loss, with gradient
        accumulation too."""
        t = self.trainer
        opt = t.optimizers[name]
        if self.micro == 0:
            opt.zero_grad(set_to_none=True)
        others = [p for n, ps in t.trainable.items() if n != name for p in ps]
        stash = [p.grad for p in others]
        for p in others:
            p.grad = None
        (loss / self.accum if self.accum > 1 else loss).backward(retain_graph=retain_graph)
        for p, g in zip(others, stash):
            p.grad = g
        if self.micro != self.accum - 1:
            return 0.0  # accumulate; gradients are synchronised and applied on the last micro-batch
        params = [p for p in t.trainable[name] if p.grad is not None]
        norm = 0.0
        if self.config.grad_clip is not None and params:
            total = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)
        opt.step()
        t.schedulers[name].step()
        if name in t.emas:
            t.emas[name].update(self.raw[name])
        return norm

    def log(self, metrics: dict[str, float]) -> None:
        self._extra.update(metrics)


class Trainer(Checkpointing):
    """One loop for every recipe: fp32 masters + AdamW per module with warmup and a schedule, bf16 compute,
    clipping, EMA, atomic checkpoints with exact resume, rank-mean JSONL metrics, a progress bar, and
    DDP / FSDP2 under ``torchrun``."""

    def __init__(self, cfg: TrainConfig, task: TrainTask):
        self.cfg = cfg
        self.task = task
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.rank, self.world_size, self.device, self.strategy = init_distributed(cfg.device, cfg.strategy)
        self.history: list[dict[str, Any]] = []  # logged records: rank means
        self.local_history: list[dict[str, float]] = []  # this rank's own step metrics, before the mean
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.emas: dict[str, EMA] = {}
        self.wrappers: dict[str, nn.Module] = {}
        self.trainable: dict[str, list[torch.nn.Parameter]] = {}
        self.step_times: list[float] = []
        self.ctx = StepContext(self)
        self._setup()

    # -- setup -------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        modules = self.task.modules()
        scales = self.task.lr_scale()
        for name, module in modules.items():
            on_meta = any(t.is_meta for t in [*module.parameters(), *module.buffers()])
            fp32_masters(module, cfg.mixed_precision)
            if on_meta:
                # large models: build on meta, shard first, then materialise only this rank's part
                wrapper, called = wrap(name, module, self.strategy, self.task, self.device, cfg.mixed_precision) \
                    if self.strategy == "fsdp2" else (None, module)
                module.to_empty(device=self.device)
                self.task.init_weights(name, module, self.ctx)
                fp32_masters(module, cfg.mixed_precision)
                if self.strategy == "ddp":
                    wrapper, called = wrap(name, module, "ddp", self.task, self.device, cfg.mixed_precision)
            else:
                module.to(self.device)
                if self.world_size > 1:
                    for t in [*module.parameters(), *module.buffers()]:
                        dist.broadcast(t.data, src=0)  # identical start on every rank
                wrapper, called = wrap(name, module, self.strategy, self.task, self.device, cfg.mixed_precision)
            if wrapper is not None:
                self.wrappers[name] = wrapper
            self.ctx.raw[name] = module
            self.ctx.modules[name] = called
            params = [p for p in module.parameters() if p.requires_grad]
            if not params:
                continue
            self.trainable[name] = params
            self.optimizers[name] = torch.optim.AdamW(
                params, lr=cfg.lr * scales.get(name, 1.0), betas=cfg.betas, weight_decay=cfg.weight_decay
            )
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(self.optimizers[name], lr_lambda(cfg))
            if cfg.ema_decay is not None:
                self.emas[name] = EMA(module, cfg.ema_decay)

    # -- loop ----------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming when a checkpoint exists). ``stop_after`` simulates a kill."""
        cfg = self.cfg
        start = 0
        self.remove_stale()
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
        # one optimizer: skip the reduction on accumulating micro-batches. Several (a GAN): keep it, so each
        # backward's gradients are reduced and the other modules' can be discarded right away.
        skip_sync = cfg.grad_accum_steps > 1 and len(self.optimizers) == 1
        for step in range(start, cfg.max_steps):
            if stop_after is not None and step >= stop_after:
                bar.close()
                return {"step": step, "stopped": True, **last}
            self.ctx.step = step
            t_step = time.perf_counter()
            for m in self.ctx.raw.values():
                m.train()
            metrics: dict[str, float] = {}
            for micro in range(cfg.grad_accum_steps):
                self.ctx.micro = micro
                if skip_sync:
                    set_grad_sync(self.wrappers, micro == cfg.grad_accum_steps - 1)
                draw = step * cfg.grad_accum_steps + micro  # == step without accumulation
                batch = to_device(self.task.make_batch(step, step_generator(cfg.seed, draw, self.rank)), self.device)
                out = dict(self.task.train_step(batch, self.ctx))
                out.update(self.ctx._extra)
                self.ctx._extra = {}
                for k, v in out.items():
                    metrics[k] = metrics.get(k, 0.0) + float(v) / cfg.grad_accum_steps
            self.local_history.append({"step": step + 1, **metrics})
            metrics = rank_mean(metrics, self.world_size, self.device)
            self.step_times.append(time.perf_counter() - t_step)
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
        self.check_in_sync()
        return {"step": cfg.max_steps, **last}

    def weights_digest(self, full: bool = True, buffers: bool = True) -> str:
        """sha256 of every module's state (``full``: gathered DTensors, a collective; else local shards;
        ``buffers``: running statistics too, which DDP lets each rank update after its broadcast)."""
        h = hashlib.sha256()
        for name in sorted(self.ctx.raw):
            module = self.ctx.raw[name]
            items = module.state_dict().items() if buffers else ((k, p.detach()) for k, p in module.named_parameters())
            for key, value in sorted(items, key=lambda kv: kv[0]):
                t = full_tensor(value) if full else value.detach().cpu()
                h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def check_in_sync(self) -> None:
        """DDP: every rank must end with the same weights (a cheap local hash, compared). With
        ``AIPROD_TRAIN_DIGEST`` set, every rank writes its full-weight digest and step time there."""
        folder = os.environ.get(DIGEST_ENV)
        if folder:
            digest = self.weights_digest(full=True)
            times = self.step_times[1:] or self.step_times
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"rank{self.rank}.json").write_text(json.dumps({
                "rank": self.rank, "world_size": self.world_size, "strategy": self.strategy, "digest": digest,
                "steps": len(self.step_times), "step_s": sum(times) / max(1, len(times)),
                "dtypes": sorted({str(p.dtype) for ps in self.trainable.values() for p in ps}),
                "optimizer_dtypes": sorted({str(v.dtype) for o in self.optimizers.values() for s in o.state.values()
                                            for v in s.values() if isinstance(v, torch.Tensor) and v.numel() > 1}),
                "history": self.history}))
        if self.world_size == 1 or self.strategy != "ddp":
            return  # FSDP2: each parameter shard lives on one rank only
        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, self.weights_digest(full=False, buffers=False))
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks ended with different weights ({self.world_size} ranks, digests "
                               f"{[d[:8] for d in digests]}): a forward bypassed the DDP wrapper")

    def _evaluate(self) -> dict[str, float]:
        for m in self.ctx.raw.values():
            m.eval()
        self.ctx.micro = 0
        with torch.no_grad():
            out = self.task.evaluate(self.ctx)
        out = rank_mean({k: float(v) for k, v in out.items()}, self.world_size, self.device)
        return {f"eval/{k}": v for k, v in out.items()}


def iterate_with_progress(it, **kw) -> Iterator:
    from tqdm import tqdm

    quiet = os.environ.get("AIPROD_QUIET", "") not in ("", "0")
    return iter(tqdm(it, disable=quiet, **kw))
