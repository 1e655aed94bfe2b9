import shutil

import pytest

from aiprod_core.errors import AiprodError
from aiprod_tts import frontend as fe
from aiprod_tts.frontend import (
    TextFrontend,
    default_symbols,
    normalize_text,
    number_to_words,
    ordinal_to_words,
    split_sentences,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="system package espeak-ng not installed")


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith paid $3.50 at 10:30 am.", "Mister Smith paid three dollars and fifty cents at ten thirty a m."),
    ("It was the 21st of May, 1984.", "It was the twenty-first of May, nineteen eighty-four."),
    ("$1 and €0.05", "one dollar and five cents"),
    ("£2.5 million", "two point five million pounds"),
    ("It costs $1,250,000", "It costs one million two hundred fifty thousand dollars"),
    ("Dr. No: 12% of 3.14", "Doctor No: twelve percent of three point one four"),
    ("No. 5, said no.", "Number five, said no."),
    ("Call 007 at 5:05 pm", "Call zero zero seven at five oh five p m"),
    ("“Wait…” she said — then left", "\"Wait.\" she said, then left"),
    ("in 2008 and 1900", "in two thousand eight and nineteen hundred"),
])
def test_normalisation(text, expected):
    assert normalize_text(text) == expected


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(1_000_001) == "one million one"
    assert number_to_words(-42) == "minus forty-two"
    assert ordinal_to_words(1) == "first" and ordinal_to_words(12) == "twelfth"
    assert ordinal_to_words(40) == "fortieth" and ordinal_to_words(103) == "one hundred third"


@needs_espeak
def test_phonemes_through_espeak():
    f = TextFrontend(default_symbols("phoneme"))
    enc = f.encode("Hello world, 42 times!")
    assert enc.text == "Hello world, forty-two times!"
    assert "h" in enc.symbols and "ˈ" in enc.symbols and enc.symbols.endswith("!")
    assert enc.unknown == [] and f.table.decode(enc.ids) == enc.symbols


def test_character_mode_and_unknown_symbols():
    f = TextFrontend(default_symbols("character"), mode="character")
    enc = f.encode("Héllo, 2nd!")
    assert enc.symbols == "hello, second!" and enc.unknown == []
    with pytest.warns(UserWarning, match="'©'"):
        enc = f.encode("a © b")
    assert enc.unknown == ["©"] and f.table.decode(enc.ids) == "a  b"
    strict = TextFrontend(default_symbols("character"), mode="character", on_unknown="error")
    with pytest.raises(AiprodError, match="not in the model's inventory: '©'"):
        strict.encode("a © b")


def test_missing_espeak_names_the_system_package(monkeypatch):
    from phonemizer.backend import EspeakBackend

    fe._espeak_backend.cache_clear()
    monkeypatch.setattr(fe.shutil, "which", lambda name: None)
    monkeypatch.setattr(EspeakBackend, "is_available", classmethod(lambda cls: False))
    try:
        with pytest.raises(AiprodError, match="system package 'espeak-ng'"):
            TextFrontend(default_symbols("phoneme")).encode("hello")
    finally:
        fe._espeak_backend.cache_clear()


def test_inventory_checks():
    with pytest.raises(AiprodError, match="pad symbol"):
        TextFrontend(["a", "b"])
    with pytest.raises(AiprodError, match="duplicates"):
        TextFrontend(["_", "a", "a"])


def test_sentence_split():
    assert split_sentences("One. Two?  Three! ") == ["One.", "Two?", "Three!"]
    long = ", ".join(["word"] * 100) + "."
    parts = split_sentences(long, max_chars=60)
    assert len(parts) > 1 and all(len(p) <= 61 for p in parts)
    assert sum(p.count("word") for p in parts) == 100
