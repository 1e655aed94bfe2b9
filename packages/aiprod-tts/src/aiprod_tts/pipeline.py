"""The ``tts`` pipeline kind (``aiprod run``): text or a text file → audio file, written atomically."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef

_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def write_audio(path: str | Path, wav, sample_rate: int) -> Path:
    """Write mono float audio atomically; the format follows the extension (.wav, .flac, .ogg).
    ``wav`` is one array/tensor or an iterable of them (a stream: each piece is written as it comes)."""
    import soundfile as sf

    from aiprod_core.store import atomic_path

    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AiprodError(f"{path}: unsupported audio extension {path.suffix!r} (use {', '.join(_FORMATS)})")
    pieces = [wav] if hasattr(wav, "shape") else wav
    with atomic_path(path) as tmp, sf.SoundFile(str(tmp), "w", sample_rate, 1, subtype=fmt[1], format=fmt[0]) as f:
        for piece in pieces:
            f.write(piece.detach().float().cpu().numpy() if hasattr(piece, "detach") else piece)
    return path


class Controls(StrictModel):
    speed: float = Field(1.0, ge=0.25, le=4)  # > 1 speaks faster; bounded: 1e-9 would need petabytes
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

    @model_validator(mode="after")
    def _one_text(self) -> TTSPipelineConfig:
        if (self.text is None) == (self.text_file is None):
            raise ValueError("give exactly one of 'text' or 'text_file'")
        if self.text is not None and not any(ch.isalnum() for ch in self.text):
            raise ValueError("'text' has nothing to speak (no letter or digit)")
        if Path(self.output).suffix.lower() not in _FORMATS:
            raise ValueError(f"'output' must end in {', '.join(_FORMATS)} (got {Path(self.output).suffix!r})")
        return self


# streaming options used when the synthesizer's stream takes them (issue 21): the first sentence is vocoded in
# growing chunks from 0.1 s, and a first sentence of more than 12 words is cut at its first clause mark, so
# the first audio waits for one clause and one short chunk (equal to whole vocoding to float rounding; the
# clause cut adds a clause pause there, as the over-long-sentence split does)
STREAM_OPTIONS = {"first_chunk_seconds": 0.1, "first_clause_words": 12}


def speak(synth, text: str, controls: Controls):
    """The synthesizer's stream of pieces (sentence by sentence, the first one in growing chunks) when it has
    one, else the whole wav."""
    kw = controls.model_dump(exclude={"speaker"} if controls.speaker is None else set())
    stream = getattr(synth, "synthesize_stream", None)
    if stream is None:
        return synth.synthesize(text, **kw)
    import inspect

    params = inspect.signature(stream).parameters
    return stream(text, **kw, **{k: v for k, v in STREAM_OPTIONS.items() if k in params})


def run_pipeline(config: TTSPipelineConfig, ctx) -> Path:
    if (config.text is None) == (config.text_file is None):
        raise AiprodError(f"{ctx.source}: give exactly one of 'text' or 'text_file'")
    if config.text is not None:
        text = config.text
    else:
        try:
            text = ctx.resolve(config.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise AiprodError(f"{ctx.source}: text_file: cannot read {config.text_file} as UTF-8 text ({err})") from None
        if not any(ch.isalnum() for ch in text):
            raise AiprodError(f"{ctx.source}: text_file: {config.text_file} has nothing to speak (no letter or digit)")
    out = ctx.output_path(config.output)
    synth = config.synthesizer.load(ctx)
    wav = speak(synth, text, config.controls)
    return write_audio(out, wav, synth.sample_rate)


