"""save_pretrained / from_pretrained for components: ``config.json`` + ``*.safetensors``.

Above ``max_shard_size`` the weights are split into ``model-0000i-of-0000n.safetensors``
with a ``model.safetensors.index.json`` (the layout transformers and diffusers use).
Loading verifies the folder first, builds the module on the meta device and assigns the
loaded tensors, so memory is never doubled.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import save_file

from aiprod_core import store
from aiprod_core.config import validate
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.weightfiles import (  # noqa: F401  (torch-free readers, re-exported here)
    CONFIG,
    INDEX,
    MAX_HEADER,
    WEIGHTS,
    read_config,
    read_safetensors_header,
    safetensors_headers,
    weight_files,
)
from aiprod_core.yamlio import clip, excerpt

T = TypeVar("T", bound="PretrainedMixin")


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


@contextlib.contextmanager
def meta_device():
    """Build modules on the meta device without running ``torch.nn.init`` (there are no values to fill).

    Besides being pointless on meta, some initialisers (``normal_``) go through a Python reference
    implementation whose first call imports ``torch._dynamo`` (seconds).
    """
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
    try:
        for name, fn in saved.items():
            # only meta tensors skip: a component may build real tensors inside (the text encoder's seeded
            # random base), and those must be initialised as usual
            setattr(torch.nn.init, name, lambda tensor, *a, _fn=fn, **k: tensor if tensor.is_meta else _fn(tensor, *a, **k))
        with torch.device("meta"):
            yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dominant_dtype(state: Mapping[str, torch.Tensor]) -> str:
    counts: dict[torch.dtype, int] = {}
    for t in state.values():
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return _dtype_name(max(counts, key=counts.get)) if counts else "float32"


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses shared storage: keep the first name, record the others as ties."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out, ties = {}, {}
    for k, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.device.type != "meta" else None
        if key is not None and key in seen:
            ties[k] = seen[key]
            continue
        if key is not None:
            seen[key] = k
        out[k] = t.detach().contiguous()
    return out, ties


def _save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    """safetensors' ``save_file`` with the usual permissions set now (it makes 0600 files): a later
    chmod would change the file's ctime and void its verified stamp."""
    save_file(tensors, str(path), metadata=meta)
    mode = 0o666 & ~store._umask()
    if path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)


def save_state_dict(
    state: Mapping[str, torch.Tensor], folder: Path, max_shard_size: int | str = "2GB", metadata: dict | None = None
) -> list[str]:
    """Write a state dict as one safetensors file, or shards plus an index. Returns file names."""
    tensors, ties = _dedupe({k: v.cpu() for k, v in state.items()})
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    meta = {"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}}
    if len(shards) == 1 and not ties:
        _save(shards[0], folder / WEIGHTS, meta)
        return [WEIGHTS]
    names, weight_map = [], {}
    n = len(shards)
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        _save(shard, folder / name, meta)
        names.append(name)
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": weight_map, "tied": ties}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return names + [INDEX]


def load_state_dict(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read the tensors of a component folder (single file or sharded). No verification here.

    Shards must lie in the folder itself; a malformed file is one :class:`AiprodError` line.
    """
    folder = Path(folder)
    files, ties = weight_files(folder)
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        read_safetensors_header(path)  # a clear line for a malformed header, before safetensors sees it
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for k in f.keys():
                    state[k] = f.get_tensor(k)
        except MemoryError:
            raise
        except Exception as err:  # safetensors raises its own error types
            raise AiprodError(f"{path}: not a readable safetensors file ({clip(f'{type(err).__name__}: {err}', 200)})") from None
    for k, src in ties.items():
        if src not in state:
            raise AiprodError(f"{folder / INDEX}: tied tensor {excerpt(k, 60)} names {excerpt(src, 60)}, which no shard holds")
        state[k] = state[src]
    return state


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


class PretrainedMixin:
    """Gives an ``nn.Module`` a config, ``save_pretrained``, ``from_pretrained`` and presets.

    Subclasses set ``config_class`` (a :class:`aiprod_core.config.StrictModel`),
    ``component_kind`` and ``component_name``, and take keyword-only constructor
    arguments equal to the config fields. The constructor is wrapped so that the
    arguments are validated by ``config_class`` and kept as ``self.config``.
    Every buffer needed at inference must be persistent (saved) or computed in
    ``forward``: loading builds the module on the meta device.
    """

    config_class: ClassVar[type[BaseModel]]
    component_kind: ClassVar[str]
    component_name: ClassVar[str]
    component_version: ClassVar[str] = "1"
    component_license: ClassVar[str] = "AIPROD proprietary"
    config: BaseModel

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__ or getattr(cls, "config_class", None) is None:
            return
        original = cls.__init__

        @functools.wraps(original)
        def __init__(self, *args: Any, **kw: Any) -> None:
            if args:
                raise TypeError(f"{cls.__name__} takes keyword arguments only (the fields of {cls.config_class.__name__})")
            if type(self) is cls:
                cfg = validate(cls.config_class, kw, source=cls.__name__)
                original(self, **cfg.model_dump())
                self.config = cfg
            else:
                original(self, **kw)

        __init__.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_config(cls: type[T], config: BaseModel | Mapping[str, Any]) -> T:
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
        return cls(**data)

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        from aiprod_core.registry import get_registry

        return {k: dict(v) for k, v in get_registry().component(cls.component_kind, cls.component_name).presets.items()}

    @classmethod
    def from_preset(cls: type[T], name: str, **overrides: Any) -> T:
        presets = cls.presets()
        if name not in presets:
            raise ConfigError([f"{cls.__name__}: unknown preset {name!r} (known: {', '.join(presets)})"])
        return cls(**{**presets[name], **overrides})

    def num_parameters(self, trainable_only: bool = False) -> int:
        return count_parameters(self, trainable_only)  # type: ignore[arg-type]

    # -- save / load -------------------------------------------------------------------
    def component_metadata(self, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        from aiprod_core import __version__

        return {
            "kind": self.component_kind,
            "name": self.component_name,
            "version": self.component_version,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "parameters": self.num_parameters(),
            "dtype": dominant_dtype(state),
            "license": self.component_license,
            "aiprod_core": __version__,
        }

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        """The tensors to save; override to save only part of the module (e.g. adapters)."""
        return self.state_dict()  # type: ignore[attr-defined]

    def save_pretrained(
        self,
        folder: str | Path,
        *,
        dtype: torch.dtype | None = None,
        max_shard_size: int | str = "2GB",
        manifest: bool = True,
        extra_files: Mapping[str, str | bytes] | None = None,
    ) -> Path:
        """Write ``config.json`` + safetensors (+ MANIFEST.json, CHECKSUMS.sha256) atomically."""
        folder = Path(folder)
        state = self.state_dict_for_save()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        config = {**self.config.model_dump(mode="json"), "_aiprod": self.component_metadata(state)}
        with store.atomic_dir(folder) as tmp:
            save_state_dict(state, tmp, max_shard_size)
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            for name, content in (extra_files or {}).items():
                path = tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            if manifest:
                store.write_manifest(tmp)
        return folder

    @classmethod
    def load_config(cls, folder: str | Path) -> BaseModel:
        data = read_config(folder)
        meta = data.pop("_aiprod", {}) or {}
        if meta.get("kind") not in (None, cls.component_kind) or meta.get("name") not in (None, cls.component_name):
            raise AiprodError(
                f"{Path(folder) / CONFIG}: holds {meta.get('kind')} {meta.get('name')!r}, "
                f"expected {cls.component_kind} {cls.component_name!r}"
            )
        return validate(cls.config_class, data, source=str(Path(folder) / CONFIG))

    @classmethod
    def from_pretrained(
        cls: type[T],
        folder: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        verify: bool = True,
        force_verify: bool = False,
    ) -> T:
        """Verify, then build on the meta device and assign the stored tensors."""
        folder = Path(folder)
        if verify:
            store.verify(folder, force=force_verify)
        device = torch.device(device) if device is not None else torch.device("cpu")
        if (read_config(folder).get("_aiprod") or {}).get("quantization"):
            from aiprod_core.quantize import load_quantized

            module = load_quantized(cls, folder, device)
            module.eval()  # type: ignore[attr-defined]
            return module
        cfg = cls.load_config(folder)
        with meta_device():
            module = cls.from_config(cfg)
        state = load_state_dict(folder, device=device)
        module._load_pretrained_state(state, folder)  # type: ignore[attr-defined]
        leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]  # type: ignore[attr-defined]
        if leftover:
            raise AiprodError(
                f"{folder}: {len(leftover)} tensors were not in the checkpoint (e.g. {leftover[0]!r}); "
                f"{cls.__name__} must keep every buffer persistent"
            )
        if dtype is not None:
            module.to(dtype)  # type: ignore[attr-defined]
        module.eval()  # type: ignore[attr-defined]
        return module

    def _load_pretrained_state(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        try:
            result = self.load_state_dict(state, strict=False, assign=True)  # type: ignore[attr-defined]
        except RuntimeError as err:  # size mismatches: the config does not build these tensors
            detail = next((ln.strip() for ln in str(err).splitlines() if "mismatch" in ln), str(err).splitlines()[0])
            raise AiprodError(f"{folder}: weights do not match {folder / CONFIG} ({type(self).__name__}): "
                              f"{clip(detail, 250)}") from None
        if result.missing_keys or result.unexpected_keys:
            parts = []
            if result.missing_keys:
                parts.append(f"missing {len(result.missing_keys)} (e.g. {result.missing_keys[0]!r})")
            if result.unexpected_keys:
                parts.append(f"unexpected {len(result.unexpected_keys)} (e.g. {result.unexpected_keys[0]!r})")
            raise AiprodError(f"{folder}: weights do not match {type(self).__name__}: {'; '.join(parts)}")


def load_component(folder: str | Path, *, device=None, dtype=None, verify: bool = True, force_verify: bool = False):
    """Load any component folder, finding its class through the registry (``_aiprod`` in config.json)."""
    from aiprod_core.registry import get_registry

    folder = Path(folder)
    if verify:
        store.verify(folder, force=force_verify)
    meta = read_config(folder).get("_aiprod") or {}
    if not meta.get("name"):
        raise AiprodError(f"{folder / CONFIG}: no '_aiprod' section naming the component")
    spec = get_registry().component(meta.get("kind"), meta["name"])
    cls = spec.load_factory()
    return cls.from_pretrained(folder, device=device, dtype=dtype, verify=False)
