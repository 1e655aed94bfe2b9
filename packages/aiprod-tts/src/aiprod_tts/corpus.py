"""Write a small LJSpeech-layout corpus spoken by espeak-ng (for tests and the demo; no downloaded data).

Sentences come from a seeded template grammar that exercises the normaliser (numbers, times,
money, abbreviations). ``metadata.csv`` holds ``id|raw text|normalized text``; audio is espeak-ng's
22.05 kHz mono output, so loading also exercises resampling to 24 kHz.

With ``heldout > 0`` the corpus is split into ``OUT/train/`` and ``OUT/heldout/`` (each an LJSpeech
folder); held-out sentences never occur in train/ (sentences are drawn without repetition), so a
model evaluated there (``aiprod eval``) speaks text it has not seen.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_dir
from aiprod_tts.frontend import espeak_subprocess_env, normalize_text

_SUBJECTS = ["the old man", "a small dog", "my sister", "the teacher", "Dr. Brown", "our neighbour", "the pilot",
             "a quiet child", "the baker", "Mr. Green"]
_VERBS = ["found", "painted", "carried", "opened", "watched", "bought", "cleaned", "sold", "moved", "lost"]
_OBJECTS = ["a red box", "the green door", "two heavy bags", "the morning paper", "a silver key", "the blue car",
            "three apples", "an empty bottle", "the long letter", "a wooden chair"]
_TAILS = ["", " at 10:30 am", " for $3.50", " on the 2nd of May", " in 1984", " near the river",
          " before noon", " with 12 friends", " yesterday", " again"]
_ENDS = [".", ".", ".", "!", "?"]


def make_sentences(n: int, seed: int = 0, short: bool = False) -> list[str]:
    """``n`` seeded sentences; ``short`` drops the adverbial tail (about 1.5 s of speech each)."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        tail = rng.choice(_TAILS)
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{'' if short else tail}"
        s = s[0].upper() + s[1:] + rng.choice(_ENDS)
        if s.lower()[:-1] not in seen:  # distinct sentences: a held-out one never repeats a training one
            seen.add(s.lower()[:-1])
            out.append(s)
    return out


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AiprodError("the corpus tool needs the system package 'espeak-ng' (apt-get install espeak-ng)")
    return exe


def _speak(exe: str, folder: Path, sentences: list[str], first: int, voice: str, rate: int) -> None:
    (folder / "wavs").mkdir(parents=True)
    lines = []
    for i, text in enumerate(sentences, start=first):
        uid = f"ESP001-{i:04d}"
        # pitch varies per utterance so the pitch predictor has something to learn
        pitch = 35 + (i * 7) % 30
        # output to a file only, and an environment in which libespeak-ng opens no audio device (no socket)
        proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w",
                               str(folder / "wavs" / f"{uid}.wav"), text], capture_output=True, text=True,
                              env=espeak_subprocess_env(), stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise AiprodError(f"espeak-ng failed on {text!r}: {proc.stderr.strip()[:200]}")
        lines.append(f"{uid}|{text}|{normalize_text(text)}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_corpus(out_dir: str | Path, n: int = 16, seed: int = 0, voice: str = "en-us", rate: int = 175,
                overwrite: bool = False, short: bool = False, heldout: int = 0, heldout_only: bool = False) -> Path:
    """Write ``n`` utterances to ``out_dir`` (metadata.csv + wavs/), atomically. Returns out_dir.

    ``heldout > 0``: ``n`` utterances in ``out_dir/train`` and ``heldout`` more in ``out_dir/heldout``;
    ``heldout_only``: the held-out split alone (the same sentences and ids; evaluating a re-drawn set needs no
    training split, and speaking it is 16x the work)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise AiprodError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if heldout < 0:
        raise AiprodError(f"heldout must be >= 0, got {heldout}")
    if heldout_only and not heldout:
        raise AiprodError("heldout_only needs heldout > 0")
    exe = espeak_binary()
    sentences = make_sentences(n + heldout, seed, short)
    with atomic_dir(out_dir) as tmp:
        if heldout:
            if not heldout_only:
                _speak(exe, tmp / "train", sentences[:n], 0, voice, rate)
            _speak(exe, tmp / "heldout", sentences[n:], n, voice, rate)
        else:
            _speak(exe, tmp, sentences, 0, voice, rate)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("-n", type=int, default=16, help="number of utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voice", default="en-us")
    p.add_argument("--short", action="store_true", help="short sentences (tests)")
    p.add_argument("--heldout", type=int, default=0, help="also write this many unseen sentences to OUT/heldout "
                   "(the n others go to OUT/train)")
    p.add_argument("--heldout-only", action="store_true", help="write OUT/heldout alone (a re-drawn evaluation set)")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        print(make_corpus(a.out_dir, a.n, a.seed, a.voice, overwrite=a.overwrite, short=a.short,
                          heldout=a.heldout, heldout_only=a.heldout_only))
    except AiprodError as err:
        raise SystemExit(f"make_tts_corpus: error: {err}") from None
