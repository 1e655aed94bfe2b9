"""``aiprod tts say``: text → audio file. Imports stay inside the command so ``aiprod`` starts fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from aiprod_core.errors import AiprodError


@click.group("tts")
def tts_group() -> None:
    """Text-to-speech (AIPROD-TTS: FastSpeech 2 + HiFi-GAN, 24 kHz)."""


def shipped_weights(name: str, env_var: str) -> Path | None:
    """``weights/tiny/<name>`` of the checkout this package is installed from (editable or source installs;
    the environment variable ``env_var`` names another folder). A wheel has no repository beside it: None."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:  # <repo>/packages/aiprod-tts/src/aiprod_tts/cli.py
        cand = parent / "weights" / "tiny" / name
        if (cand / "config.json").is_file():
            return cand
    return None


def default_voice() -> Path | None:
    """The demo voice that ships with the repository (``AIPROD_TTS_VOICE`` names another folder); None in a
    wheel install, where ``--weights`` is needed."""
    return shipped_weights("tts", "AIPROD_TTS_VOICE")


@tts_group.command("say")
@click.argument("text")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Audio file (.wav/.flac/.ogg).")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Synthesizer component folder [default: the demo voice weights/tiny/tts of this checkout, "
                   "or $AIPROD_TTS_VOICE].")
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
    from aiprod_core.config import validate
    from aiprod_core.device import pick_device, pick_dtype, seed_everything
    from aiprod_core.pipeline import ComponentRef, RunContext
    from aiprod_tts.pipeline import Controls, TTSPipelineConfig, run_pipeline

    if weights is not None and preset is not None:
        raise AiprodError("tts say: give at most one of --weights DIR or --preset NAME")
    if weights is None and preset is None:
        weights = default_voice()
        if weights is None:
            raise AiprodError("tts say: no default voice (weights/tiny/tts ships with the source checkout, not "
                              "with the wheel); give --weights DIR, set AIPROD_TTS_VOICE, or --preset NAME")
    if text == "-":
        text = sys.stdin.read()
    dev = pick_device(device)
    seed_everything(seed)
    ctx = RunContext(source=Path("<tts say>"), device=dev, dtype=pick_dtype(dtype, dev), seed=seed,
                     overwrite=overwrite)
    ref = ComponentRef(name="fastspeech2-hifigan", kind="speech-synthesizer",
                       weights=str(weights) if weights else None, preset=preset)
    controls = Controls(speed=speed, pitch_shift=pitch_shift, pitch_scale=pitch_scale, energy_scale=energy_scale,
                        speaker=speaker)
    cfg = validate(TTSPipelineConfig, {"synthesizer": ref, "text": text, "output": str(output), "controls": controls},
                   source="tts say")  # a bad output extension or an empty text: one line, exit 2
    path = run_pipeline(cfg, ctx)
    click.echo(str(path))


@tts_group.command("g2p-eval")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--limit", type=int, default=500, show_default=True, help="Held-out lexicon words scored.")
@click.option("--check", is_flag=True, help="Exit 1 when the phoneme error rate misses its floor.")
def g2p_eval(folder, limit, check) -> None:
    """Phoneme error rate of a G2P component FOLDER (e.g. weights/tiny/tts/g2p) on held-out CMUdict words."""
    from aiprod_tts.g2p import evaluate_g2p

    r = evaluate_g2p(folder, limit=limit)
    f = r["floor"]
    click.echo(f"{folder}: PER {r['per']:.4f} (without stress {r['per_no_stress']:.4f}), word error rate "
               f"{r['wer']:.4f} on {r['words']} held-out words; floor per {f['op']} {f['value']}: "
               f"{'pass' if f['pass'] else 'FAIL'}")
    if check and not f["pass"]:
        sys.exit(1)


@tts_group.command("per")
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--limit", type=int, default=64, show_default=True, help="Utterances scored.")
@click.option("--g2p", "g2p_weights", type=click.Path(path_type=Path), default=None,
              help="G2P folder for words outside CMUdict [default: the demo voice's, weights/tiny/tts/g2p].")
def per_command(folder, data, limit, g2p_weights) -> None:
    """Phoneme error rate of a phoneme recogniser FOLDER on the recordings of DATA (an LJSpeech folder; its
    heldout/ when it has one), against the phones of their text."""
    from aiprod_tts.recogniser import evaluate_recogniser

    if g2p_weights is None and (voice := default_voice()) is not None and (voice / "g2p").is_dir():
        g2p_weights = voice / "g2p"
    r = evaluate_recogniser(folder, data, limit=limit, g2p_weights=g2p_weights)
    click.echo(f"{folder}: PER {r['per']:.4f} on {r['utterances']} recordings of {data}")
