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

**Start-up** (issue 21): validating and meta-building a component imports its model module, hence
torch (seconds). What a config builds depends only on that config and the code, so it is remembered
(:func:`component_facts`) in ``<cache>/validated/<key>.json``, keyed on the component, the exact config
and a fingerprint of the code (size and mtime of every file of the component's package and of
``aiprod_core``; the versions of the plugin distributions; the installed torch, transformers, peft,
pydantic, einops), signed with the per-user key of the stamp cache. A config seen before is then checked
without importing torch: it is known valid, its parameter count and tensor shapes come from the
entry, and the weights' headers are read as JSON (:mod:`aiprod_core.weightfiles`). Paths, headers and
memory are looked at afresh on every run; only a config that passed is remembered, so every refusal
comes from the full check.

A component whose plugin gives a ``shapes`` function (:mod:`aiprod_core.shapes`) and a config class in a
torch-free module is checked without torch even the first time: the config is validated, and its
parameter count and state-dict shapes come from that function instead of a meta build.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
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
    """Validate ``kwargs`` with the component's config model, then build it on meta (None: not buildable)."""
    from aiprod_core.config import validate
    from aiprod_core.weights import PretrainedMixin, meta_device

    cfg = validate(spec.load_config_model(), kwargs, source=f"{spec.kind} {spec.name!r}")
    factory = spec.load_factory()
    if not (isinstance(factory, type) and issubclass(factory, PretrainedMixin)):
        return None  # only PretrainedMixin promises a meta-device build
    with meta_device():
        return factory(**cfg.model_dump())


# -- what a config builds, remembered across runs -------------------------------------------------
MEMO_FORMAT = "aiprod-validated/1"
#: entries kept in ``<cache>/validated`` (the oldest go first)
MEMO_MAX_FILES = 512
#: third-party packages whose installed version changes what a component config validates to or builds
_MEMO_PACKAGES = ("torch", "transformers", "peft", "pydantic", "pydantic_core", "einops")


def _target(obj: Any) -> str:
    return obj if isinstance(obj, str) else f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}"


@functools.cache
def _files_stamp(package: str, sources: bool = True) -> str | None:
    """Digest of (path, size, mtime) of every source file of a top-level package or module (only its
    ``__init__`` with ``sources=False``: an installed library changes it on every upgrade); None when it
    is not found. Computed once per process, without importing the package."""
    import importlib.util

    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    roots = list(found.submodule_search_locations or []) if sources else []
    files = [found.origin] if not roots and found.origin and os.path.isfile(found.origin) else []
    for root in roots:
        for here, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            files += [os.path.join(here, n) for n in sorted(names) if n.endswith(".py")]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _code_fingerprint(packages: tuple[str, ...], plugins: tuple[tuple[str, ...], ...]) -> str | None:
    """One digest of the code a component check runs; None when it cannot be known."""
    stamps = {p: _files_stamp(p) for p in packages}
    if any(v is None for v in stamps.values()):
        return None
    libraries = {p: _files_stamp(p, sources=False) for p in _MEMO_PACKAGES}
    payload = {"files": stamps, "libraries": libraries, "plugins": plugins, "python": sys.version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _memo_key(spec: Any, cfg: dict[str, Any], registry: Any) -> str | None:
    # the component's own package(s) and the core; another distribution's code counts through its version
    packages = {"aiprod_core"} | {_target(t).partition(":")[0].split(".")[0] for t in (spec.factory, spec.config_model)}
    plugins = tuple(sorted((p.name, p.distribution, p.version) for p in getattr(registry, "plugins", [])))
    code = _code_fingerprint(tuple(sorted(packages)), plugins)
    if code is None:
        return None
    try:
        payload = json.dumps({"format": MEMO_FORMAT, "kind": spec.kind, "name": spec.name,
                              "factory": _target(spec.factory), "config_model": _target(spec.config_model),
                              "config": cfg, "code": code}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # a value JSON cannot hold exactly: never remembered
        return None
    return hashlib.sha256(payload.encode()).hexdigest()


def _memo_dir() -> Path:
    from aiprod_core.store import _cache_dir

    return _cache_dir() / "validated"


def _memo_read(key: str) -> dict[str, Any] | None:
    from aiprod_core.store import _mac, _stamp_key

    secret = _stamp_key(create=False)
    if secret is None:
        return None
    try:
        entry = json.loads((_memo_dir() / f"{key}.json").read_text(encoding="utf-8"))
        facts, mac = entry["facts"], entry["mac"]
        if entry.get("format") != MEMO_FORMAT or not isinstance(facts, dict) or not isinstance(mac, str):
            return None
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        return None
    import hmac

    if not hmac.compare_digest(mac, _mac(secret, key, json.dumps(facts, sort_keys=True))):
        return None  # written or edited by anything but this code: checked in full again
    return facts


def _memo_write(key: str, facts: dict[str, Any]) -> None:
    from aiprod_core.store import _mac, _stamp_key, atomic_write_text

    secret = _stamp_key(create=True)
    if secret is None:
        return
    entry = {"format": MEMO_FORMAT, "facts": facts, "mac": _mac(secret, key, json.dumps(facts, sort_keys=True))}
    folder = _memo_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{key}.json", json.dumps(entry))
        names = [e for e in os.scandir(folder) if e.name.endswith(".json")]
        if len(names) > MEMO_MAX_FILES:
            names.sort(key=lambda e: e.stat().st_mtime_ns)
            for e in names[: len(names) - MEMO_MAX_FILES]:
                os.unlink(e.path)
    except OSError:
        pass  # a read-only cache only costs the full check next time


def known_config(spec: Any, cfg: dict[str, Any], registry: Any) -> bool:
    """True when this code already accepted this exact config for ``spec`` (no import needed)."""
    key = _memo_key(spec, cfg, registry)
    return key is not None and _memo_read(key) is not None


def component_facts(spec: Any, cfg: dict[str, Any], registry: Any, *, build: bool = True) -> dict[str, Any]:
    """``{"built", "numel", "shapes"}`` of a component config: remembered, else validated (and meta-built).

    ``numel`` counts parameters and buffers (the persistent ones when it comes from the family's ``shapes``
    function), ``shapes`` maps state-dict keys to shapes; both are None when
    the component is not built (``build=False``, or a factory that is not a ``PretrainedMixin``). A miss
    raises what the validation or the constructor raises, and nothing is remembered.
    """
    key = _memo_key(spec, cfg, registry)
    facts = _memo_read(key) if key is not None else None
    if facts is not None and (facts.get("built") or not build):
        return facts
    shapes = None
    if build and getattr(spec, "shapes", None) is not None:
        # the family computes its shapes from the config: no model code, no torch (None: it cannot tell)
        from aiprod_core.config import validate

        shapes = spec.load_shapes()(validate(spec.load_config_model(), cfg, source=f"{spec.kind} {spec.name!r}"))
    if shapes is not None:
        from aiprod_core.shapes import numel

        facts = {"built": True, "numel": numel(shapes), "shapes": {k: list(v) for k, v in shapes.items()}}
    elif build:
        module = _meta_build(spec, cfg)
        facts = {"built": True, "numel": None, "shapes": None}
        if module is not None:
            facts["numel"] = sum(t.numel() for t in [*module.parameters(), *module.buffers()])
            facts["shapes"] = {k: list(t.shape) for k, t in module.state_dict().items()}
    else:
        from aiprod_core.config import validate

        validate(spec.load_config_model(), cfg, source=f"{spec.kind} {spec.name!r}")
        facts = {"built": False, "numel": None, "shapes": None}
    if key is not None:
        _memo_write(key, facts)
    return facts


def check_component(ref: Any, key: str, source: str, registry: Any) -> list[str]:
    """Build a preset on the meta device / parse a weights folder's headers; compare sizes and shapes."""
    from aiprod_core.weightfiles import read_config, safetensors_headers

    where = f"{source}: {key}"
    spec = registry.component(ref.kind, ref.name)
    if ref.preset is not None:
        kwargs = {**spec.presets[ref.preset], **ref.config}
        if _reads_files(kwargs):
            _remember_valid(spec, kwargs, registry)
            return []
        try:
            facts = component_facts(spec, kwargs, registry)
        except AiprodError as err:
            return [f"{where}: {clip(line, 300)}" for line in err.lines()]
        except Exception as err:  # the constructor refuses this config
            return [f"{where}: {spec.name} preset {ref.preset!r} cannot be built with this config "
                    f"({clip(f'{type(err).__name__}: {err}', 200)})"]
        numel = facts["numel"]
        if numel is None:
            return []
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
        _remember_valid(spec, cfg, registry)
        return []
    try:
        facts = component_facts(spec, cfg, registry)
    except Exception as err:
        return [f"{where}.weights: {folder / 'config.json'}: {spec.name} cannot be built from it "
                f"({clip(f'{type(err).__name__}: {err}', 200)})"]
    if facts["shapes"] is None:
        return []
    expected = facts["shapes"]
    for path, header in headers.items():
        for name, entry in header.items():
            if name in expected and list(entry["shape"]) != list(expected[name]):
                return [f"{where}.weights: {path}: tensor {excerpt(name, 60)} has shape {tuple(entry['shape'])}, "
                        f"its config.json builds {tuple(expected[name])}: config and weights do not match"]
    return []


def _remember_valid(spec: Any, cfg: dict[str, Any], registry: Any) -> None:
    """Remember a config validation accepted that is not built here (it reads files, or is quantized)."""
    try:
        component_facts(spec, cfg, registry, build=False)
    except Exception:  # noqa: BLE001 - validation reported it already; nothing to remember
        pass


def check_environment(cfg: BaseModel, source: str, registry: Any, overwrite: bool | None = None) -> list[str]:
    """Every problem the machine would raise during the run, found before any weight is read."""
    from aiprod_core.pipeline import _walk_refs

    problems: list[str] = []
    for key, role, value in walk_paths(cfg):
        problems += check_path(key, role, value, source, overwrite)
    for key, ref in _walk_refs(cfg, ""):
        problems += check_component(ref, key, source, registry)
    return problems
