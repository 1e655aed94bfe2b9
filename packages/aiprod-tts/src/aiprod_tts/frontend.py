"""TextFrontend: English text normalisation, grapheme-to-phoneme and the symbol inventory.

Pipeline: ``normalize_text`` (numbers, ordinals, abbreviations, currency, times, punctuation)
→ ``phonemize`` (phonemizer + espeak-ng, IPA with stress marks) or characters
→ ``SymbolTable.encode`` (ids; unknown symbols are reported, never silently dropped).

The inventory (the ordered symbol list) is part of the synthesizer's config, so it is saved
in ``config.json`` with the weights and a loaded model always speaks the table it was trained on.
"""

from __future__ import annotations

import functools
import re
import shutil
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

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
# Numbers to words
# ---------------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion"]
_ORD_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def _below_thousand(n: int) -> str:
    words = []
    if n >= 100:
        words.append(f"{_ONES[n // 100]} hundred")
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else ""))
    elif n or not words:
        words.append(_ONES[n])
    return " ".join(words)


def number_to_words(n: int) -> str:
    """Cardinal number in words: 1234 → 'one thousand two hundred thirty-four'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 1000:
        return _below_thousand(n)
    groups, scale = [], 0
    while n:
        n, rem = divmod(n, 1000)
        if rem:
            if scale >= len(_SCALES):
                raise AiprodError(f"number too large to read aloud: more than {3 * len(_SCALES)} digits")
            groups.append(_below_thousand(rem) + (f" {_SCALES[scale]}" if scale else ""))
        scale += 1
    return " ".join(reversed(groups))


def ordinal_to_words(n: int) -> str:
    """21 → 'twenty-first', 100 → 'one hundredth'."""
    words = number_to_words(n)
    head, sep, last = max((words.rpartition(" "), words.rpartition("-")), key=lambda p: len(p[0]))
    if last in _ORD_IRREGULAR:
        last = _ORD_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_to_words(n: int) -> str:
    """1984 → 'nineteen eighty-four', 2008 → 'two thousand eight', 1900 → 'nineteen hundred'."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return number_to_words(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{number_to_words(hi)} hundred"
    return f"{number_to_words(hi)} {'oh ' + _ONES[lo] if lo < 10 else number_to_words(lo)}"


# ---------------------------------------------------------------------------------------
# Normalisation rules (order matters: currency and times before plain numbers)
# ---------------------------------------------------------------------------------------
_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "co": "company",
    "jr": "junior", "sr": "senior", "maj": "major", "gen": "general", "capt": "captain", "lt": "lieutenant",
    "col": "colonel", "sgt": "sergeant", "rev": "reverend", "hon": "honorable", "prof": "professor",
    "ft": "fort", "mt": "mount", "vs": "versus", "etc": "et cetera", "approx": "approximately",
    "dept": "department", "inc": "incorporated", "ltd": "limited", "ave": "avenue", "jan": "january",
    "feb": "february", "aug": "august", "sept": "september", "oct": "october", "nov": "november", "dec": "december",
}
_ABBR_RE = re.compile(r"\b(" + "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True)) + r")\.", re.IGNORECASE)
_NUMBER_ABBR_RE = re.compile(r"\b(no)\.\s*(?=\d)", re.IGNORECASE)  # "No. 5" but not "I said no."
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_CURRENCY_RE = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?(?:\s?(thousand|million|billion|trillion))?\b",
                          re.IGNORECASE)
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\s*([ap])\.?\s?m\b|\b([01]?\d|2[0-3]):([0-5]\d)\b",
                      re.IGNORECASE)
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


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    frac = m.group(3)
    scale = m.group(4)
    if scale:  # "$3.5 million" → "three point five million dollars"
        amount = number_to_words(whole) + (f" point {' '.join(_ONES[int(d)] for d in frac)}" if frac else "")
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


def _plain_number(m: re.Match) -> str:
    s = m.group(0)
    n = int(s)
    if len(s) == 4 and 1100 <= n <= 2099:  # four-digit numbers in running text are mostly years
        return year_to_words(n)
    if len(s) > 1 and s.startswith("0"):  # codes: read digit by digit
        return " ".join(_ONES[int(d)] for d in s)
    return number_to_words(n)


def normalize_text(text: str) -> str:
    """Spell out what a reader would say: '$3.50 at 10:30 am on the 2nd' → words, tidy punctuation."""
    for src, dst in _PUNCT_MAP.items():
        text = text.replace(src, dst)
    text = _NUMBER_ABBR_RE.sub(lambda m: _cased("number ", m.group(1)), text)
    text = _ABBR_RE.sub(lambda m: _cased(_ABBREVIATIONS[m.group(1).lower()], m.group(1)), text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _TIME_RE.sub(_time, text)
    text = _PERCENT_RE.sub(lambda m: f"{m.group(1)} percent", text)
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _DECIMAL_RE.sub(lambda m: f"{number_to_words(int(m.group(1)))} point "
                                     + " ".join(_ONES[int(d)] for d in m.group(2)), text)
    text = _NUMBER_RE.sub(_plain_number, text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------
# Grapheme-to-phoneme (espeak-ng through phonemizer)
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _espeak_backend(language: str):
    try:
        from phonemizer.backend import EspeakBackend
    except ImportError:  # declared dependency; only a broken install lands here
        raise AiprodError("phoneme mode needs the Python package 'phonemizer' (pip install phonemizer)") from None
    if shutil.which("espeak-ng") is None and not EspeakBackend.is_available():
        raise AiprodError("phoneme mode needs the system package 'espeak-ng' (apt-get install espeak-ng), "
                          "or set frontend.mode: character")
    return EspeakBackend(language, preserve_punctuation=True, with_stress=True,
                         language_switch="remove-flags", words_mismatch="ignore")


def phonemize(texts: Sequence[str], language: str = "en-us") -> list[str]:
    """IPA for each (already normalised) text, punctuation kept, with stress marks."""
    backend = _espeak_backend(language)
    import logging

    logging.getLogger("phonemizer").setLevel(logging.ERROR)
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
    """Text → symbol ids. ``mode`` is ``phoneme`` (espeak-ng G2P) or ``character``.

    ``on_unknown``: ``error`` raises an AiprodError listing the symbols outside the inventory;
    ``warn`` emits a warning listing them and skips them (they are still returned in ``Encoded.unknown``).
    """

    def __init__(self, symbols: Sequence[str], mode: str = "phoneme", language: str = "en-us",
                 on_unknown: str = "warn"):
        if mode not in ("phoneme", "character"):
            raise AiprodError(f"frontend.mode: expected 'phoneme' or 'character', got {mode!r}")
        self.table = SymbolTable(symbols)
        self.mode, self.language, self.on_unknown = mode, language, on_unknown

    def to_symbols(self, texts: Sequence[str]) -> tuple[list[str], list[str]]:
        normed = [normalize_text(t) for t in texts]
        if self.mode == "character":  # fold accents (é → e) so letters map onto the inventory
            folded = ["".join(c for c in unicodedata.normalize("NFKD", t) if not unicodedata.combining(c))
                      for t in normed]
            return normed, [t.lower() for t in folded]
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


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split long text into sentences (and over-long sentences at commas) for synthesis one by one."""
    out = []
    for sent in _SENTENCE_RE.split(text.strip()):
        while len(sent) > max_chars:
            cut = sent.rfind(",", 0, max_chars)
            cut = cut if cut > 0 else sent.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(sent[: cut + 1].strip())
            sent = sent[cut + 1:].strip()
        if sent.strip():
            out.append(sent.strip())
    return out
