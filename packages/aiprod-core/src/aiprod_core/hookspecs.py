"""Every hook of the ``aiprod`` plugin system. Documented one by one in docs/plugins.md.

A plugin is a module named by an ``aiprod`` entry point::

    [project.entry-points.aiprod]
    my_plugin = "my_package.plugin"

and holds functions decorated with :data:`hookimpl`. First-party packages register
through exactly the same entry points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from aiprod_core.records import ComponentSpec, PipelineSpec, RecipeSpec

PROJECT = "aiprod"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aiprod_register_components() -> list[ComponentSpec]:
    """Return the model components this plugin provides.

    Each record names a kind (``video-autoencoder``, ``audio-codec``, ...), a name unique
    within that kind, the factory and its pydantic config model, and named presets.
    Keep heavy imports inside the function or use ``"module:attr"`` strings.

    Example::

        @hookimpl
        def aiprod_register_components():
            return [ComponentSpec(kind="audio-codec", name="my-codec",
                                  factory="my_pkg.model:MyCodec",
                                  config_model="my_pkg.model:MyCodecConfig",
                                  presets={"tiny": {"channels": 8}})]
    """


@hookspec
def aiprod_register_pipelines() -> list[PipelineSpec]:
    """Return the pipeline kinds this plugin adds to ``aiprod run``.

    A pipeline YAML starts with ``pipeline: <name>``; the rest is validated against the
    record's config model before anything is loaded.

    Example::

        @hookimpl
        def aiprod_register_pipelines():
            return [PipelineSpec(name="my-pipeline", config_model=MyPipelineConfig,
                                 run="my_pkg.pipelines:run_my_pipeline")]
    """


@hookspec
def aiprod_register_recipes() -> list[RecipeSpec]:
    """Return the training recipes this plugin adds to ``aiprod train``.

    A training YAML starts with ``recipe: <name>``; the rest is validated against the
    record's config model before training starts.

    Example::

        @hookimpl
        def aiprod_register_recipes():
            return [RecipeSpec(name="my-model", config_model=MyTrainConfig,
                               run="my_pkg.train:train")]
    """


@hookspec
def aiprod_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``aiprod`` command line.

    Example::

        @hookimpl
        def aiprod_register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello")
    """
