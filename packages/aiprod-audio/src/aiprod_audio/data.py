"""Audio data: folders of wav/flac read with soundfile, mixed to mono, resampled to 24 kHz.

Folders are scanned recursively, so the usual corpora work as they unpack:
LJSpeech (``LJSpeech-1.1/wavs/LJ001-0001.wav``, metadata.csv ignored) and LibriTTS
(``LibriTTS/train-clean-100/<speaker>/<chapter>/<id>.wav``). Random segments are drawn only
from the generator the trainer hands over, so a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from aiprod_core.errors import AiprodError

EXTENSIONS = (".wav", ".flac")


def find_audio_files(roots: list[str | Path]) -> list[Path]:
    """Every .wav/.flac under the given folders (or the files themselves), sorted."""
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file() and root.suffix.lower() in EXTENSIONS:
            files.append(root)
        elif root.is_dir():
            files += [p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()]
        else:
            raise AiprodError(f"{root}: no such audio file or folder")
    files = sorted(set(files))
    if not files:
        raise AiprodError(f"{', '.join(map(str, roots))}: no .wav or .flac files found")
    return files


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Read a whole file -> mono float32 ``[N]`` at ``sample_rate``."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AiprodError(f"{path}: cannot read audio ({err})") from None
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != sample_rate:
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
    return wav


def save_audio(path: str | Path, wav: torch.Tensor, sample_rate: int) -> None:
    """Write mono float audio ``[N]`` or ``[1, N]`` as 16-bit PCM wav (clipped to [-1, 1])."""
    data = wav.detach().float().cpu().reshape(-1).clamp(-1, 1).numpy()
    sf.write(str(path), data, sample_rate, subtype="PCM_16")


@dataclass
class _Entry:
    path: Path
    frames: int
    sample_rate: int


class AudioFolder:
    """Random fixed-length segments from a set of audio files.

    Files are opened lazily (only the segment is read, then resampled), so corpora of any size
    work; files shorter than a segment are zero-padded.
    """

    def __init__(self, roots: list[str | Path], sample_rate: int, segment_samples: int):
        self.sample_rate = sample_rate
        self.segment_samples = segment_samples
        self.entries = []
        for p in find_audio_files(roots):
            try:
                info = sf.info(str(p))
            except (RuntimeError, sf.LibsndfileError) as err:
                raise AiprodError(f"{p}: cannot read audio ({err})") from None
            self.entries.append(_Entry(p, info.frames, info.samplerate))
        # sample files proportionally to their duration
        durations = torch.tensor([e.frames / e.sample_rate for e in self.entries], dtype=torch.float64)
        self.weights = durations / durations.sum()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_seconds(self) -> float:
        return float(sum(e.frames / e.sample_rate for e in self.entries))

    def segment(self, generator: torch.Generator) -> torch.Tensor:
        e = self.entries[int(torch.multinomial(self.weights, 1, generator=generator))]
        n_src = int(np.ceil(self.segment_samples * e.sample_rate / self.sample_rate)) + 1
        start = int(torch.randint(0, max(e.frames - n_src, 0) + 1, (1,), generator=generator))
        data, sr = sf.read(str(e.path), start=start, frames=n_src, dtype="float32", always_2d=True)
        wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        wav = wav[: self.segment_samples]
        return torch.nn.functional.pad(wav, (0, self.segment_samples - wav.shape[0]))

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``[batch_size, 1, segment_samples]`` float32."""
        return torch.stack([self.segment(generator) for _ in range(batch_size)])[:, None]
