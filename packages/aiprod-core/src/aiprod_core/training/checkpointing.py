"""Checkpoints and metrics files of a run, and what a long run meets: a killed write, a full disk.

- ``step-NNNNNNNN.pt`` (full: gathered on rank 0) or ``step-NNNNNNNN.dcp/`` (sharded: every rank writes its
  shards through ``torch.distributed.checkpoint``; on several nodes ``output_dir`` must be on a filesystem
  that every node sees). Both are written under a temporary name and renamed once complete.
- At start, temporary files left by a killed write are removed (:meth:`Checkpointing.remove_stale`).
- A full disk (``ENOSPC``) stops the run with one line on every rank; the temporary file is removed and the
  previous checkpoint is untouched, so the run resumes from it once space is freed.
- ``metrics.jsonl``: a torn last line (a kill mid-write) is dropped when the run resumes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from aiprod_core.device import rng_state, set_rng_state
from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_path
from aiprod_core.training.config import EXPORT_DTYPES
from aiprod_core.training.parallel import any_rank
from aiprod_core.training.task import full_tensor

CKPT_RE = re.compile(r"^step-(\d{8})\.(pt|dcp)$")
STALE_RE = re.compile(r"^\.step-\d{8}\.(pt|dcp)\..*tmp$")


def frozen_names(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not p.requires_grad}


def _is_enospc(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


class Checkpointing:
    """Mixin of :class:`aiprod_core.training.Trainer`: save / load / prune / export."""

    cfg: Any
    ctx: Any
    rank: int
    world_size: int
    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    emas: dict[str, Any]
    out: Path
    ckpt_dir: Path

    # -- housekeeping -----------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        return sorted(p for p in self.ckpt_dir.iterdir() if CKPT_RE.search(p.name))

    def remove_stale(self) -> list[Path]:
        """Rank 0 removes temporary checkpoint files a killed write left behind; returns them."""
        stale: list[Path] = []
        if self.rank == 0 and self.ckpt_dir.is_dir():
            for p in self.ckpt_dir.iterdir():
                if STALE_RE.match(p.name):
                    stale.append(p)
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if self.world_size > 1:
            dist.barrier()
        return stale

    def _prune(self) -> None:
        for old in self.checkpoints()[: -self.cfg.keep_checkpoints]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)

    def _rng_all(self) -> list[Any]:
        rng = rng_state()
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng)
            return gathered
        return [rng]

    def _disk_full(self, failed: BaseException | None, path: Path) -> None:
        """Every rank learns whether any rank failed to write; ENOSPC becomes one line."""
        if not any_rank(failed is not None, self.world_size, self.device):
            return
        previous = [p for p in self.checkpoints() if p != path]
        kept = f"the previous checkpoint {previous[-1]} is kept" if previous else "no earlier checkpoint exists"
        if failed is None:
            raise AiprodError(f"{path}: another rank failed to write the checkpoint; {kept}")
        if _is_enospc(failed):
            raise AiprodError(f"{path}: no space left on device while writing the checkpoint; {kept}; "
                              "free space and run again to resume") from None
        raise failed

    # -- full format ------------------------------------------------------------------------
    def _module_states(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        models, optims = {}, {}
        for name, module in self.ctx.raw.items():
            if name in self.optimizers:
                models[name], optims[name] = get_state_dict(module, self.optimizers[name], options=opts)
                # frozen parameters (a LoRA base, a fixed teacher) are rebuilt by the task, not checkpointed
                frozen = frozen_names(module)
                models[name] = {k: v for k, v in models[name].items() if k not in frozen}
            else:
                models[name] = {k: full_tensor(v) for k, v in module.state_dict().items()}
        return models, optims

    def save_checkpoint(self, step: int) -> Path | None:
        if self.cfg.checkpoint_format == "sharded":
            return self._save_sharded(step)
        models, optims = self._module_states()
        emas = {n: e.state_dict() for n, e in self.emas.items()}
        rng_all = self._rng_all()
        path = self.ckpt_dir / f"step-{step:08d}.pt"
        failed: BaseException | None = None
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
            try:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a killed / failed write leaves
                    torch.save(state, f)  # the previous files as they were; a Python file keeps ENOSPC's errno
                self._prune()
            except (OSError, RuntimeError) as err:
                failed = err
        self._disk_full(failed, path)
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
                frozen = frozen_names(module)
                expected = set(module.state_dict()) - frozen
                got = set(state["modules"][name])
                if got != expected:
                    raise AiprodError(f"{path}: module {name!r} does not match the checkpoint "
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

    # -- sharded format ---------------------------------------------------------------------
    def _sharded_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        state: dict[str, Any] = {}
        for name, module in self.ctx.raw.items():
            if name in self.optimizers:
                msd, osd = get_state_dict(module, self.optimizers[name])
                frozen = frozen_names(module)
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
        failed: BaseException | None = None
        try:
            dcp.save(self._sharded_state(), checkpoint_id=str(tmp))
        except Exception as err:  # noqa: BLE001 - dcp wraps the OSError of any rank
            failed = err
        rng_all = self._rng_all()
        if failed is None and self.rank == 0:
            extra = {"step": step, "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                     "rng": rng_all, "world_size": self.world_size}
            try:
                torch.save(extra, tmp / "trainer.pt")
                os.replace(tmp, final)
                self._prune()
            except OSError as err:
                failed = err
        if any_rank(failed is not None, self.world_size, self.device) and self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        self._disk_full(failed, final)
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
                opts = StateDictOptions(strict=not frozen_names(module))
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

    # -- export ---------------------------------------------------------------------------
    @property
    def export_dtype(self) -> torch.dtype:
        return EXPORT_DTYPES[self.cfg.export_dtype]

    def full_state(self, name: str) -> dict[str, torch.Tensor]:
        """Module ``name``'s full state dict on the CPU (EMA weights when enabled); a collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        module = self.ctx.raw[name]
        full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if name in self.emas:
            full.update(self.emas[name].state_dict())
        return full

    def save_component(self, name: str, folder: Path) -> None:
        """Save module ``name`` as a component folder in ``export_dtype`` (EMA weights when enabled);
        rank 0 writes."""
        module = self.ctx.raw[name]
        full = self.full_state(name)
        if self.rank == 0:
            with torch.device("meta"):
                fresh = type(module).from_config(module.config)  # type: ignore[attr-defined]
            fresh.load_state_dict(full, assign=True)
            fresh.save_pretrained(folder, dtype=self.export_dtype)
        if self.world_size > 1:
            dist.barrier()

    # -- metrics file -------------------------------------------------------------------------
    def _metrics_file(self) -> Path:
        return self.out / "metrics.jsonl"

    def _truncate_metrics(self, step: int) -> None:
        """Keep the records up to ``step``; a torn line (a kill mid-write) is dropped with a warning."""
        path = self._metrics_file()
        if self.rank != 0 or not path.is_file():
            return
        kept = []
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                print(f"{path}:{i}: dropped an unreadable (torn) line", file=sys.stderr)
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(k + "\n" for k in kept))

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self._metrics_file(), "a") as f:
            f.write(json.dumps(record) + "\n")
