"""Sharded start for SHDT: build on the meta device, shard, then fill only what each rank holds.

At 19.1B parameters a whole model is 76 GB in fp32; built on every rank of a node it does not fit the
host. Here a model built under ``torch.device("meta")`` is sharded (FSDP2, :mod:`aiprod_shdt.parallelize`),
moved with ``to_empty`` so that each rank allocates its shards only, and then filled:

- :func:`init_parameters_` — the random initialisation of :meth:`SHDT.reset_parameters` (Xavier-uniform
  linears and first head convolution, zero biases, AdaLN-zero modulation and output, zero last head
  convolution, N(0, 0.02) timestep input; peft LoRA: Kaiming
  A, zero B), computed **row block by row block**: the values of rows ``[i, i + rows)`` of a parameter are
  drawn from a generator seeded with ``(seed, parameter name, i // rows)`` alone, so a rank generates just
  the blocks its shard touches and the weights are the same whatever the world size;
- :func:`load_shards_` — a component folder (verified first), each rank reading from the safetensors
  files only the rows it holds (``safe_open(...).get_slice``), so no rank ever holds the whole model.

Both work on plain tensors too (one process: every row is "held"). Only row-wise (``Shard(0)``) or
replicated placements are supported, which is what FSDP2 uses.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

#: elements per random block (a block is a whole number of rows): the unit of world-size independence
BLOCK_ELEMENTS = 1 << 20


def init_rule(model: nn.Module, name: str) -> tuple[str, float]:
    """``(kind, scale)`` of parameter ``name``: ("zeros"|"ones", 0), ("uniform", bound) or ("normal", std).
    Mirrors :meth:`aiprod_shdt.model.SHDT.reset_parameters` (a test checks they agree)."""
    from aiprod_shdt.model import Modulation

    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    parent = model.get_submodule(module_name.rpartition(".")[0]) if "." in module_name else model
    if ".lora_A." in name:  # peft: kaiming_uniform_(a=sqrt(5)) -> bound 1/sqrt(fan_in)
        return "uniform", 1.0 / math.sqrt(module.in_features)
    if ".lora_B." in name:
        return "zeros", 0.0
    if isinstance(module, nn.RMSNorm) or isinstance(module, nn.LayerNorm):
        return ("ones", 0.0) if leaf == "weight" else ("zeros", 0.0)
    if isinstance(module, nn.Conv3d):  # the convolution head (OutConv.reset_parameters)
        if leaf == "bias" or module_name.endswith("conv2"):
            return "zeros", 0.0
        field = math.prod(module.kernel_size)
        return "uniform", math.sqrt(6.0 / ((module.in_channels + module.out_channels) * field))
    if not isinstance(module, nn.Linear):
        raise ValueError(f"no initialisation rule for parameter {name!r} ({type(module).__name__})")
    plain = module_name.replace(".base_layer", "")
    if leaf == "bias" or isinstance(parent, Modulation) or plain.startswith("final.linear"):
        return "zeros", 0.0
    if plain == "time_in.in_layer":
        return "normal", 0.02
    return "uniform", math.sqrt(6.0 / (module.in_features + module.out_features))  # Xavier


def _block_seed(seed: int, name: str, block: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{name}:{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _local(p: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This rank's part of ``p`` and the global index of its first row."""
    if hasattr(p, "device_mesh"):  # DTensor (FSDP2)
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        for pl in p.placements:
            if not (isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim == 0)):
                raise ValueError(f"placement {pl} is not supported (row shards or replicas only)")
        _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
        return p.to_local(), (offset[0] if p.dim() else 0)
    return p, 0


def _row_blocks(shape: torch.Size, start: int, count: int) -> Iterator[tuple[int, int, int]]:
    """``(block, first row, rows)`` of the random blocks covering rows ``[start, start + count)``."""
    rows = shape[0] if len(shape) else 1
    per_row = max(1, math.prod(shape[1:]))
    per_block = max(1, BLOCK_ELEMENTS // per_row)
    for block in range(start // per_block, (start + count - 1) // per_block + 1 if count else 0):
        first = block * per_block
        yield block, first, min(per_block, rows - first)


@torch.no_grad()
def init_parameters_(model: nn.Module, seed: int, names: set[str] | None = None,
                     generator_device: str | torch.device = "cpu") -> None:
    """Fill ``model``'s parameters (already materialised, e.g. by ``to_empty``; plain or FSDP2 shards)
    with their initial values, computing only the rows this rank holds. ``names`` limits it to some
    parameters. Values depend on ``seed``, the parameter name and ``generator_device``'s type (the CPU
    and CUDA generators differ), never on the world size."""
    gen_device = torch.device(generator_device)
    for name, p in model.named_parameters():
        if names is not None and name not in names:
            continue
        kind, scale = init_rule(model, name)
        local, start = _local(p)
        if kind in ("zeros", "ones"):
            local.fill_(1.0 if kind == "ones" else 0.0)
            continue
        count = local.shape[0] if local.dim() else 1
        flat = local.reshape(count, -1) if local.dim() else local.reshape(1, 1)
        for block, first, rows in _row_blocks(p.shape, start, count):
            g = torch.Generator(device=gen_device).manual_seed(_block_seed(seed, name, block))
            values = torch.empty(rows, flat.shape[1], device=gen_device, dtype=torch.float32)
            if kind == "uniform":
                values.uniform_(-scale, scale, generator=g)
            else:
                values.normal_(0.0, scale, generator=g)
            lo, hi = max(first, start), min(first + rows, start + count)
            flat[lo - start : hi - start].copy_(values[lo - first : hi - first])


@torch.no_grad()
def load_shards_(model: nn.Module, folder: str | Path, verify: bool = True, missing_ok: tuple[str, ...] = (),
                 convert: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> list[str]:
    """Fill ``model``'s parameters from an SHDT component folder, reading only this rank's rows of each
    tensor. peft-wrapped layers read their ``base_layer`` from the plain names. Returns the names of
    parameters not in the folder; that is an error unless each contains one of ``missing_ok`` (e.g.
    ``("lora_",)``: adapters that :func:`init_parameters_` then fills). ``convert`` maps a stored name to a
    function of the whole stored tensor giving the model's (e.g. :func:`patch_converters`): those tensors are
    read whole (they are the small patch embedding and output layer), converted, then cut to this rank's rows."""
    from safetensors import safe_open

    from aiprod_core import store
    from aiprod_core.errors import AiprodError
    from aiprod_core.weights import weight_files

    folder = Path(folder)
    if verify:
        store.verify(folder)
    files, ties = weight_files(folder)
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(folder / f), framework="pt") as fh:
            where.update({k: folder / f for k in fh.keys()})
    where.update({alias: where[target] for alias, target in ties.items() if target in where})
    missing = []
    handles: dict[Path, object] = {}
    try:
        for name, p in model.named_parameters():
            key = name.replace(".base_layer.", ".")
            key = ties.get(key, key)
            if key not in where:
                missing.append(name)
                continue
            fh = handles.get(where[key]) or handles.setdefault(where[key], safe_open(str(where[key]), framework="pt"))
            sl = fh.get_slice(key)
            if convert and key in convert:
                sl = _Whole(convert[key](sl[:]))
            if tuple(sl.get_shape()) != tuple(p.shape):
                raise AiprodError(f"{where[key]}: {key} has shape {tuple(sl.get_shape())}, the model expects {tuple(p.shape)}")
            local, start = _local(p)
            if local.dim() == 0:
                local.copy_(sl[()] if not sl.get_shape() else sl[:])
            elif local.shape[0]:
                local.copy_(sl[start : start + local.shape[0]])
    finally:
        handles.clear()
    bad = [n for n in missing if not any(m in n for m in missing_ok)]
    if bad:
        raise AiprodError(f"{folder}: {len(bad)} parameters are not in the weights (e.g. {bad[0]!r})")
    return missing


class _Whole:
    """A converted tensor behind the two calls :func:`load_shards_` makes on a safetensors slice."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def get_shape(self) -> list[int]:
        return list(self.tensor.shape)

    def __getitem__(self, index):
        return self.tensor[index]


def patch_converters(old_patch: int, new_patch: int, channels: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Stored tensors of a ``old_patch`` model → those of a ``new_patch = k * old_patch`` one (the rest of the
    model is unchanged: same token grid on k x the latent's side). The new patch embedding reads the k x k
    average of each latent pixel block with the old embedding, and the output layer repeats each of the old
    output patch's pixels k x k: the new model on a latent upsampled k x (nearest) computes the old model on
    the original latent, upsampled. A model trained at one resolution so starts at k x the pixels with the
    same tokens (``model.config: {patch_size: ...}`` on top of ``init_weights``)."""
    if new_patch % old_patch or new_patch < old_patch:
        raise ValueError(f"patch_size {new_patch} is not a multiple of {old_patch}")
    k = new_patch // old_patch
    idx = torch.tensor([(c * old_patch + i // k) * old_patch + j // k
                        for c in range(channels) for i in range(new_patch) for j in range(new_patch)])
    return {"video_in.weight": lambda w: w[:, idx] / (k * k),
            "final.linear.weight": lambda w: w[idx], "final.linear.bias": lambda b: b[idx]}


def materialize(model: nn.Module, device: str | torch.device, seed: int = 0, dtype: torch.dtype | None = None,
                generator_device: str | torch.device | None = None) -> nn.Module:
    """A meta-device model (plain or sharded) allocated on ``device`` directly in ``dtype`` (never a
    float32 copy) and initialised by :func:`init_parameters_`, on ``device``'s generator unless told otherwise."""
    if dtype is not None:
        model.to(dtype)
    model.to_empty(device=device)
    init_parameters_(model, seed, generator_device=generator_device or device)
    return model
