"""FP8 (E4M3) weight quantization of component folders, shard by shard.

Two backends behind one interface (kind ``quantizer``):

- ``torch-fp8`` (default): torch-native ``float8_e4m3fn`` weights with per-output-channel float32
  scales, upcast at compute by :class:`FP8Linear`. No dependency beyond torch, so it works after a
  plain ``pip install aiprod-core``.
- ``quanto``: optimum-quanto ``qfloat8`` weights, saved with quanto's state-dict layout
  (``weight._data``, ``weight._scale``, ...) and ``quantization_map.json``; loaded with
  ``optimum.quanto.requantize``. An optional extra (``pip install 'aiprod-core[quanto]'``): optimum-quanto
  is in maintenance mode upstream and the core keeps heavy libraries out of its dependencies.

Only ``nn.Linear`` weights are quantized. Layers that must stay in high precision (norms,
embeddings, modulation, final projection) are excluded by name patterns: the defaults
below plus the component class's ``quantization_exclude`` plus the caller's list.

Streaming: tensors are read one at a time from the input shards and written into output
shards of at most ``max_shard_size``, so peak memory is about one output shard plus one
tensor, whatever the checkpoint size.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from aiprod_core import store
from aiprod_core.errors import AiprodError
from aiprod_core.weights import CONFIG, INDEX, WEIGHTS, parse_size, read_config

QMAP = "quantization_map.json"
FP8_MAX = 448.0  # largest finite float8_e4m3fn
DEFAULT_EXCLUDE = ["*norm*", "*embed*", "*modulation*", "*adaln*", "*final*", "*proj_out*", "*head*"]


def _matches(name: str, patterns: list[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatch(low, p.lower()) for p in patterns)


def _component_class(folder: Path):
    from aiprod_core.registry import get_registry

    meta = read_config(folder).get("_aiprod") or {}
    if not meta.get("name"):
        raise AiprodError(f"{folder / CONFIG}: no '_aiprod' section; not a component folder")
    return get_registry().component(meta.get("kind"), meta["name"]).load_factory()


def _meta_module(folder: Path) -> nn.Module:
    cls = _component_class(folder)
    cfg = cls.load_config(folder)
    with torch.device("meta"):
        return cls.from_config(cfg)


def linear_targets(module: nn.Module, exclude: list[str]) -> dict[str, tuple[int, int]]:
    """Names of the nn.Linear modules to quantize → (out_features, in_features)."""
    return {
        name: (m.out_features, m.in_features)
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear) and not _matches(name, exclude)
    }


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _read_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the tensors of one file with plain reads, one at a time.

    safetensors' own loader memory-maps the file, and every page it touches then counts
    towards the process's resident memory until the file is closed; reading each tensor
    into its own buffer keeps the peak at one tensor, whatever the file size.
    """
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        start = 8 + n
        for key, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            buf = bytearray(end - begin)
            f.readinto(buf)
            dtype = _ST_DTYPES[info["dtype"]]
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            yield key, t.reshape(info["shape"])


def _iter_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from aiprod_core.weights import weight_files

    files, _ = weight_files(folder)  # shards confined to the folder (issue 19)
    for name in files:
        yield from _read_safetensors(folder / name)


class _ShardWriter:
    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.current: dict[str, torch.Tensor] = {}
        self.size = 0
        self.files: list[tuple[str, list[str]]] = []
        self.total = 0

    def add(self, key: str, t: torch.Tensor) -> None:
        nbytes = t.numel() * t.element_size()
        if self.current and self.size + nbytes > self.max_bytes:
            self.flush()
        self.current[key] = t.contiguous()
        self.size += nbytes
        self.total += nbytes

    def flush(self) -> None:
        if not self.current:
            return
        name = f"part-{len(self.files):05d}.safetensors"
        save_file(self.current, str(self.folder / name), metadata={"format": "pt"})
        self.files.append((name, list(self.current)))
        self.current, self.size = {}, 0

    def close(self) -> None:
        self.flush()
        if len(self.files) == 1:
            (self.folder / self.files[0][0]).rename(self.folder / WEIGHTS)
            return
        n = len(self.files)
        weight_map = {}
        for i, (name, keys) in enumerate(self.files, 1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            (self.folder / name).rename(self.folder / final)
            weight_map.update({k: final for k in keys})
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")


class Quantizer:
    """Base: stream the folder, quantize Linear weights, write the new folder atomically."""

    name = "base"

    def quantize_weight(self, key: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def qmap_entry(self) -> dict[str, str]:
        raise NotImplementedError

    def quantize_folder(self, src: Path, dst: Path, *, weights: str = "fp8", exclude: list[str] | None = None,
                        default_exclude: bool = True, max_shard_size: int | str = "2GB", overwrite: bool = False,
                        progress: bool = True) -> Path:
        """``exclude`` patterns add to the defaults (ours and the component's ``quantization_exclude``);
        ``default_exclude=False`` keeps only ``exclude``."""
        src, dst = Path(src), Path(dst)
        if weights != "fp8":
            raise AiprodError(f"--weights {weights!r}: only fp8 (E4M3) is supported")
        store.verify(src)
        config = read_config(src)
        if (config.get("_aiprod") or {}).get("quantization"):
            raise AiprodError(f"{src}: already quantized")
        if dst.exists() and not overwrite:
            raise AiprodError(f"{dst}: already exists; pass --overwrite to replace it")
        cls = _component_class(src)
        defaults = DEFAULT_EXCLUDE + list(getattr(cls, "quantization_exclude", [])) if default_exclude else []
        patterns = defaults + list(exclude or [])
        targets = linear_targets(_meta_module(src), patterns)
        qmap = {name: self.qmap_entry() for name in targets}
        weight_keys = {f"{name}.weight": name for name in targets}
        from tqdm import tqdm

        with store.atomic_dir(dst) as tmp:
            writer = _ShardWriter(tmp, parse_size(max_shard_size))
            bar = tqdm(desc=f"quantize ({self.name})", unit="tensor", disable=not progress or store._quiet())
            for key, t in _iter_tensors(src):
                if key in weight_keys:
                    for k, v in self.quantize_weight(key, t).items():
                        writer.add(k, v)
                else:
                    writer.add(key, t)
                del t
                bar.update()
            bar.close()
            writer.close()
            config["_aiprod"] = {**config.get("_aiprod", {}), "dtype": "float8_e4m3fn",
                                 "quantization": {"backend": self.name, "weights": "fp8_e4m3", "map": QMAP,
                                                  "source_dtype": config.get("_aiprod", {}).get("dtype")}}
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            (tmp / QMAP).write_text(json.dumps(qmap, indent=2) + "\n")
            for extra in src.iterdir():  # tokenizers and other side files travel along
                if extra.name not in (CONFIG, INDEX, store.MANIFEST, store.CHECKSUMS, QMAP) and \
                        extra.suffix != ".safetensors" and not extra.name.startswith("."):
                    (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, tmp / extra.name)
            store.write_manifest(tmp)
        return dst

    def prepare(self, module: nn.Module, qmap: dict[str, Any]) -> None:
        """Swap the listed Linear modules (on meta) for their quantized form."""
        raise NotImplementedError

    def load_into(self, module: nn.Module, state: dict[str, torch.Tensor], qmap: dict[str, Any],
                  device: torch.device) -> nn.Module:
        self.prepare(module, qmap)
        result = module.load_state_dict(state, strict=False, assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise AiprodError(f"quantized weights do not match the model: missing {result.missing_keys[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")
        return module


# -- torch-native backend ------------------------------------------------------------
class FP8Linear(nn.Module):
    """A Linear whose weight is stored as float8_e4m3fn with one scale per output channel."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn))
        self.register_buffer("weight_scale", torch.empty(out_features, 1, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_scale.to(x.dtype)
        return F.linear(x, w, self.bias.to(x.dtype) if self.bias is not None else None)


def fp8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.float()
    scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def _swap(module: nn.Module, qmap: dict[str, Any], make) -> None:
    for name in qmap:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise AiprodError(f"{QMAP}: {name!r} is not a Linear layer of this model")
        setattr(parent, child, make(old))


class TorchFP8Quantizer(Quantizer):
    name = "torch-fp8"

    def qmap_entry(self) -> dict[str, str]:
        return {"weights": "float8_e4m3fn", "scale": "per-channel"}

    def quantize_weight(self, key: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
        q, scale = fp8_per_channel(w)
        return {key: q, f"{key}_scale": scale}

    def prepare(self, module: nn.Module, qmap: dict[str, Any]) -> None:
        with torch.device("meta"):
            _swap(module, qmap, lambda old: FP8Linear(old.in_features, old.out_features, old.bias is not None))


# -- optimum-quanto backend ----------------------------------------------------------
def _quanto():
    try:
        import optimum.quanto as quanto
    except ImportError:
        raise AiprodError("backend 'quanto' needs optimum-quanto: pip install 'aiprod-core[quanto]' "
                          "(or use --backend torch-fp8)") from None
    return quanto


class QuantoFP8Quantizer(Quantizer):
    name = "quanto"

    def qmap_entry(self) -> dict[str, str]:
        return {"weights": "qfloat8_e4m3fn", "activations": "none"}

    def quantize_weight(self, key: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
        quanto = _quanto()
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
        holder = nn.Sequential(lin)
        quanto.quantize(holder, weights=quanto.qfloat8)
        quanto.freeze(holder)
        out = holder.state_dict()
        # an all-zero row (AdaLN-zero and other zero-initialised layers) gets scale 0 and then 0/0 = NaN
        # data from quanto; store it as exact zeros with a unit scale instead
        zero = w.abs().amax(dim=1) == 0
        if zero.any():
            out["0.weight._data"].view(torch.uint8)[zero] = 0  # +0.0 in float8_e4m3fn
            out["0.weight._scale"][zero] = 1
        prefix = key.removesuffix("weight")
        return {prefix + k.removeprefix("0."): v for k, v in out.items()}

    def load_into(self, module, state, qmap, device):
        quanto = _quanto()
        expected = set(state)
        quanto.requantize(module, state, qmap, device=device)  # builds from meta, loads non-strictly
        have = set(module.state_dict())
        if have != expected:
            raise AiprodError(f"quantized weights do not match the model: missing {sorted(have - expected)[:3]}, "
                              f"unexpected {sorted(expected - have)[:3]}")
        return module


BACKENDS: dict[str, type[Quantizer]] = {"quanto": QuantoFP8Quantizer, "torch-fp8": TorchFP8Quantizer}


def get_quantizer(name: str = "torch-fp8") -> Quantizer:
    if name not in BACKENDS:
        raise AiprodError(f"unknown quantization backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]()


def quantization_info(folder: Path) -> dict[str, Any] | None:
    return (read_config(folder).get("_aiprod") or {}).get("quantization")


def load_quantized(cls, folder: Path, device: torch.device) -> nn.Module:
    """Build on meta, swap Linear layers per the quantization map, assign the stored tensors."""
    from aiprod_core.weights import load_state_dict

    info = quantization_info(folder)
    backend = get_quantizer(info["backend"])
    qmap = json.loads((folder / info.get("map", QMAP)).read_text())
    cfg = cls.load_config(folder)
    with torch.device("meta"):
        module = cls.from_config(cfg)
    state = load_state_dict(folder, device=device)
    return backend.load_into(module, state, qmap, device)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))
