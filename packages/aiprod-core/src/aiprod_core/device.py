"""Device, dtype and seeding helpers. Device and dtype are chosen, never assumed."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from aiprod_core.errors import ConfigError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → the first CUDA device when available (then Apple MPS), else CPU."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError([f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps"]) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError([f"device {name!r}: CUDA is not available on this machine (use auto or cpu)"])
    return dev


def pick_dtype(name: str | torch.dtype | None = "auto", device: torch.device | None = None) -> torch.dtype:
    """``auto`` → bfloat16 on a GPU that supports it, float32 otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "", "auto"):
        device = device or pick_device("auto")
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError([f"dtype {name!r}: expected auto, float32, bfloat16 or float16"])
    return _DTYPES[name]


def backend(device: str | torch.device):
    """torch's module for an accelerator's device type (``torch.cuda``, ``torch.xpu``, ``torch.mps``...);
    None for the CPU (and for types torch has no such module for)."""
    kind = torch.device(device).type
    return None if kind in ("cpu", "meta") else getattr(torch, kind, None)


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued kernels (timings); a no-op on the CPU."""
    mod = backend(device)
    if mod is not None and hasattr(mod, "synchronize"):
        mod.synchronize()


def device_memory(device: str | torch.device):
    """The backend module when it tracks its own allocations (``memory_allocated``,
    ``max_memory_allocated``, ``reset_peak_memory_stats``), else None: measure the process RSS instead."""
    mod = backend(device)
    needed = ("memory_allocated", "max_memory_allocated", "reset_peak_memory_stats")
    return mod if mod is not None and all(hasattr(mod, n) for n in needed) else None


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed python, numpy and torch (all devices); optionally ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state a resumed run needs (python, numpy, torch CPU and CUDA)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    # plain tensors and builtins only, so checkpoints load with torch.load(weights_only=True)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
