"""Hook implementations only; heavy imports stay inside the functions."""

from __future__ import annotations

import click

from aiprod_core import ComponentSpec, PipelineSpec, hookimpl


@hookimpl
def aiprod_register_components():
    return [
        ComponentSpec(
            kind="audio-codec",
            name="mulaw",
            factory="aiprod_plugin_template.model:MuLawCodec",
            config_model="aiprod_plugin_template.model:MuLawCodecConfig",
            presets={"tiny": {"bits": 8}, "v1": {"bits": 10}},
            description="mu-law companding codec (template plugin)",
            license="MIT",
        )
    ]


@hookimpl
def aiprod_register_pipelines():
    return [
        PipelineSpec(
            name="codec-roundtrip",
            config_model="aiprod_plugin_template.pipelines:RoundTripConfig",
            run="aiprod_plugin_template.pipelines:run_roundtrip",
            description="wav → codes → wav with any audio codec",
        )
    ]


@hookimpl
def aiprod_register_commands(cli: click.Group) -> None:
    @cli.command("mulaw-levels")
    @click.option("--bits", default=8, show_default=True)
    def mulaw_levels(bits: int) -> None:
        """Print the number of mu-law levels for BITS."""
        click.echo(str(2**bits))
