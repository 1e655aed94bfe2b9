"""The ``aiprod`` command line. Our own errors become one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from aiprod_core import __version__
from aiprod_core.errors import AiprodError
from aiprod_core.offline import enforce_offline


class AiprodGroup(click.Group):
    """A group whose commands turn :class:`AiprodError` into one line per problem and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AiprodError as err:
            for line in err.lines():
                click.echo(f"aiprod: error: {_one_line(line)}", err=True)
            ctx.exit(2)


#: longest problem line printed; a message never echoes a whole input
MAX_LINE = 1000


def _one_line(line: str) -> str:
    line = " ".join(str(line).splitlines())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


class LazyCommand(click.Command):
    """A sub-command whose module is imported only when it is run or its own ``--help`` is asked for.

    ``target`` is ``"package.module:command"``; ``summary`` (the first line of its help) is what
    ``aiprod --help`` lists, so the listing imports nothing. A plugin whose command module is heavy
    registers it this way.
    """

    def __init__(self, name: str, target: str, summary: str) -> None:
        super().__init__(name, help=summary, add_help_option=False)
        self.target = target
        self._command: click.Command | None = None

    def command(self) -> click.Command:
        if self._command is None:
            from aiprod_core.records import resolve

            self._command = resolve(self.target)
        return self._command

    def make_context(self, info_name, args, parent=None, **extra):  # the real command parses and runs
        return self.command().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        return self.command().invoke(ctx)

    def get_params(self, ctx: click.Context):
        return self.command().get_params(ctx)


@click.group(cls=AiprodGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aiprod")
@click.option("--quiet", "-q", is_flag=True, help="Silence progress bars.")
def cli(quiet: bool) -> None:
    """AIPROD: offline audio + video generation. Every weight is local and checksummed."""
    if quiet:
        os.environ["AIPROD_QUIET"] = "1"


def _quiet() -> bool:
    return os.environ.get("AIPROD_QUIET", "") not in ("", "0")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List the installed plugins, what they register, and load errors."""
    from aiprod_core.registry import get_registry

    reg = get_registry()
    if as_json:
        payload = {
            "plugins": [p.as_dict() for p in reg.plugins],
            "components": [
                {"kind": c.kind, "name": c.name, "distribution": c.distribution, "presets": list(c.presets),
                 "description": c.description}
                for c in reg.components.values()
            ],
            "pipelines": sorted(reg.pipelines),
            "recipes": sorted(reg.recipes),
            "errors": reg.errors,
            "warnings": reg.warnings,
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for p in reg.plugins:
        status = f"ERROR {p.error}" if p.error else "ok"
        click.echo(f"{p.name} ({p.distribution} {p.version}): {status}")
        for c in p.components:
            kind, name = c.split("/", 1)
            presets = ", ".join(reg.components[(kind, name)].presets)
            click.echo(f"  component  {kind:<20} {name}" + (f"  [presets: {presets}]" if presets else ""))
        for n in p.pipelines:
            click.echo(f"  pipeline   {n}")
        for n in p.recipes:
            click.echo(f"  recipe     {n}")
        for w in p.warnings:
            click.echo(f"  warning    {w}")


_run_options = [
    click.argument("file", type=click.Path(path_type=Path)),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a YAML key (repeatable)."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps."),
    click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16, float16."),
    click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Random seed (default 0)."),
    click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
    click.option("--force-verify", is_flag=True, help="Re-hash every weight file, ignoring the verified-stamp cache."),
]


def _apply(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


@cli.command()
@_apply(_run_options)
def run(file, overrides, device, dtype, seed, overwrite, force_verify) -> None:
    """Validate and run a pipeline YAML (``pipeline: <kind>``)."""
    from aiprod_core.pipeline import run_document

    result = run_document(file, list(overrides), expect="pipeline", device=device, dtype=dtype, seed=seed,
                          quiet=_quiet(), overwrite=overwrite, force_verify=force_verify)
    if isinstance(result, (str, Path)):
        click.echo(str(result))


@cli.command()
@_apply(_run_options)
def train(file, overrides, device, dtype, seed, overwrite, force_verify) -> None:
    """Validate and run a training recipe YAML (``recipe: <name>``)."""
    from aiprod_core.pipeline import run_document

    result = run_document(file, list(overrides), expect="recipe", device=device, dtype=dtype, seed=seed,
                          quiet=_quiet(), overwrite=overwrite, force_verify=force_verify)
    if isinstance(result, dict):
        click.echo(json.dumps(result))


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def validate(files, overrides) -> None:
    """Validate pipeline or recipe YAML files without loading any weight."""
    from aiprod_core.errors import ConfigError
    from aiprod_core.pipeline import load_document

    problems: list[str] = []
    for f in files:
        try:
            what, spec, _ = load_document(f, list(overrides), check_files=True)
            click.echo(f"{f}: ok ({what} {spec.name})")
        except AiprodError as err:
            problems += err.lines()
    if problems:
        raise ConfigError(problems)


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Re-hash every file, ignoring the verified-stamp cache.")
def verify(folder, force) -> None:
    """Verify a weights folder against its MANIFEST.json (sizes and SHA-256)."""
    from aiprod_core.store import verify as verify_folder

    root = verify_folder(folder, force=force)
    click.echo(f"{folder}: ok (store root {root})")


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Re-hash every file, ignoring the verified-stamp cache.")
def manifest(folder, force) -> None:
    """Write MANIFEST.json and CHECKSUMS.sha256 for every file below FOLDER."""
    from aiprod_core.store import write_manifest

    m = write_manifest(folder, force=force)
    click.echo(f"{folder}: {len(m['files'])} files, {len(m['components'])} components")


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--weights", default="fp8", show_default=True, help="Target weight format (fp8 = E4M3).")
@click.option("--backend", default="torch-fp8", show_default=True,
              help="torch-fp8 (native, no extra dependency) or quanto (pip install 'aiprod-core[quanto]').")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Extra module-name patterns kept in high precision.")
@click.option("--no-default-exclude", is_flag=True,
              help="Quantize every Linear not named by --exclude (drop the norm/embedding/modulation/final defaults).")
@click.option("--max-shard-size", default="2GB", show_default=True)
@click.option("--overwrite", is_flag=True)
def quantize(src, dst, weights, backend, exclude, no_default_exclude, max_shard_size, overwrite) -> None:
    """Quantize the Linear weights of the component in SRC into a new folder DST, shard by shard."""
    from aiprod_core.quantize import get_quantizer

    out = get_quantizer(backend).quantize_folder(src, dst, weights=weights, exclude=list(exclude),
                                                 default_exclude=not no_default_exclude,
                                                 max_shard_size=max_shard_size, overwrite=overwrite,
                                                 progress=not _quiet())
    click.echo(str(out))


def build_cli() -> click.Group:
    """The CLI with every plugin's sub-commands added."""
    from aiprod_core.registry import get_registry

    get_registry().add_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    enforce_offline()
    try:
        app = build_cli()
    except AiprodError as err:  # strict plugin mode
        for line in err.lines():
            click.echo(f"aiprod: error: {_one_line(line)}", err=True)
        sys.exit(2)
    app.main(args=argv, prog_name="aiprod")


if __name__ == "__main__":
    main()
