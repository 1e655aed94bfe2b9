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
    """Fixed-length segments from a set of audio files.

    Files are opened lazily (only the segment is read, then resampled), so corpora of any size
    work; files shorter than a segment are zero-padded. Each folder's file headers are read once and
    cached in ``.audio.index.npz`` there (rebuilt when a file changes), not on every start of every rank.

    With the step (``batch(n, generator, step=step)``) every file is cut into segment slots and the core
    :class:`~aiprod_core.data.EpochSampler` hands them out: each slot once per epoch, ranks disjoint, a
    pure function of (seed, world size, step). Without it, segments are drawn from ``generator`` with
    files weighted by duration.
    """

    INDEX = ".audio.index.npz"

    def __init__(self, roots: list[str | Path], sample_rate: int, segment_samples: int, *, seed: int = 0,
                 grad_accum: int = 1):
        self.sample_rate = sample_rate
        self.segment_samples = segment_samples
        self.seed, self.grad_accum = seed, grad_accum
        self.entries = []
        for p, frames, sr in self._headers(roots):
            self.entries.append(_Entry(p, frames, sr))
        # sample files proportionally to their duration
        durations = torch.tensor([e.frames / e.sample_rate for e in self.entries], dtype=torch.float64)
        self.weights = durations / durations.sum()
        # segment slots per file (at least one: short files are padded), for the epoch sampler
        slots = np.maximum(1, np.ceil(durations.numpy() * sample_rate / segment_samples).astype(np.int64))
        self.slot_end = np.cumsum(slots)
        self._sampler = None
        self._last = (-1, 0)

    @classmethod
    def _headers(cls, roots: list[str | Path]) -> list[tuple[Path, int, int]]:
        from aiprod_core.data import Index, fingerprint_files

        def info(p: Path) -> tuple[int, int]:
            try:
                i = sf.info(str(p))
            except (RuntimeError, sf.LibsndfileError) as err:
                raise AiprodError(f"{p}: cannot read audio ({err})") from None
            return i.frames, i.samplerate

        out: dict[Path, tuple[int, int]] = {}
        for root in roots:
            root = Path(root)
            files = find_audio_files([root])
            if root.is_file():
                out[files[0]] = info(files[0])
                continue

            def build(files=files, root=root) -> Index:
                rows = [(f.relative_to(root).as_posix(), *info(f)) for f in files]
                return Index({"key": [r[0] for r in rows], "frames": [r[1] for r in rows],
                              "sample_rate": [r[2] for r in rows]}, {"kind": "audio"})

            idx = Index.cached(root / cls.INDEX, fingerprint_files(files), build)
            for k, n, sr in zip(idx["key"], idx["frames"], idx["sample_rate"]):
                out[root / str(k)] = (int(n), int(sr))
        return [(p, *out[p]) for p in sorted(out)]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_seconds(self) -> float:
        return float(sum(e.frames / e.sample_rate for e in self.entries))

    def segment(self, generator: torch.Generator) -> torch.Tensor:
        e = self.entries[int(torch.multinomial(self.weights, 1, generator=generator))]
        n_src = int(np.ceil(self.segment_samples * e.sample_rate / self.sample_rate)) + 1
        start = int(torch.randint(0, max(e.frames - n_src, 0) + 1, (1,), generator=generator))
        return self._read(e, start, n_src)

    def _read(self, e: _Entry, start: int, n_src: int) -> torch.Tensor:
        data, sr = sf.read(str(e.path), start=start, frames=n_src, dtype="float32", always_2d=True)
        wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        wav = wav[: self.segment_samples]
        return torch.nn.functional.pad(wav, (0, self.segment_samples - wav.shape[0]))

    def slot(self, j: int, generator: torch.Generator) -> torch.Tensor:
        """Segment slot ``j`` (file, then position in it), shifted by up to one segment for variety."""
        f = int(np.searchsorted(self.slot_end, j, side="right"))
        k = j - (int(self.slot_end[f - 1]) if f else 0)
        e = self.entries[f]
        n_src = int(np.ceil(self.segment_samples * e.sample_rate / self.sample_rate)) + 1
        jitter = int(torch.randint(0, n_src, (1,), generator=generator))
        start = min(k * (n_src - 1) + jitter, max(e.frames - n_src, 0))
        return self._read(e, start, n_src)

    def batch(self, batch_size: int, generator: torch.Generator, step: int | None = None) -> torch.Tensor:
        """``[batch_size, 1, segment_samples]`` float32."""
        if step is None:
            return torch.stack([self.segment(generator) for _ in range(batch_size)])[:, None]
        from aiprod_core.data import EpochSampler, rank_and_world

        if self._sampler is None or self._sampler.batch_size != batch_size:
            self._rank, world = rank_and_world()
            self._sampler = EpochSampler(np.zeros(int(self.slot_end[-1]), np.int64), batch_size=batch_size,
                                         world_size=world, seed=self.seed, grad_accum=self.grad_accum)
        micro = self._last[1] + 1 if self._last[0] == step else 0
        self._last = (step, micro)
        idx = self._sampler.indices(step, self._rank, micro % self.grad_accum)
        return torch.stack([self.slot(j, generator) for j in idx])[:, None]
