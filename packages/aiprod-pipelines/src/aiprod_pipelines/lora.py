"""LoRA at inference: the adapters ``aiprod train`` exports (peft format), applied to a loaded component.

A LoRA run of the ``shdt`` recipe writes ``<run>/final/lora/``: ``adapter_model.safetensors`` (peft
names, ``<module>.lora_A.<adapter>.weight [r, in]`` and ``<module>.lora_B.<adapter>.weight [out, r]``)
and ``adapter_config.json`` (``r``, ``lora_alpha``, ``target_modules``). The folder is verified
against its ``MANIFEST.json`` like any weights folder (``aiprod manifest DIR`` writes one).

Applied unfused, each adapted ``Linear``'s weight is parametrized as ``W + scale * alpha / r * B A``
(Hu et al. 2021, https://arxiv.org/abs/2106.09685; a parametrization rather than a forward hook, so a
model reading ``.weight`` directly sees it too); :meth:`LoadedLora.fuse` folds
``W += scale * alpha / r * B @ A`` into the weights (no extra matmuls while sampling) and
:meth:`LoadedLora.unfuse` takes it out again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from aiprod_core.errors import AiprodError

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?:(?P<adapter>[^.]+)\.)?weight$")


class _LoraDelta(nn.Module):
    """Parametrization ``W -> W + k B A``: every read of the weight sees the adapter, however the model
    uses it (a module call, or ``F.linear`` on a slice of ``.weight``)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, k: float):
        super().__init__()
        self.register_buffer("a", a, persistent=False)
        self.register_buffer("b", b, persistent=False)
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.k * (self.b.to(w.device, torch.float32) @ self.a.to(w.device, torch.float32))).to(w.dtype)


def _raw_weight(linear: nn.Module) -> torch.Tensor:
    """The stored weight tensor, under any parametrizations."""
    if parametrize.is_parametrized(linear, "weight"):
        return linear.parametrizations.weight.original
    return linear.weight


@dataclass
class LoadedLora:
    """One adapter applied to ``module``; ``layers`` maps a Linear's name to its ``(A, B)`` pair."""

    module: nn.Module
    path: Path
    scale: float
    factor: float  # alpha / r
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    fused: bool = False
    _deltas: dict[str, _LoraDelta] = field(default_factory=dict)

    def attach(self) -> None:
        """Unfused: a weight parametrization on every adapted Linear."""
        for name, (a, b) in self.layers.items():
            delta = _LoraDelta(a, b, self.scale * self.factor)
            parametrize.register_parametrization(self.module.get_submodule(name), "weight", delta, unsafe=True)
            self._deltas[name] = delta

    def detach(self) -> None:
        for name, delta in self._deltas.items():
            linear = self.module.get_submodule(name)
            plist = linear.parametrizations.weight
            idx = next(i for i, m in enumerate(plist) if m is delta)
            if len(plist) == 1:
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=False)
            else:
                del plist[idx]
        self._deltas = {}

    @torch.no_grad()
    def _add(self, sign: float) -> None:
        for name, (a, b) in self.layers.items():
            w = _raw_weight(self.module.get_submodule(name))
            d = (sign * self.scale * self.factor) * (b.float() @ a.float()).to(w.device)
            w.copy_((w.float() + d).to(w.dtype))

    def fuse(self) -> None:
        """Fold ``W += scale * alpha / r * B A`` into the stored weights (no extra work while sampling)."""
        if self.fused:
            return
        for name in self.layers:
            w = _raw_weight(self.module.get_submodule(name))
            if w.dtype.itemsize == 1 or type(w.data) is not torch.Tensor:
                raise AiprodError(f"{self.path}: {name} holds quantized (FP8) weights; a LoRA is applied unfused there")
        self.detach()
        self._add(+1.0)
        self.fused = True

    def unfuse(self) -> None:
        if not self.fused:
            return
        self._add(-1.0)
        self.fused = False
        self.attach()

    def remove(self) -> None:
        self.unfuse()
        self.detach()


def read_adapter(path: str | Path, *, force_verify: bool = False) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Verify the folder against its manifest, then read ``adapter_config.json`` and the tensors."""
    from safetensors.torch import load_file

    from aiprod_core.store import verify

    folder = Path(os.path.expanduser(str(path)))
    if folder.is_file() and folder.name == ADAPTER_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise AiprodError(f"{folder}: LoRA folder not found (expected {ADAPTER_FILE} + {ADAPTER_CONFIG})")
    for name in (ADAPTER_FILE, ADAPTER_CONFIG):
        if not (folder / name).is_file():
            raise AiprodError(f"{folder}: no {name}; a LoRA folder is what `aiprod train` exports to <run>/final/lora")
    verify(folder, force=force_verify)
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    except (ValueError, KeyError, TypeError) as err:
        raise AiprodError(f"{folder / ADAPTER_CONFIG}: expected 'r' and 'lora_alpha' ({err})") from None
    if cfg.get("peft_type", "LORA") != "LORA" or r < 1:
        raise AiprodError(f"{folder / ADAPTER_CONFIG}: expected a peft LORA adapter with r >= 1")
    return {**cfg, "r": r, "lora_alpha": alpha}, load_file(str(folder / ADAPTER_FILE))


def load_lora(module: nn.Module, path: str | Path, scale: float = 1.0, *, force_verify: bool = False) -> LoadedLora:
    """Apply the adapter at ``path`` to ``module`` (unfused); every tensor must name one of its Linears."""
    cfg, tensors = read_adapter(path, force_verify=force_verify)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise AiprodError(f"{path}: {key!r} is not a peft LoRA tensor name (<module>.lora_A|B.<adapter>.weight)")
        pairs.setdefault(m["module"], {})[m["ab"]] = t
    if not pairs:
        raise AiprodError(f"{path}: {ADAPTER_FILE} holds no LoRA tensor")
    layers = {}
    for name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise AiprodError(f"{path}: {name}: lora_A and lora_B must come in pairs")
        target = name.removeprefix("base_model.model.")
        try:
            linear = module.get_submodule(target)
        except AttributeError:
            raise AiprodError(f"{path}: {target!r} is not a module of {type(module).__name__}; "
                              f"the adapter was trained for another model") from None
        a, b = ab["A"], ab["B"]
        weight = getattr(linear, "weight", None)
        if not isinstance(linear, nn.Linear) or weight is None:
            raise AiprodError(f"{path}: {target!r} is a {type(linear).__name__}, expected a Linear")
        if a.shape != (cfg["r"], weight.shape[1]) or b.shape != (weight.shape[0], cfg["r"]):
            raise AiprodError(f"{path}: {target}: A {list(a.shape)} / B {list(b.shape)} do not fit the weight "
                              f"{list(weight.shape)} with r = {cfg['r']}")
        layers[target] = (a, b)
    lora = LoadedLora(module, Path(path), float(scale), cfg["lora_alpha"] / cfg["r"], layers)
    lora.attach()
    return lora
