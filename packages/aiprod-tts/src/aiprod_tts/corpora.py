"""Several speech corpora in one run, drawn by the core epoch sampler.

``data.roots`` lists corpus folders of either layout (:func:`aiprod_tts.data.load_ljspeech`,
:func:`aiprod_tts.data.load_libritts`). Speakers keep their identity: each root's speakers (one for an
LJSpeech folder, one per speaker folder of LibriTTS, in name order) get consecutive global ids in root
order, and :func:`load_corpora` returns which id is whom (``"LJSpeech"``, ``"LibriTTS/84"``). Utterance
ids are prefixed with the root's position when there are several roots, so two corpora may reuse ids.

:class:`StepItems` picks a step's utterances with :class:`aiprod_core.data.EpochSampler`: epochs
without replacement, disjoint across ranks, a pure function of (seed, world size, step).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError


class CorpusRoot(StrictModel):
    format: Literal["ljspeech", "libritts"] = "ljspeech"
    root: str = Field(description="corpus folder")
    max_utterances: int | None = Field(None, ge=1, description="use the first N of this corpus")


def load_corpora(roots: list[CorpusRoot]):
    """Utterances of every root, with global speaker ids; returns ``(utterances, speaker names)``."""
    from aiprod_tts.data import load_libritts, load_ljspeech

    if not roots:
        raise AiprodError("data.roots: list at least one corpus")
    out, names = [], []
    for k, r in enumerate(roots):
        root = Path(r.root)
        utts = (load_ljspeech if r.format == "ljspeech" else load_libritts)(root)[: r.max_utterances]
        # LibriTTS: the speaker folders present (max_utterances may drop some), in name order
        local = [root.name] if r.format == "ljspeech" else sorted({u.wav.parent.parent.name for u in utts})
        offset = len(names)
        names += [root.name] if r.format == "ljspeech" else [f"{root.name}/{s}" for s in local]
        for u in utts:
            local_id = 0 if r.format == "ljspeech" else local.index(u.wav.parent.parent.name)
            out.append(replace(u, id=f"{k}_{u.id}" if len(roots) > 1 else u.id, speaker=offset + local_id))
    ids = [u.id for u in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise AiprodError(f"data.roots: utterance id {dup!r} appears twice in one corpus")
    return out, names


class StepItems:
    """The utterance indices this rank trains on at ``step`` (``grad_accum`` calls per step, in order):
    :class:`aiprod_core.data.StepIndices` over the corpus."""

    def __init__(self, n_items: int, batch_size: int, seed: int = 0, grad_accum: int = 1):
        from aiprod_core.data import StepIndices

        self._indices = StepIndices(n_items, batch_size, seed, grad_accum)

    def __call__(self, step: int) -> list[int]:
        return self._indices(step)
