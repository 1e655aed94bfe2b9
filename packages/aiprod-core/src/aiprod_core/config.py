"""Config base model and helpers to turn pydantic errors into one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from aiprod_core.errors import ConfigError
from aiprod_core.yamlio import clip, excerpt, load_file, loads


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def format_validation_error(err: ValidationError, source: str, prefix: str = "") -> list[str]:
    """One line per pydantic error: ``source: key.path: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(clip(str(p), 60) for p in e["loc"])
        key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)  # "" : a whole-document rule
        msg = clip(e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, "), 300)
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = ""
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(e.get("input"), dict):
            got = f" (got {excerpt(e.get('input'))})"
        lines.append(f"{source}: {key}: {msg}{got}" if key else f"{source}: {msg}{got}")
    return lines


def validate(model: type[BaseModel], data: Any, source: str, prefix: str = "") -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, prefix)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (:mod:`aiprod_core.yamlio`: no aliases, no duplicate keys, bounded size and
    depth), turning every read or parse problem into a one-line ConfigError."""
    path = Path(path)
    data = load_file(path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    return data


#: longest ``--set`` value parsed
MAX_OVERRIDE_CHARS = 10_000


def collect_overrides(data: dict[str, Any], overrides: list[str], source: str) -> list[str]:
    """Apply ``--set a.b.c=value`` overrides (value parsed as YAML) in place; return every problem.

    A bad override is skipped and reported; the good ones are applied, so that validation of
    the document can still report its own problems beside them.
    """
    problems = []
    for item in overrides:
        item = str(item)
        where = f"{source}: --set {excerpt(item, 60)}"
        if "=" not in item:
            problems.append(f"{where}: expected KEY=VALUE")
            continue
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            problems.append(f"{where}: key {excerpt(key.strip(), 60)} is not a dotted path of names (e.g. train.lr)")
            continue
        if len(raw) > MAX_OVERRIDE_CHARS:
            problems.append(f"{where}: value is {len(raw)} characters long, at most {MAX_OVERRIDE_CHARS}")
            continue
        try:
            value = loads(raw, f"--set {'.'.join(parts)}", what="invalid YAML value") if raw != "" else ""
        except ConfigError as err:
            problems += [f"{source}: {line}" for line in err.lines()]
            continue
        node: Any = data
        for depth, p in enumerate(parts[:-1]):
            nxt = node.get(p) if isinstance(node, dict) else None
            if nxt is None and isinstance(node, dict):
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                problems.append(f"{where}: {'.'.join(parts[: depth + 1])} is not a mapping in {source}")
                node = None
                break
            node = nxt
        if node is not None:
            node[parts[-1]] = value
    return problems


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``--set`` overrides to a nested mapping; every problem is reported together."""
    problems = collect_overrides(data, overrides, source)
    if problems:
        raise ConfigError(problems)
    return data
