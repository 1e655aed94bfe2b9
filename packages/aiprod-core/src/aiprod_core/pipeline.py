"""Pipeline and recipe runner: validate a whole YAML first, then load and run.

A pipeline YAML names its kind (``pipeline: text-to-speech``); a training YAML its recipe
(``recipe: hwvae``). The rest is validated against the kind's pydantic model, then every
:class:`ComponentRef` inside it is checked (known component, existing weights folder with
a readable config, overrides valid for the component's config model). All problems are
reported together, each naming the file and the key, before any weight is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError, model_validator

from aiprod_core.config import StrictModel, collect_overrides, format_validation_error, load_yaml
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.records import RunnableSpec
from aiprod_core.registry import Registry, get_registry
from aiprod_core.yamlio import clip, excerpt

if TYPE_CHECKING:  # torch is imported where a pipeline runs: commands that only validate or list start fast
    import torch


class ComponentRef(StrictModel):
    """A component named in a YAML: registered ``name`` (+ ``kind``), from ``weights`` or a ``preset``."""

    name: str
    kind: str | None = None
    weights: str | None = None
    preset: str | None = None
    config: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_source(self) -> ComponentRef:
        if (self.weights is None) == (self.preset is None):
            raise ValueError("give exactly one of 'weights' (a component folder) or 'preset'")
        if self.weights is not None and self.config:
            raise ValueError("'config' overrides apply to presets only (a weights folder has its own config.json)")
        return self

    def load(self, ctx: RunContext) -> torch.nn.Module:
        """Build (preset) or verify-and-load (weights) on ``ctx.device`` / ``ctx.dtype``, in eval mode."""
        spec = ctx.registry.component(self.kind, self.name)
        if self.weights is not None:
            from aiprod_core.quantize import quantization_info
            from aiprod_core.weights import load_component

            if self.config:
                raise ConfigError([f"{ctx.source}: component {self.name!r}: 'config' overrides apply to presets only"])
            folder = ctx.resolve(self.weights)
            module = load_component(folder, device=ctx.device, force_verify=ctx.force_verify)
            if quantization_info(folder):
                return module.eval()  # FP8 weights stay FP8; they upcast at compute
        else:
            module = spec.build(self.preset, **self.config)
        return module.to(device=ctx.device, dtype=ctx.dtype).eval()


@dataclass
class RunContext:
    """What a pipeline or recipe runner receives besides its config."""

    source: Path
    device: torch.device
    dtype: torch.dtype
    seed: int = 0
    quiet: bool = False
    overwrite: bool = False
    force_verify: bool = False
    registry: Registry = field(default_factory=get_registry)

    def resolve(self, path: str | Path) -> Path:
        """Relative paths in a YAML are relative to the working directory, as on the command line."""
        return Path(os.path.expanduser(str(path)))

    def output_path(self, path: str | Path) -> Path:
        out = self.resolve(path)
        if out.exists() and not self.overwrite:
            raise AiprodError(f"{out}: already exists; pass --overwrite to replace it")
        if out.is_dir():
            raise AiprodError(f"{out}: is a folder; expected the path of a file to write")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise AiprodError(f"{out}: cannot create its folder {out.parent} ({err.strerror or err})") from None
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise AiprodError(f"{out}: folder {out.parent} is not writable")
        return out

    def progress(self, iterable: Iterable | None = None, **kw: Any) -> Iterator:
        from tqdm import tqdm

        return tqdm(iterable, disable=self.quiet, **kw)

    def generator(self, device: torch.device | None = None) -> torch.Generator:
        import torch

        return torch.Generator(device=device or "cpu").manual_seed(self.seed)


# -- validation ---------------------------------------------------------------------------
def _walk_refs(obj: Any, path: str) -> Iterator[tuple[str, ComponentRef]]:
    if isinstance(obj, ComponentRef):
        yield path, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _walk_refs(getattr(obj, name), f"{path}.{name}" if path else name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_refs(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_refs(v, f"{path}[{i}]")


def _top_level_refs(model: type[BaseModel], data: dict[str, Any]) -> Iterator[tuple[str, ComponentRef]]:
    for name, field_info in model.model_fields.items():
        if "ComponentRef" not in str(field_info.annotation) or not isinstance(data.get(name), dict):
            continue
        try:
            yield name, ComponentRef.model_validate(data[name])
        except ValidationError:
            continue  # its own errors are already in the list


def check_ref(ref: ComponentRef, key: str, source: str, registry: Registry) -> list[str]:
    """Problems with one component reference, without loading any weight.

    A config this code already accepted (:func:`aiprod_core.checks.known_config`) is not validated
    again, so its model module (and torch) is not imported.
    """
    from aiprod_core.checks import known_config
    from aiprod_core.weightfiles import read_config

    try:
        spec = registry.component(ref.kind, ref.name)
    except ConfigError as err:
        return [f"{source}: {key}.name: {line}" for line in err.lines()]
    problems: list[str] = []
    config = None  # the config this reference builds, when it can be read
    if ref.preset is not None and ref.preset in spec.presets:
        config = {**spec.presets[ref.preset], **ref.config}
    elif ref.weights is not None and Path(os.path.expanduser(ref.weights)).is_dir():
        try:
            config = read_config(Path(os.path.expanduser(ref.weights)))
            config.pop("_aiprod", None)
        except AiprodError:
            pass  # reported below
    cfg_model: Any = None
    if config is None or not known_config(spec, config, registry):
        try:
            cfg_model = spec.load_config_model()
        except AiprodError as err:
            return [f"{source}: {key}.name: {line}" for line in err.lines()]
    if ref.preset is not None:
        if ref.preset not in spec.presets:
            problems.append(f"{source}: {key}.preset: unknown preset {excerpt(ref.preset, 60)} (known: {', '.join(spec.presets)})")
        elif cfg_model is not None:
            try:
                cfg_model.model_validate({**spec.presets[ref.preset], **ref.config})
            except ValidationError as err:
                problems += format_validation_error(err, source, f"{key}.config")
    if ref.weights is not None:
        folder = Path(os.path.expanduser(ref.weights))
        if not folder.is_dir():
            problems.append(f"{source}: {key}.weights: folder {clip(str(folder), 200)} not found")
        else:
            try:
                data = read_config(folder)
                meta = data.pop("_aiprod", {}) or {}
                if meta.get("name") not in (None, spec.name):
                    problems.append(f"{source}: {key}.weights: {folder} holds {excerpt(meta.get('name'), 60)}, not {spec.name!r}")
                if cfg_model is not None:
                    cfg_model.model_validate(data)
            except AiprodError as err:
                problems.append(f"{source}: {key}.weights: {err}")
            except ValidationError as err:
                problems += format_validation_error(err, str(folder / "config.json"))
    return problems


def validate_document(
    data: dict[str, Any], source: str, registry: Registry | None = None
) -> tuple[str, RunnableSpec, BaseModel]:
    """Validate a pipeline or recipe mapping as a whole. Returns (``"pipeline"|"recipe"``, spec, config)."""
    registry = registry or get_registry()
    data = dict(data)
    if "pipeline" in data and "recipe" not in data:
        what, name = "pipeline", data.pop("pipeline")
    elif "recipe" in data and "pipeline" not in data:
        what, name = "recipe", data.pop("recipe")
    else:
        raise ConfigError([f"{source}: expected exactly one top-level key 'pipeline' (aiprod run) or 'recipe' (aiprod train)"])
    if not isinstance(name, str) or not name:
        raise ConfigError([f"{source}: {what}: expected a name, got {excerpt(name)}"])
    try:
        spec = registry.pipeline(name) if what == "pipeline" else registry.recipe(name)
    except ConfigError as err:
        raise ConfigError([f"{source}: {what}: {line}" for line in err.lines()]) from None
    try:
        model = spec.load_config_model()
    except AiprodError as err:
        raise ConfigError([f"{source}: {what}: {line}" for line in err.lines()]) from None
    try:
        cfg = model.model_validate(data)
    except ValidationError as err:
        # still check the well-formed top-level component references, so one run reports everything
        problems = format_validation_error(err, source)
        for key, ref in _top_level_refs(model, data):
            problems += check_ref(ref, key, source, registry)
        raise ConfigError(problems) from None
    problems: list[str] = []
    for key, ref in _walk_refs(cfg, ""):
        problems += check_ref(ref, key, source, registry)
    if problems:
        raise ConfigError(problems)
    return what, spec, cfg


def load_document(
    path: str | Path,
    overrides: list[str] | None = None,
    registry: Registry | None = None,
    *,
    check_files: bool = False,
    overwrite: bool | None = None,
):
    """Read, override and validate a YAML; every problem (``--set`` ones included) is reported together.

    ``check_files`` adds what can be checked on this machine without reading a weight
    (:func:`aiprod_core.checks.check_environment`: input paths exist, outputs can be written,
    sizes fit in memory, weights files are well-formed and match their config); ``aiprod
    validate`` and ``aiprod run|train`` turn it on. ``overwrite`` (known to ``run`` only) also
    refuses an existing output unless it is true.
    """
    path = Path(path)
    registry = registry or get_registry()
    data = load_yaml(path)
    problems = collect_overrides(data, list(overrides or []), str(path))
    try:
        result = validate_document(data, str(path), registry)
    except ConfigError as err:
        raise ConfigError([*problems, *err.lines()]) from None
    except AiprodError as err:  # e.g. a plugin module that fails to import
        raise ConfigError([*problems, *(f"{path}: {line}" for line in err.lines())]) from None
    if check_files:
        from aiprod_core.checks import check_environment

        problems += check_environment(result[2], str(path), registry, overwrite=overwrite)
    if problems:
        raise ConfigError(problems)
    return result


def run_document(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    expect: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    force_verify: bool = False,
) -> Any:
    """Validate everything, then run the pipeline or recipe the YAML names."""
    registry = get_registry()
    if expect is not None:  # the wrong command first: its other problems would only distract
        kinds = load_yaml(path).keys() & {"pipeline", "recipe"}
        if len(kinds) == 1 and expect not in kinds:
            other = "aiprod train" if "recipe" in kinds else "aiprod run"
            raise ConfigError([f"{path}: this is a {kinds.pop()} YAML; run it with `{other}`"])
    what, spec, cfg = load_document(path, overrides, registry, check_files=True, overwrite=overwrite)
    from aiprod_core.device import pick_device, pick_dtype, seed_everything

    dev = pick_device(device)
    seed = 0 if seed is None else seed
    seed_everything(seed)
    ctx = RunContext(source=Path(path), device=dev, dtype=pick_dtype(dtype, dev), seed=seed, quiet=quiet,
                     overwrite=overwrite, force_verify=force_verify, registry=registry)
    return spec.load_run()(cfg, ctx)
