"""Corpora (LJSpeech and LibriTTS layouts), resampling to 24 kHz, and the cached feature set.

LJSpeech layout: ``root/metadata.csv`` (``id|text|normalized text``) and ``root/wavs/<id>.wav``.
LibriTTS layout: ``root/<speaker>/<chapter>/<id>.wav`` with ``<id>.normalized.txt`` (or ``.original.txt``).
Features (tokens, log-mel, log-F0 + voicing, energy, waveform) are computed once per utterance and
cached as safetensors in ``cache_dir``, keyed by the utterance id and a hash of the settings.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF
from safetensors.torch import load_file, save_file

from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_path
from aiprod_tts.audio import AudioConfig, features
from aiprod_tts.frontend import TextFrontend


@dataclass
class Utterance:
    id: str
    text: str
    wav: Path
    speaker: int = 0


def load_ljspeech(root: str | Path) -> list[Utterance]:
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise AiprodError(f"{meta}: missing (LJSpeech layout: metadata.csv + wavs/)")
    out = []
    with open(meta, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise AiprodError(f"{meta}: line {n}: expected 'id|text[|normalized text]', got {'|'.join(row)!r}")
            text = row[2] if len(row) > 2 and row[2].strip() else row[1]
            wav = root / "wavs" / f"{row[0]}.wav"
            if not wav.is_file():
                raise AiprodError(f"{meta}: line {n}: audio file {wav} is missing")
            out.append(Utterance(row[0], text, wav))
    if not out:
        raise AiprodError(f"{meta}: no utterances")
    return out


def load_libritts(root: str | Path) -> list[Utterance]:
    root = Path(root)
    wavs = sorted(root.glob("*/*/*.wav"))
    if not wavs:
        raise AiprodError(f"{root}: no <speaker>/<chapter>/<id>.wav files (LibriTTS layout)")
    speakers = {s: i for i, s in enumerate(sorted({w.parent.parent.name for w in wavs}))}
    out = []
    for w in wavs:
        txt = next((p for p in (w.with_suffix(".normalized.txt"), w.with_suffix(".original.txt")) if p.is_file()), None)
        if txt is None:
            raise AiprodError(f"{w}: no transcript ({w.stem}.normalized.txt or .original.txt)")
        out.append(Utterance(w.stem, txt.read_text(encoding="utf-8").strip(), w, speakers[w.parent.parent.name]))
    return out


def read_wav(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Mono float32 [N] at ``sample_rate`` (mixed down and resampled as needed)."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AiprodError(f"{path}: cannot read audio ({err})") from None
    wav = torch.from_numpy(data).mean(1)
    if sr != sample_rate:
        wav = AF.resample(wav, sr, sample_rate)
    return wav.clamp(-1, 1)


def read_durations(path: Path, n_tokens: int, n_frames: int) -> torch.Tensor:
    """External durations: one integer (frames) per token, whitespace separated, summing to the frame count."""
    try:
        d = torch.tensor([int(x) for x in path.read_text().split()], dtype=torch.long)
    except ValueError:
        raise AiprodError(f"{path}: expected whitespace-separated integers (frames per token)") from None
    if d.numel() != n_tokens or int(d.sum()) != n_frames:
        raise AiprodError(f"{path}: {d.numel()} durations summing to {int(d.sum())}, "
                          f"expected {n_tokens} tokens summing to {n_frames} frames")
    return d


class FeatureSet:
    """Utterances with features cached on disk; ``item(i)`` returns a dict of tensors."""

    def __init__(self, utterances: list[Utterance], frontend: TextFrontend, audio: AudioConfig, cache_dir: Path,
                 durations_dir: Path | None = None, keep_wav: bool = True):
        self.audio, self.cache_dir = audio, Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        key = json.dumps([audio.model_dump(exclude={"pitch_mean", "pitch_std", "energy_mean", "energy_std"}),
                          *frontend.cache_key()], sort_keys=True)
        self.tag = hashlib.sha256(key.encode()).hexdigest()[:12]
        todo = [u for u in utterances if not self._path(u).is_file()]
        if todo:
            encoded = frontend.encode_batch([u.text for u in todo])
            for u, enc in zip(todo, encoded):
                wav = read_wav(u.wav, audio.sample_rate)
                feats = features(wav, audio)
                item = {"tokens": torch.tensor(enc.ids, dtype=torch.long), "speaker": torch.tensor(u.speaker),
                        **feats, "voiced": feats["voiced"].to(torch.uint8)}
                if keep_wav:
                    item["wav"] = wav
                with atomic_path(self._path(u)) as tmp:
                    save_file({k: v.contiguous() for k, v in item.items()}, str(tmp))
        self.utterances, self.skipped = [], []
        for u in utterances:
            item = self.item_of(u)
            n_tok, n_frames = item["tokens"].numel(), item["mel"].shape[-1]
            # the aligner gives every token at least one frame
            (self.utterances if 0 < n_tok <= n_frames else self.skipped).append(u)
        if not self.utterances:
            raise AiprodError(f"{cache_dir}: no usable utterance (all have more tokens than frames or no tokens)")
        self.durations_dir = Path(durations_dir) if durations_dir else None

    def _path(self, u: Utterance) -> Path:
        return self.cache_dir / f"{u.id}.{self.tag}.safetensors"

    def item_of(self, u: Utterance) -> dict[str, torch.Tensor]:
        return load_file(str(self._path(u)))

    def __len__(self) -> int:
        return len(self.utterances)

    def item(self, i: int) -> dict[str, torch.Tensor]:
        u = self.utterances[i]
        item = self.item_of(u)
        item["voiced"] = item["voiced"].bool()
        if self.durations_dir is not None:
            item["durations"] = read_durations(self.durations_dir / f"{u.id}.txt", item["tokens"].numel(),
                                               item["mel"].shape[-1])
        return item

    def statistics(self) -> dict[str, float]:
        """Mean/std of voiced log-F0 and of log energy over the corpus (stored in the model's audio config)."""
        f0, en = [], []
        for i in range(len(self)):
            it = self.item(i)
            f0.append(it["log_f0"][it["voiced"]])
            en.append(it["energy"])
        f0_all, en_all = torch.cat(f0), torch.cat(en)
        if f0_all.numel() < 2:
            raise AiprodError(f"{self.cache_dir}: fewer than 2 voiced frames in the corpus; is the audio silent?")
        return {"pitch_mean": float(f0_all.mean()), "pitch_std": float(f0_all.std().clamp_min(1e-3)),
                "energy_mean": float(en_all.mean()), "energy_std": float(en_all.std().clamp_min(1e-3))}


def pad_stack(tensors: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """Right-pad the last dimension and stack."""
    n = max(t.shape[-1] for t in tensors)
    return torch.stack([torch.nn.functional.pad(t, (0, n - t.shape[-1]), value=value) for t in tensors])


def collate_acoustic(items: list[dict[str, torch.Tensor]], audio: AudioConfig) -> dict[str, torch.Tensor]:
    """Pad a list of items; pitch and energy normalised with the corpus statistics (unvoiced pitch = 0)."""
    pitch = [torch.where(it["voiced"], (it["log_f0"] - audio.pitch_mean) / audio.pitch_std, 0.0) for it in items]
    batch = {
        "tokens": pad_stack([it["tokens"] for it in items]),
        "token_lens": torch.tensor([it["tokens"].numel() for it in items]),
        "mels": pad_stack([it["mel"] for it in items], value=float(torch.log(torch.tensor(1e-5)))),
        "mel_lens": torch.tensor([it["mel"].shape[-1] for it in items]),
        "pitch": pad_stack(pitch),
        "voiced": pad_stack([it["voiced"].float() for it in items]).bool(),
        "energy": pad_stack([(it["energy"] - audio.energy_mean) / audio.energy_std for it in items]),
        "speaker": torch.stack([it["speaker"].long() for it in items]),
    }
    if all("durations" in it for it in items):
        batch["durations"] = pad_stack([it["durations"] for it in items])
    return batch
