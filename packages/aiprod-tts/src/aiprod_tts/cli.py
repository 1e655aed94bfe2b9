"""``aiprod tts say``: text → audio file. Imports stay inside the command so ``aiprod`` starts fast."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aiprod_core.errors import AiprodError


@click.group("tts")
def tts_group() -> None:
    """Text-to-speech (AIPROD-TTS: FastSpeech 2 + HiFi-GAN, 24 kHz)."""


@tts_group.command("say")
@click.argument("text")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Audio file (.wav/.flac/.ogg).")
@click.option("--weights", type=click.Path(path_type=Path), help="Synthesizer component folder.")
@click.option("--preset", help="Build from a preset with random weights instead (tiny, v1): for testing.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="> 1 is faster.")
@click.option("--pitch-shift", type=float, default=0.0, show_default=True, help="Semitones.")
@click.option("--pitch-scale", type=float, default=1.0, show_default=True, help="Intonation range multiplier.")
@click.option("--energy-scale", type=float, default=1.0, show_default=True, help="Loudness multiplier.")
@click.option("--speaker", type=int, default=None, help="Speaker id of a multi-speaker voice.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="float32", show_default=True, help="float32 or bfloat16.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (random-weight presets).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def say(text, output, weights, preset, speed, pitch_shift, pitch_scale, energy_scale, speaker, device, dtype, seed,
        overwrite) -> None:
    """Speak TEXT ('-' reads standard input) into OUTPUT. Long text is split into sentences."""
    from aiprod_core.device import pick_device, pick_dtype, seed_everything
    from aiprod_core.pipeline import ComponentRef, RunContext
    from aiprod_tts.pipeline import Controls, TTSPipelineConfig, run_pipeline

    if (weights is None) == (preset is None):
        raise AiprodError("tts say: give exactly one of --weights DIR or --preset NAME")
    if text == "-":
        text = sys.stdin.read()
    dev = pick_device(device)
    seed_everything(seed)
    ctx = RunContext(source=Path("<tts say>"), device=dev, dtype=pick_dtype(dtype, dev), seed=seed,
                     overwrite=overwrite)
    ref = ComponentRef(name="fastspeech2-hifigan", kind="speech-synthesizer",
                       weights=str(weights) if weights else None, preset=preset)
    cfg = TTSPipelineConfig(synthesizer=ref, text=text, output=str(output),
                            controls=Controls(speed=speed, pitch_shift=pitch_shift, pitch_scale=pitch_scale,
                                              energy_scale=energy_scale, speaker=speaker))
    path = run_pipeline(cfg, ctx)
    click.echo(str(path))
