"""Config base model and helpers to turn pydantic errors into one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from aiprod_core.errors import ConfigError


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def format_validation_error(err: ValidationError, source: str, prefix: str = "") -> list[str]:
    """One line per pydantic error: ``source: key.path: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = ""
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(e.get("input"), dict):
            got = f" (got {e.get('input')!r})"
        lines.append(f"{source}: {key}: {msg}{got}")
    return lines


def validate(model: type[BaseModel], data: Any, source: str, prefix: str = "") -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, prefix)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every read or parse problem into a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: file not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([f"{path}: {where}invalid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides (value parsed as YAML) to a nested mapping."""
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item}: expected key=value")
            continue
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        ok = True
        for p in parts[:-1]:
            nxt = node.get(p) if isinstance(node, dict) else None
            if nxt is None and isinstance(node, dict):
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                problems.append(f"--set {key}: {p!r} is not a mapping in {source}")
                ok = False
                break
            node = nxt
        if ok:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    if problems:
        raise ConfigError(problems)
    return data
