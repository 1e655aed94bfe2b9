"""A pipeline kind: read a wav, encode and decode it with any audio codec, write a wav."""

from __future__ import annotations

import wave

import numpy as np
import torch

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef, RunContext
from aiprod_core.store import atomic_path


class RoundTripConfig(StrictModel):
    codec: ComponentRef
    input: str
    output: str


def read_wav(path) -> tuple[torch.Tensor, int]:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise AiprodError(f"{path}: expected 16-bit PCM")
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
            rate = w.getframerate()
    except (OSError, wave.Error) as err:
        raise AiprodError(f"{path}: cannot read wav ({err})") from None
    return torch.from_numpy(data.mean(axis=1).astype(np.float32) / 32768.0), rate


def write_wav(path, wav: torch.Tensor, rate: int) -> None:
    pcm = (wav.clamp(-1, 1) * 32767).round().to(torch.int16).cpu().numpy()
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def run_roundtrip(cfg: RoundTripConfig, ctx: RunContext) -> str:
    out = ctx.output_path(cfg.output)
    wav, rate = read_wav(ctx.resolve(cfg.input))
    codec = cfg.codec.load(ctx)
    with torch.no_grad():
        codes = codec.encode(wav.view(1, 1, -1).to(ctx.device, ctx.dtype))
        rec = codec.decode(codes).view(-1).float()
    write_wav(out, rec, rate)
    return str(out)
