"""(prompt, caption) pairs: a JSONL file, or a procedural set for tests and smoke runs.

JSONL: one object per line with string fields ``prompt`` (the short user prompt) and
``caption`` (the long video caption it should be read as). Blank lines are skipped; any
other problem is reported with its file and line number.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from aiprod_core.errors import AiprodError

Pair = tuple[str, str]


def read_pairs(path: str | Path) -> list[Pair]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise AiprodError(f"{path}: file not found (JSONL of {{\"prompt\": ..., \"caption\": ...}} lines)")
    pairs: list[Pair] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise AiprodError(f"{path}:{n}: not valid JSON ({err})") from None
            if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) and obj[k].strip()
                                                    for k in ("prompt", "caption")):
                raise AiprodError(f"{path}:{n}: expected non-empty string fields 'prompt' and 'caption'")
            pairs.append((obj["prompt"], obj["caption"]))
    if not pairs:
        raise AiprodError(f"{path}: no (prompt, caption) pairs")
    return pairs


def write_pairs(path: str | Path, pairs: list[Pair]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": p, "caption": c}) + "\n" for p, c in pairs), encoding="utf-8")
    return path


_SUBJECTS = ["a red fox", "an old fisherman", "a paper boat", "two dancers", "a steam train", "a white cat",
             "a lighthouse", "a hot air balloon", "a street musician", "a mountain goat"]
_ACTIONS = ["running through", "drifting over", "resting in", "spinning across", "climbing up", "waiting in"]
_PLACES = ["a snowy forest", "a calm harbour", "a neon-lit alley", "a wheat field", "a rocky cliff", "the rain"]
_SHOTS = ["Wide establishing shot", "Slow dolly-in close-up", "Handheld medium shot", "Aerial drone shot"]
_LIGHT = ["golden hour light", "soft overcast light", "cold blue moonlight", "flickering warm lamps"]
_MOOD = ["calm and dreamy", "tense and cinematic", "joyful and bright", "melancholic"]


def synthetic_pairs(n: int, seed: int = 0) -> list[Pair]:
    """``n`` procedural (prompt, caption) pairs: the caption restates the prompt with camera,
    light and mood, as a captioner of video clips would."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        s, a, p = rng.choice(_SUBJECTS), rng.choice(_ACTIONS), rng.choice(_PLACES)
        prompt = f"{s} {a} {p}"
        caption = (f"{rng.choice(_SHOTS)} of {s} {a} {p}, lit by {rng.choice(_LIGHT)}. "
                   f"The camera moves slowly; the mood is {rng.choice(_MOOD)}.")
        pairs.append((prompt, caption))
    return pairs
