"""The plugin registry: discovers ``aiprod`` entry points and collects their records.

Each entry point is loaded in its own ``try``: a broken plugin is recorded with its
error and everything else keeps working (``AIPROD_STRICT_PLUGINS=1`` re-raises instead).
``AIPROD_LOAD_PLUGINS`` (comma-separated entry-point names) is an allow-list,
``AIPROD_DISABLE_PLUGINS`` a block-list.
"""

from __future__ import annotations

import importlib.metadata as md
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

GROUP = "aiprod"


@dataclass
class PluginInfo:
    name: str  # entry-point name
    module: str  # entry-point value
    distribution: str
    version: str
    error: str | None = None
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

    # -- loading -------------------------------------------------------------------
    def load_entrypoints(self) -> Registry:
        allow = _split_env("AIPROD_LOAD_PLUGINS")
        block = _split_env("AIPROD_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: (e.name != "core", e.name)):
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
        new_c: dict[tuple[str, str], ComponentSpec] = {}
        for c in comps:
            if not isinstance(c, ComponentSpec):
                raise PluginError(f"aiprod_register_components returned {type(c).__name__}, expected ComponentSpec")
            c = replace(c, distribution=info.distribution)
            key = (c.kind, c.name)
            other = self.components.get(key) or new_c.get(key)
            if other is not None:
                raise PluginError(
                    f"duplicate {c.kind} {c.name!r}: registered by both {other.distribution!r} and {c.distribution!r}"
                )
            new_c[key] = c
        new_p = self._check_runnables(pipes, PipelineSpec, self.pipelines, info, "pipeline")
        new_r = self._check_runnables(recs, RecipeSpec, self.recipes, info, "recipe")
        self.components.update(new_c)
        self.pipelines.update(new_p)
        self.recipes.update(new_r)
        info.components = [f"{k}/{n}" for k, n in new_c]
        info.pipelines = list(new_p)
        info.recipes = list(new_r)

    @staticmethod
    def _check_runnables(items, cls, existing, info, what):
        new = {}
        for r in items:
            if not isinstance(r, cls):
                raise PluginError(f"{what} hook returned {type(r).__name__}, expected {cls.__name__}")
            r = replace(r, distribution=info.distribution)
            other = existing.get(r.name) or new.get(r.name)
            if other is not None:
                raise PluginError(
                    f"duplicate {what} {r.name!r}: registered by both {other.distribution!r} and {r.distribution!r}"
                )
            new[r.name] = r
        return new

    # -- lookups -------------------------------------------------------------------
    def component(self, kind: str | None, name: str) -> ComponentSpec:
        matches = [c for (k, n), c in self.components.items() if n == name and (kind is None or k == kind)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = sorted(f"{n} ({k})" for (k, n) in self.components if kind is None or k == kind)
            what = f"{kind} component" if kind else "component"
            raise ConfigError([f"unknown {what} {name!r}; installed: {', '.join(known) or 'none'}"])
        kinds = ", ".join(sorted(c.kind for c in matches))
        raise ConfigError([f"component name {name!r} is ambiguous (kinds: {kinds}); give its kind"])

    def pipeline(self, name: str) -> PipelineSpec:
        if name not in self.pipelines:
            raise ConfigError([f"unknown pipeline {name!r}; installed: {', '.join(sorted(self.pipelines)) or 'none'}"])
        return self.pipelines[name]

    def recipe(self, name: str) -> RecipeSpec:
        if name not in self.recipes:
            raise ConfigError([f"unknown recipe {name!r}; installed: {', '.join(sorted(self.recipes)) or 'none'}"])
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
                    raise
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
