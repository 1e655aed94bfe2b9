"""What ``aiprod validate`` checks beyond the schema, on this machine, without reading a weight.

After a document passes its pydantic model and component references (``pipeline.validate_document``),
:func:`check_environment` looks at the world the run will meet:

* **paths**: input files and folders exist; an output file or folder can be created and written
  (its nearest existing parent is a writable folder; it is not a folder / a file); with ``run``, an
  existing output is refused unless ``--overwrite``. Which keys are paths follows their name
  (:data:`PATH_ROLES`), or the field's ``json_schema_extra={"aiprod_path": "input"|"output"|"output_dir"|"none"}``;
* **components**: a preset is built on the meta device (no memory, no weight) so that a config the
  constructor refuses fails here, and its size is compared with the memory of this machine; a weights
  folder's safetensors headers are parsed (shape, dtype, offsets inside the file), their total size is
  compared with memory, and each tensor's shape with the module its ``config.json`` builds.

Each problem is one line: file, key, what was found, what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aiprod_core.errors import AiprodError
from aiprod_core.yamlio import clip, excerpt

#: key name -> role, for fields without an explicit ``aiprod_path`` marker
PATH_ROLES = {
    "input": "input", "text_file": "input", "init_weights": "input", "vgg16_weights": "input",
    "base_path": "input", "durations_dir": "input", "root": "input", "roots": "input", "path": "input",
    "video_dir": "input",
    "output": "output",
    "output_dir": "output_dir",
}


def _role(name: str, field_info: Any) -> str | None:
    extra = field_info.json_schema_extra if isinstance(field_info.json_schema_extra, dict) else {}
    role = extra.get("aiprod_path", PATH_ROLES.get(name))
    return None if role in (None, "none") else role


def walk_paths(obj: Any, key: str = "") -> Iterator[tuple[str, str, str]]:
    """``(key, role, path)`` for every path-valued field of a validated config (component refs excluded)."""
    from aiprod_core.pipeline import ComponentRef

    if isinstance(obj, ComponentRef):
        return
    if isinstance(obj, BaseModel):
        for name, field_info in type(obj).model_fields.items():
            value = getattr(obj, name, None)
            sub = f"{key}.{name}" if key else name
            role = _role(name, field_info)
            if role is not None and isinstance(value, (str, os.PathLike)):
                yield sub, role, str(value)
            elif role is not None and isinstance(value, (list, tuple)):
                yield from ((f"{sub}[{i}]", role, str(v)) for i, v in enumerate(value) if isinstance(v, (str, os.PathLike)))
            else:
                yield from walk_paths(value, sub)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk_paths(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk_paths(v, f"{key}[{i}]")


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_parent(p: Path) -> str | None:
    """Why the folder ``p`` cannot be created or written into, or None."""
    anc = _nearest_existing(p)
    if not anc.is_dir():
        return f"cannot create folder {p}: {anc} is a file"
    if not os.access(anc, os.W_OK | os.X_OK):
        return f"folder {anc} is not writable" if anc == p.absolute() else f"cannot create {p}: {anc} is not writable"
    return None


def check_path(key: str, role: str, value: str, source: str, overwrite: bool | None = None) -> list[str]:
    where = f"{source}: {key}"
    if not value.strip():
        return [f"{where}: empty path"]
    if "\0" in value:
        return [f"{where}: path contains a NUL byte"]
    p = Path(os.path.expanduser(value))
    try:
        if role == "input":
            return [] if p.exists() else [f"{where}: file or folder {clip(str(p), 200)} not found"]
        if role == "output_dir":
            if p.exists() and not p.is_dir():
                return [f"{where}: {clip(str(p), 200)} is a file; expected a folder"]
            why = _writable_parent(p)
            return [f"{where}: {why}"] if why else []
        # output file
        if p.is_dir():
            return [f"{where}: {clip(str(p), 200)} is a folder; expected the path of a file to write"]
        if p.exists() and overwrite is False:
            return [f"{where}: {clip(str(p), 200)} already exists; pass --overwrite to replace it"]
        why = _writable_parent(p.parent)
        return [f"{where}: {why}"] if why else []
    except OSError as err:  # e.g. a name too long for the file system
        return [f"{where}: {clip(str(p), 120)}: {err.strerror or err}"]


# -- memory ----------------------------------------------------------------------------------------
def host_memory() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 0


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"


def memory_problem(nbytes: float, what: str) -> str | None:
    """A one-line problem when ``nbytes`` cannot fit in this machine's memory, else None."""
    total = host_memory()
    if total and nbytes > total:
        return f"{what} needs at least {human(nbytes)} of memory; this machine has {human(total)}"
    return None


# -- components ------------------------------------------------------------------------------------
def _reads_files(cfg: dict[str, Any]) -> bool:
    """A config naming an input path (e.g. a Gemma base folder) builds by reading it: not built here."""
    return any(PATH_ROLES.get(k) == "input" and v for k, v in cfg.items())


def _meta_build(spec: Any, kwargs: dict[str, Any]) -> Any:
    from aiprod_core.config import validate
    from aiprod_core.weights import PretrainedMixin, meta_device

    factory = spec.load_factory()
    if not (isinstance(factory, type) and issubclass(factory, PretrainedMixin)):
        return None  # only PretrainedMixin promises a meta-device build
    cfg = validate(spec.load_config_model(), kwargs, source=f"{spec.kind} {spec.name!r}")
    with meta_device():
        return factory(**cfg.model_dump())


def check_component(ref: Any, key: str, source: str, registry: Any) -> list[str]:
    """Build a preset on the meta device / parse a weights folder's headers; compare sizes and shapes."""
    from aiprod_core.weights import read_config, safetensors_headers

    where = f"{source}: {key}"
    spec = registry.component(ref.kind, ref.name)
    if ref.preset is not None:
        kwargs = {**spec.presets[ref.preset], **ref.config}
        if _reads_files(kwargs):
            return []
        try:
            module = _meta_build(spec, kwargs)
        except AiprodError as err:
            return [f"{where}: {clip(line, 300)}" for line in err.lines()]
        except Exception as err:  # the constructor refuses this config
            return [f"{where}: {spec.name} preset {ref.preset!r} cannot be built with this config "
                    f"({clip(f'{type(err).__name__}: {err}', 200)})"]
        if module is None:
            return []
        numel = sum(t.numel() for t in [*module.parameters(), *module.buffers()])
        why = memory_problem(numel * 4, f"{spec.name} preset {ref.preset!r} ({numel:,} values in float32)")
        return [f"{where}: {why}"] if why else []
    folder = Path(os.path.expanduser(ref.weights))
    if not folder.is_dir():
        return []  # already reported by validation
    try:
        headers = safetensors_headers(folder)
    except AiprodError as err:
        return [f"{where}.weights: {clip(line, 300)}" for line in err.lines()]
    total = sum(p.stat().st_size for p in headers)
    why = memory_problem(total, f"{folder} ({len(headers)} safetensors files)")
    if why:
        return [f"{where}.weights: {why}"]
    try:
        cfg = read_config(folder)
    except AiprodError:
        return []  # already reported by validation
    meta = cfg.pop("_aiprod", {}) or {}
    if meta.get("quantization") or _reads_files(cfg):
        return []
    try:
        module = _meta_build(spec, cfg)
    except Exception as err:
        return [f"{where}.weights: {folder / 'config.json'}: {spec.name} cannot be built from it "
                f"({clip(f'{type(err).__name__}: {err}', 200)})"]
    if module is None:
        return []
    expected = {k: tuple(t.shape) for k, t in module.state_dict().items()}
    for path, header in headers.items():
        for name, entry in header.items():
            if name in expected and tuple(entry["shape"]) != expected[name]:
                return [f"{where}.weights: {path}: tensor {excerpt(name, 60)} has shape {tuple(entry['shape'])}, "
                        f"its config.json builds {expected[name]}: config and weights do not match"]
    return []


def check_environment(cfg: BaseModel, source: str, registry: Any, overwrite: bool | None = None) -> list[str]:
    """Every problem the machine would raise during the run, found before any weight is read."""
    from aiprod_core.pipeline import _walk_refs

    problems: list[str] = []
    for key, role, value in walk_paths(cfg):
        problems += check_path(key, role, value, source, overwrite)
    for key, ref in _walk_refs(cfg, ""):
        problems += check_component(ref, key, source, registry)
    return problems
