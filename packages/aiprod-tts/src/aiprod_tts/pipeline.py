"""The ``tts`` pipeline kind (``aiprod run``): text or a text file → audio file, written atomically."""

from __future__ import annotations

from pathlib import Path

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef

_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def write_audio(path: str | Path, wav, sample_rate: int) -> Path:
    """Write mono float audio atomically; the format follows the extension (.wav, .flac, .ogg)."""
    import soundfile as sf

    from aiprod_core.store import atomic_path

    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AiprodError(f"{path}: unsupported audio extension {path.suffix!r} (use {', '.join(_FORMATS)})")
    data = wav.detach().float().cpu().numpy() if hasattr(wav, "detach") else wav
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, format=fmt[0], subtype=fmt[1])
    return path


class Controls(StrictModel):
    speed: float = 1.0  # > 1 speaks faster
    pitch_shift: float = 0.0  # semitones
    pitch_scale: float = 1.0  # intonation range
    energy_scale: float = 1.0  # loudness
    speaker: int | None = None  # multi-speaker voices (LibriTTS)


class TTSPipelineConfig(StrictModel):
    """``pipeline: tts`` — speak a text (or a text file) into an audio file."""

    synthesizer: ComponentRef  # e.g. {name: fastspeech2-hifigan, weights: weights/aiprod-tts-v1}
    text: str | None = None
    text_file: str | None = None  # UTF-8 text; used when `text` is not given
    output: str  # .wav / .flac / .ogg
    controls: Controls = Controls()


def speak(synth, text: str, controls: Controls):
    return synth.synthesize(text, **controls.model_dump(exclude={"speaker"} if controls.speaker is None else set()))


def run_pipeline(config: TTSPipelineConfig, ctx) -> Path:
    if (config.text is None) == (config.text_file is None):
        raise AiprodError(f"{ctx.source}: give exactly one of 'text' or 'text_file'")
    text = config.text if config.text is not None else ctx.resolve(config.text_file).read_text(encoding="utf-8")
    out = ctx.output_path(config.output)
    synth = config.synthesizer.load(ctx)
    wav = speak(synth, text, config.controls)
    return write_audio(out, wav, synth.sample_rate)


