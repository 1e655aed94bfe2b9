"""``aiprod data prepare`` / ``aiprod data cache``: train on your own videos (docs/own_data.md).

Cheap to import (the CLI lists it without loading torch); the work is in :mod:`aiprod_pipelines.ingest`
and :mod:`aiprod_pipelines.latent_cache`.
"""

from __future__ import annotations

import os

import click


@click.group(name="data")
def data_group() -> None:
    """Prepare your own videos for training: cut clips, then cache latents into shards."""


@data_group.command("prepare")
@click.argument("videos", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--fps", type=float, default=24.0, show_default=True, help="output frame rate")
@click.option("--frames", type=int, default=17, show_default=True, help="frames per clip (1 + 4k)")
@click.option("--resolution", "resolutions", type=int, multiple=True, help="long side, px (repeatable; 256)")
@click.option("--aspect", "aspects", multiple=True, help="bucket 'W:H' (repeatable; 16:9 9:16 4:3 3:4 1:1)")
@click.option("--stride", type=float, help="seconds between clip starts (default: back to back)")
@click.option("--max-clips", type=int, help="clips per video at most")
@click.option("--upscale", is_flag=True, help="cut videos smaller than a resolution's bucket too")
@click.option("--workers", type=int, default=0, show_default=True, help="videos cut in parallel processes")
def prepare_command(videos, out, fps, frames, resolutions, aspects, stride, max_clips, upscale, workers) -> None:
    """Cut the captioned videos of VIDEOS into bucket-grid clips in OUT (captions.jsonl + mp4).

    Captions: VIDEOS/captions.jsonl ({"file": "rel/path.mp4", "caption": "..."} per line) or a
    sidecar .txt beside each video. Skipped files are listed with the reason. A rerun resumes.
    """
    from aiprod_core.config import validate
    from aiprod_pipelines.ingest import PrepareConfig, format_report, prepare

    data = {"fps": fps, "frames": frames, "stride": stride, "max_clips_per_video": max_clips, "upscale": upscale}
    if resolutions:
        data["resolutions"] = list(resolutions)
    if aspects:
        data["aspect_ratios"] = list(aspects)
    cfg = validate(PrepareConfig, data, "aiprod data prepare")
    quiet = os.environ.get("AIPROD_QUIET", "") not in ("", "0")
    report = prepare(videos, out, cfg, workers=workers, progress=not quiet)
    for line in format_report(report):
        click.echo(line)


@data_group.command("cache", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cache_command(args) -> None:
    """Encode prepared clips into latent + text-embedding shards (under torchrun: each rank its share).

    \b
    aiprod data cache CLIPS SHARDS --autoencoder VAE_DIR --text-encoder TEXT_DIR [--batch-size 8]
    torchrun --nproc-per-node 8 --no-python aiprod data cache CLIPS SHARDS ...
    aiprod data cache --help     (every option)
    """
    from aiprod_pipelines.latent_cache import main

    main(list(args), prog="aiprod data cache")
