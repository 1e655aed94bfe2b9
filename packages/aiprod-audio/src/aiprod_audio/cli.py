"""``aiprod audio encode|decode`` and the pipeline kinds ``audio-encode`` / ``audio-decode``.

A codes file is a safetensors file holding ``codes`` ``[1, Q, F]`` int64 plus metadata: the
codec's config (checked on decode), where its weights came from, the sample and frame rates and
the original number of samples (decode trims the padding of the last frame)::

    aiprod audio encode speech.wav -o codes.safetensors --bandwidth 6 --weights runs/codec/final/codec
    aiprod audio decode codes.safetensors -o speech_rec.wav
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import Field

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef

FORMAT = "aiprod-audio-codes/1"


def _codec_source(weights: str | None, preset: str | None, seed: int) -> dict[str, str]:
    if weights is not None:
        return {"weights": str(Path(weights).resolve())}
    return {"preset": preset or "tiny", "seed": str(seed)}


def load_codec(weights: str | None, preset: str | None, seed: int, device: str = "auto"):
    """A codec from a component folder (verified) or, for tests and demos, a seeded random preset."""
    import torch

    from aiprod_audio.model import NACCodec
    from aiprod_core.device import pick_device

    dev = pick_device(device)
    if weights is not None:
        return NACCodec.from_pretrained(weights, device=dev).eval()
    torch.manual_seed(seed)
    return NACCodec.from_preset(preset or "tiny").to(dev).eval()


def encode_file(codec, src: Path, dst: Path, num_codebooks: int, source: dict[str, str]) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from aiprod_audio.data import load_audio

    wav = load_audio(src, codec.sample_rate)
    device = next(codec.parameters()).device
    with torch.no_grad():
        codes = codec.encode(wav[None, None].to(device), num_codebooks).cpu()
    meta = {
        "format": FORMAT,
        "component": codec.component_name,
        "config": json.dumps(codec.config.model_dump(mode="json")),
        "sample_rate": str(codec.sample_rate),
        "frame_rate": str(codec.frame_rate),
        "num_samples": str(wav.shape[-1]),
        "num_codebooks": str(codes.shape[1]),
        **source,
    }
    from aiprod_core.store import atomic_path

    with atomic_path(dst) as tmp:
        save_file({"codes": codes.contiguous()}, str(tmp), metadata=meta)
    return {
        "frames": codes.shape[-1],
        "num_codebooks": codes.shape[1],
        "kbps": codec.bandwidth_kbps(codes.shape[1]),
        "seconds": wav.shape[-1] / codec.sample_rate,
    }


def read_codes(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise AiprodError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "codes" not in f.keys():
                raise AiprodError(f"{path}: no 'codes' tensor (not written by `aiprod audio encode`)")
            codes = f.get_tensor("codes")
    except AiprodError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise AiprodError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise AiprodError(f"{path}: metadata format is {meta.get('format')!r}, expected {FORMAT!r}")
    return codes, meta


def decode_file(codec, src: Path, dst: Path, codes=None, meta=None) -> dict[str, Any]:
    import torch

    from aiprod_audio.data import save_audio

    if codes is None:
        codes, meta = read_codes(src)
    stored = json.loads(meta.get("config", "{}"))
    current = codec.config.model_dump(mode="json")
    if stored:
        # read the stored config through the config model: fields added since (with their defaults) then
        # compare equal, so codes written before a new defaulted field still decode with the same codec
        try:
            stored = type(codec.config).model_validate(stored).model_dump(mode="json")
        except ValueError:
            pass  # a field the codec no longer knows: compare as written, the differing keys are named below
    if stored and stored != current:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise AiprodError(f"{src}: codes were made by a codec with a different config ({', '.join(diff)})")
    device = next(codec.parameters()).device
    with torch.no_grad():
        wav = codec.decode(codes.to(device))[0, 0].float().cpu()
    wav = wav[: int(meta.get("num_samples", wav.shape[-1]))]
    save_audio(dst, wav, codec.sample_rate)
    return {"seconds": wav.shape[-1] / codec.sample_rate}


def _output(path: Path, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise AiprodError(f"{path}: already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@click.group("audio")
def audio_group() -> None:
    """Neural audio codec (nac-rvq): encode audio to codes and back."""


@audio_group.command("encode")
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="codes file (.safetensors)")
@click.option(
    "--bandwidth",
    type=float,
    default=6.0,
    show_default=True,
    help="target kbps: 1.5, 3 or 6 (2, 4 or 8 codebooks at 75 Hz)",
)
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="codec component folder")
@click.option("--preset", default=None, help="random-initialised preset instead of weights (tests/demos)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of a --preset codec")
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
def encode_cmd(input, output, bandwidth, weights, preset, seed, device, overwrite) -> None:
    """Encode a wav/flac file to discrete codes."""
    if weights is not None and preset is not None:
        raise AiprodError("--weights and --preset: give one, not both")
    if weights is None and preset is None:
        raise AiprodError("give --weights <codec folder> (or --preset tiny|v1 for an untrained codec)")
    if not Path(input).is_file():
        raise AiprodError(f"{input}: file not found")
    out = _output(output, overwrite)
    codec = load_codec(None if weights is None else str(weights), preset, seed, device)
    info = encode_file(
        codec,
        input,
        out,
        codec.codebooks_for_bandwidth(bandwidth),
        _codec_source(None if weights is None else str(weights), preset, seed),
    )
    click.echo(
        f"{out}: {info['num_codebooks']} codebooks x {info['frames']} frames "
        f"({info['kbps']:g} kbps, {info['seconds']:.2f} s)"
    )


@audio_group.command("decode")
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="output .wav")
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="codec component folder (default: the one recorded in the codes file)",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
def decode_cmd(input, output, weights, device, overwrite) -> None:
    """Decode a codes file back to a 24 kHz wav."""
    codes, meta = read_codes(input)
    out = _output(output, overwrite)
    if weights is None and "weights" not in meta and "preset" not in meta:
        raise AiprodError(f"{input}: no codec recorded in the file; pass --weights")
    w = str(weights) if weights is not None else meta.get("weights")
    codec = load_codec(w, None if w else meta.get("preset"), int(meta.get("seed", 0)), device)
    info = decode_file(codec, input, out, codes, meta)
    click.echo(f"{out}: {info['seconds']:.2f} s at {codec.sample_rate} Hz")


# -- pipeline kinds ---------------------------------------------------------------------------
class EncodeConfig(StrictModel):
    """``pipeline: audio-encode``."""

    codec: ComponentRef = Field(description="the nac-rvq codec (weights folder or preset)")
    input: str = Field(description="wav/flac file")
    output: str = Field(description="codes .safetensors file")
    bandwidth: float = Field(6.0, gt=0, description="target kbps (1.5 / 3 / 6)")


class DecodeConfig(StrictModel):
    """``pipeline: audio-decode``."""

    codec: ComponentRef = Field(description="the codec that made the codes")
    input: str = Field(description="codes .safetensors file")
    output: str = Field(description="output wav")


def _source_of(ref: ComponentRef, seed: int) -> dict[str, str]:
    return _codec_source(ref.weights, ref.preset, seed)


def run_encode(config: EncodeConfig, ctx) -> dict[str, Any]:
    codec = config.codec.load(ctx).float()
    src = ctx.resolve(config.input)
    if not src.is_file():
        raise AiprodError(f"{ctx.source}: input: {src} not found")
    return encode_file(
        codec,
        src,
        ctx.output_path(config.output),
        codec.codebooks_for_bandwidth(config.bandwidth),
        _source_of(config.codec, ctx.seed),
    )


def run_decode(config: DecodeConfig, ctx) -> dict[str, Any]:
    codec = config.codec.load(ctx).float()
    src = ctx.resolve(config.input)
    codes, meta = read_codes(src)
    return decode_file(codec, src, ctx.output_path(config.output), codes, meta)
