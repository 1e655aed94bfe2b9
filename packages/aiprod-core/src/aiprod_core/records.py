"""Frozen records that plugins return from the registration hooks."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

#: The component kinds the core knows. Plugins may add others; these have Protocols in
#: :mod:`aiprod_core.interfaces`.
KINDS = (
    "text-encoder",
    "video-denoiser",
    "video-autoencoder",
    "latent-upsampler",
    "audio-codec",
    "speech-synthesizer",
    "sampler",
    "quantizer",
)


def resolve(target: Any) -> Any:
    """Resolve ``"package.module:attr"`` lazily; anything else is returned as is."""
    if isinstance(target, str):
        from aiprod_core.errors import PluginError

        module, _, attr = target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:  # a plugin's broken module: one line naming it, not a traceback
            raise PluginError(f"cannot load {target!r}: {type(exc).__name__}: {exc}") from exc
        return obj
    return target


def _freeze(presets: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in presets.items()})


@dataclass(frozen=True)
class ComponentSpec:
    """A model component a plugin provides.

    ``factory`` builds the module from keyword arguments equal to the config fields
    (``factory(**config.model_dump())``); it may be given as ``"module:attr"`` so the
    plugin module stays cheap to import. ``presets`` maps a preset name (``tiny``, ``v1``)
    to the keyword arguments of that size.
    """

    kind: str
    name: str
    factory: Callable[..., Any] | str
    config_model: type[BaseModel] | str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    license: str = "AIPROD proprietary"
    #: filled in by the registry: the distribution that registered it
    distribution: str = ""
    #: optional torch-free ``shapes(config) -> {state-dict key: shape}`` (or its ``"module:attr"``), given the
    #: validated config: what the factory builds, without importing model code (``aiprod validate`` uses it
    #: for parameter counts and to compare a weights folder's tensors; tests compare it with a meta build).
    #: It may return None for a config it cannot describe: that config is then built on the meta device
    shapes: Callable[[Any], Mapping[str, tuple[int, ...]] | None] | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "presets", _freeze(self.presets))

    def load_factory(self) -> Callable[..., Any]:
        return resolve(self.factory)

    def load_shapes(self) -> Callable[[Any], Mapping[str, tuple[int, ...]] | None] | None:
        return None if self.shapes is None else resolve(self.shapes)

    def load_config_model(self) -> type[BaseModel]:
        return resolve(self.config_model)

    def build(self, preset: str | None = None, **overrides: Any) -> Any:
        """Build the module from a preset and/or explicit keyword arguments."""
        kwargs: dict[str, Any] = {}
        if preset is not None:
            if preset not in self.presets:
                from aiprod_core.errors import ConfigError

                raise ConfigError(
                    [f"{self.kind} {self.name!r}: unknown preset {preset!r} (known: {', '.join(self.presets)})"]
                )
            kwargs.update(self.presets[preset])
        kwargs.update(overrides)
        from aiprod_core.config import validate

        cfg = validate(self.load_config_model(), kwargs, source=f"{self.kind} {self.name!r}")
        return self.load_factory()(**cfg.model_dump())


@dataclass(frozen=True)
class RunnableSpec:
    """Base of pipeline and recipe records: a YAML kind with its config model and runner."""

    name: str
    config_model: type[BaseModel] | str
    run: Callable[..., Any] | str
    description: str = ""
    distribution: str = ""

    def load_config_model(self) -> type[BaseModel]:
        return resolve(self.config_model)

    def load_run(self) -> Callable[..., Any]:
        return resolve(self.run)


@dataclass(frozen=True)
class PipelineSpec(RunnableSpec):
    """A pipeline kind for ``aiprod run``: YAML ``pipeline: <name>`` + the fields of ``config_model``.

    ``run(config, ctx)`` receives the validated config and a :class:`aiprod_core.pipeline.RunContext`.
    """


@dataclass(frozen=True)
class RecipeSpec(RunnableSpec):
    """A training recipe for ``aiprod train``: YAML ``recipe: <name>`` + the fields of ``config_model``.

    ``run(config, ctx)`` receives the validated config and a :class:`aiprod_core.pipeline.RunContext`.
    """
