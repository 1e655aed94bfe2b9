"""The plugin registry: discovers ``aiprod`` entry points and collects their records.

Each entry point is loaded in its own ``try``: a broken plugin is recorded with its
error and everything else keeps working (``AIPROD_STRICT_PLUGINS=1`` re-raises instead).
``AIPROD_LOAD_PLUGINS`` (comma-separated entry-point names) is an allow-list,
``AIPROD_DISABLE_PLUGINS`` a block-list.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import pluggy

from aiprod_core import hookspecs
from aiprod_core.errors import ConfigError, PluginError
from aiprod_core.records import ComponentSpec, PipelineSpec, RecipeSpec
from aiprod_core.yamlio import excerpt

GROUP = "aiprod"

#: the project's own distributions: they win a (kind, name) clash with a third-party plugin
FIRST_PARTY = frozenset({"aiprod-core", "aiprod-shdt", "aiprod-hwvae", "aiprod-audio", "aiprod-tts",
                         "aiprod-textenc", "aiprod-upsampler", "aiprod-pipelines"})


def _norm(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


def is_first_party(distribution: str) -> bool:
    return _norm(distribution) in FIRST_PARTY


def check_target(target: Any) -> str | None:
    """Why a ``"module:attr"`` target cannot resolve (module not found), or None; no import of the module.

    The module is located with ``importlib.util.find_spec`` (its parent packages are imported,
    the module itself is not, so a plugin stays cheap to load); an attribute is checked when
    the module is already imported.
    """
    if not isinstance(target, str):
        return None if callable(target) or isinstance(target, type) else f"{target!r} is not callable"
    module, _, attr = target.partition(":")
    if not module:
        return f"{target!r} names no module"
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return f"{target!r}: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a parent package that fails to import
        return f"{target!r}: importing its package failed: {type(exc).__name__}: {exc}"
    if found is None:
        return f"{target!r}: no module named {module!r}"
    loaded = sys.modules.get(module)
    if loaded is not None and attr:
        obj: Any = loaded
        for part in attr.split("."):
            if not hasattr(obj, part):
                return f"{target!r}: module {module!r} has no attribute {attr!r}"
            obj = getattr(obj, part)
    return None


@dataclass
class PluginInfo:
    name: str  # entry-point name
    module: str  # entry-point value
    distribution: str
    version: str
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    pipelines: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _split_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _strict() -> bool:
    return os.environ.get("AIPROD_STRICT_PLUGINS", "") not in ("", "0", "false", "False")


class Registry:
    """Components, pipelines and recipes from every loaded plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.components: dict[tuple[str, str], ComponentSpec] = {}
        self.pipelines: dict[str, PipelineSpec] = {}
        self.recipes: dict[str, RecipeSpec] = {}
        self.errors: list[str] = []
        self.warnings: list[str] = []

    # -- loading -------------------------------------------------------------------
    def load_entrypoints(self) -> Registry:
        allow = _split_env("AIPROD_LOAD_PLUGINS")
        block = _split_env("AIPROD_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        def order(ep: md.EntryPoint) -> tuple:  # core, then first-party, then third-party, by name
            dist = ep.dist.name if ep.dist is not None else ""
            return (ep.name != "core", not is_first_party(dist), ep.name)

        for ep in sorted(md.entry_points(group=GROUP), key=order):
            if ep.value in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.value)
            if allow is not None and ep.name not in allow and ep.name != "core":
                continue
            if ep.name in block:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(name=ep.name, module=ep.value, distribution=dist, version=version)
            self.plugins.append(info)
            try:
                module = ep.load()
                self._register(module, info)
            except Exception as exc:  # a broken plugin is reported, never fatal
                if _strict():
                    raise PluginError(f"plugin {ep.name!r} ({dist}) failed to load: {exc}") from exc
                info.error = f"{type(exc).__name__}: {exc}"
                self.errors.append(f"plugin {ep.name!r} ({dist}): {info.error}")
        return self

    def register_module(self, module: ModuleType | object, name: str, distribution: str = "<local>") -> PluginInfo:
        """Register a plugin object directly (tests, notebooks)."""
        info = PluginInfo(name=name, module=getattr(module, "__name__", name), distribution=distribution, version="")
        self.plugins.append(info)
        self._register(module, info)
        return info

    def _register(self, module: Any, info: PluginInfo) -> None:
        self.pm.register(module, name=info.name)
        try:
            self._collect(module, info)
        except Exception:
            self.pm.unregister(module)
            raise

    def _call(self, module: Any, hook: str, **kwargs: Any) -> list[Any]:
        impl = getattr(module, hook, None)
        if impl is None or not hasattr(impl, f"{hookspecs.PROJECT}_impl"):
            return []  # only functions marked with @hookimpl count
        out = impl(**kwargs)
        return list(out or [])

    def _collect(self, module: Any, info: PluginInfo) -> None:
        comps = self._call(module, "aiprod_register_components")
        pipes = self._call(module, "aiprod_register_pipelines")
        recs = self._call(module, "aiprod_register_recipes")
        for c in comps:
            if not isinstance(c, ComponentSpec):
                raise PluginError(f"aiprod_register_components returned {type(c).__name__}, expected ComponentSpec")
        for what, items, cls in (("pipeline", pipes, PipelineSpec), ("recipe", recs, RecipeSpec)):
            for r in items:
                if not isinstance(r, cls):
                    raise PluginError(f"{what} hook returned {type(r).__name__}, expected {cls.__name__}")
        # every record is checked before any is kept, so a refused plugin leaves nothing behind
        unresolved: list[str] = []
        records: list[tuple[str, Any, Any, dict]] = []
        for c in comps:
            c = replace(c, distribution=info.distribution)
            records.append(("component", (c.kind, c.name), c, self.components))
        for what, items, table in (("pipeline", pipes, self.pipelines), ("recipe", recs, self.recipes)):
            for r in items:
                r = replace(r, distribution=info.distribution)
                records.append((what, r.name, r, table))
        keep: list[tuple[str, Any, Any, dict]] = []
        seen: set[tuple[str, Any]] = set()
        for what, key, rec, table in records:
            label = f"{what} {key[0]} {key[1]!r}" if what == "component" else f"{what} {key!r}"
            if (what, key) in seen:
                raise PluginError(f"duplicate {label}: registered twice by {info.distribution!r}")
            seen.add((what, key))
            targets = ((rec.factory, rec.config_model, *([rec.shapes] if rec.shapes is not None else []))
                       if what == "component" else (rec.run, rec.config_model))
            why = next((w for w in map(check_target, targets) if w), None)
            if why is not None:
                unresolved.append(f"{label}: {why}")
                continue
            other = table.get(key)
            if other is not None and not self._wins_clash(label, other, rec):
                continue
            keep.append((what, key, rec, table))
        if unresolved and _strict():
            raise PluginError("; ".join(unresolved))
        for what, key, rec, table in keep:
            old = table.get(key)
            if old is not None:  # a first-party record replaces a third-party one registered earlier
                for p in self.plugins:
                    if p.distribution == old.distribution:
                        for lst in (p.components, p.pipelines, p.recipes):
                            name = f"{key[0]}/{key[1]}" if what == "component" else key
                            if name in lst:
                                lst.remove(name)
            table[key] = rec
            if what == "component":
                info.components.append(f"{key[0]}/{key[1]}")
            elif what == "pipeline":
                info.pipelines.append(key)
            else:
                info.recipes.append(key)
        if unresolved:
            info.error = "; ".join(unresolved)
            self.errors.append(f"plugin {info.name!r} ({info.distribution}): {info.error}")

    def _wins_clash(self, label: str, other: Any, new: Any) -> bool:
        """Whether ``new`` replaces ``other`` (same kind and name). First-party wins, with a warning
        naming both distributions (an error under AIPROD_STRICT_PLUGINS); two third-party plugins
        clashing is an error either way."""
        new_fp, old_fp = is_first_party(new.distribution), is_first_party(other.distribution)
        if new_fp == old_fp:
            raise PluginError(
                f"duplicate {label}: registered by both {other.distribution!r} and {new.distribution!r}"
            )
        winner, loser = (new, other) if new_fp else (other, new)
        msg = (f"{label} is registered by both {winner.distribution!r} and {loser.distribution!r}; "
               f"the first-party {winner.distribution!r} is used, {loser.distribution!r}'s is ignored")
        if _strict():
            raise PluginError(msg)
        self.warnings.append(msg)
        for p in self.plugins:
            if p.distribution == loser.distribution:
                p.warnings.append(msg)
        print(f"aiprod: warning: {msg}", file=sys.stderr)
        return new_fp

    # -- lookups -------------------------------------------------------------------
    def component(self, kind: str | None, name: str) -> ComponentSpec:
        matches = [c for (k, n), c in self.components.items() if n == name and (kind is None or k == kind)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = sorted(f"{n} ({k})" for (k, n) in self.components if kind is None or k == kind)
            what = f"{kind} component" if kind else "component"
            raise ConfigError([f"unknown {what} {excerpt(name, 60)}; installed: {', '.join(known) or 'none'}"])
        kinds = ", ".join(sorted(c.kind for c in matches))
        raise ConfigError([f"component name {excerpt(name, 60)} is ambiguous (kinds: {kinds}); give its kind"])

    def pipeline(self, name: str) -> PipelineSpec:
        if name not in self.pipelines:
            raise ConfigError([f"unknown pipeline {excerpt(name, 60)}; installed: {', '.join(sorted(self.pipelines)) or 'none'}"])
        return self.pipelines[name]

    def recipe(self, name: str) -> RecipeSpec:
        if name not in self.recipes:
            raise ConfigError([f"unknown recipe {excerpt(name, 60)}; installed: {', '.join(sorted(self.recipes)) or 'none'}"])
        return self.recipes[name]

    def add_commands(self, cli: Any) -> None:
        for info in self.plugins:
            if info.error:
                continue
            module = self.pm.get_plugin(info.name)
            impl = getattr(module, "aiprod_register_commands", None)
            if impl is None or not hasattr(impl, f"{hookspecs.PROJECT}_impl"):
                continue
            try:
                impl(cli=cli)
            except Exception as exc:
                if _strict():
                    raise PluginError(f"plugin {info.name!r} ({info.distribution}): aiprod_register_commands "
                                      f"failed: {type(exc).__name__}: {exc}") from exc
                info.error = f"aiprod_register_commands: {type(exc).__name__}: {exc}"
                print(f"aiprod: warning: plugin {info.name!r}: {info.error}", file=sys.stderr)


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = Registry().load_entrypoints()
    return _REGISTRY


def format_exception_short(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
