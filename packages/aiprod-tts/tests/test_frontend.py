import os
import shutil
import socket
import subprocess
import threading

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


def _has_phonemizer() -> bool:
    try:
        import phonemizer  # noqa: F401
    except ImportError:
        return False
    return True


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None or not _has_phonemizer(),
                                  reason="g2p espeak needs espeak-ng and phonemizer (aiprod-tts[espeak])")


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
    # the normaliser's bugs of issue 17: each must read as a person would say it
    ("It costs 1,250 dollars.", "It costs one thousand two hundred fifty dollars."),
    ("He lives on Baker St.", "He lives on Baker Street."),
    ("We live on Baker St. Then we left.", "We live on Baker Street. Then we left."),
    ("I visited St. Paul in St. Louis.", "I visited Saint Paul in Saint Louis."),
    ("Dr. Brown lives on Elm Dr.", "Doctor Brown lives on Elm Drive."),
    ("Music of the 1990s and the '80s", "Music of the nineteen nineties and the eighties"),
    ("On 12/05/2024 we met.", "On December fifth, twenty twenty-four we met."),
    ("Due 2024-05-12 or 25/12/2024", "Due May twelfth, twenty twenty-four or December twenty-fifth, twenty twenty-four"),
    ("He is 6 ft. tall, born 1905", "He is six feet tall, born nineteen oh five"),
    ("a ratio 3/4 here", "a ratio three slash four here"),
    ("221B Baker St.", "two hundred twenty-one B Baker Street."),
])
def test_normalisation(text, expected):
    assert normalize_text(text) == expected


def test_dates_day_first_for_british_english():
    assert normalize_text("On 12/05/2024 we met.", day_first=True) == "On the twelfth of May twenty twenty-four we met."
    f = TextFrontend(default_symbols("character"), mode="character", language="en-gb")
    assert f.encode("12/05/2024").text == "the twelfth of May twenty twenty-four"


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(1_000_001) == "one million one"
    assert number_to_words(-42) == "minus forty-two"
    assert ordinal_to_words(1) == "first" and ordinal_to_words(12) == "twelfth"
    assert ordinal_to_words(40) == "fortieth" and ordinal_to_words(103) == "one hundred third"


@needs_espeak
def test_phonemes_through_espeak():
    f = TextFrontend(default_symbols("phoneme"), g2p="espeak")
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


def test_lexicon_phonemes_without_any_system_program(monkeypatch):
    monkeypatch.setattr(fe.shutil, "which", lambda name: None)  # no espeak-ng anywhere
    f = TextFrontend(default_symbols("phoneme"))  # g2p: lexicon is the default
    enc = f.encode("Hello world, 42 times!")
    assert enc.text == "Hello world, forty-two times!"
    assert enc.symbols == "həlˈoʊ wˈɜːld, fˈɔːɹti tˈuː tˈaɪmz!"
    assert enc.unknown == [] and f.table.decode(enc.ids) == enc.symbols
    assert f.encode("at 10 am").symbols == "ˈæt tˈɛn ˈeɪ ˈɛm"  # "a m": the letter, not the article
    with pytest.warns(UserWarning, match="'zzxq' is not in the lexicon"):  # no G2P model: spelt
        assert f.encode("zzxq").symbols == "zˈiː zˈiː ˈɛks kjˈuː"


def test_lexicon_g2p_is_english_only():
    with pytest.raises(AiprodError, match="lexicon G2P speaks English only"):
        TextFrontend(default_symbols("phoneme"), language="fr-fr")
    with pytest.raises(AiprodError, match="'lexicon' or 'espeak'"):
        TextFrontend(default_symbols("phoneme"), g2p="festival")


def test_espeak_g2p_without_phonemizer_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_phonemizer(name, *a, **kw):
        if name.startswith("phonemizer"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    fe._espeak_backend.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_phonemizer)
    try:
        with pytest.raises(AiprodError, match=r"aiprod-tts\[espeak\]"):
            TextFrontend(default_symbols("phoneme"), g2p="espeak").encode("hello")
    finally:
        fe._espeak_backend.cache_clear()


def test_missing_espeak_names_the_system_package(monkeypatch):
    EspeakBackend = pytest.importorskip("phonemizer.backend").EspeakBackend

    fe._espeak_backend.cache_clear()
    monkeypatch.setattr(fe.shutil, "which", lambda name: None)
    monkeypatch.setattr(EspeakBackend, "is_available", classmethod(lambda cls: False))
    try:
        with pytest.raises(AiprodError, match="system package 'espeak-ng'"):
            TextFrontend(default_symbols("phoneme"), g2p="espeak").encode("hello")
    finally:
        fe._espeak_backend.cache_clear()


def test_inventory_checks():
    with pytest.raises(AiprodError, match="pad symbol"):
        TextFrontend(["a", "b"])
    with pytest.raises(AiprodError, match="duplicates"):
        TextFrontend(["_", "a", "a"])


def test_sentence_split():
    assert split_sentences("One. Two?  Three! ") == ["One.", "Two?", "Three!"]
    # a title's period ends no sentence (it was spoken alone, then a sentence pause); an address may end one
    assert split_sentences("Mr. Green met Dr. Brown. St. Paul is far.") == ["Mr. Green met Dr. Brown.",
                                                                              "St. Paul is far."]
    assert split_sentences("He lives on Baker St. Then he left.") == ["He lives on Baker St.", "Then he left."]
    assert split_sentences("Dr. Brown lives on Mulholland Dr. He drives.") == ["Dr. Brown lives on Mulholland Dr.",
                                                                               "He drives."]
    assert split_sentences("I saw the doctor. Mrs. Smith did not.") == ["I saw the doctor.", "Mrs. Smith did not."]
    long = ", ".join(["word"] * 100) + "."
    parts = split_sentences(long, max_chars=60)
    assert len(parts) > 1 and all(len(p) <= 61 for p in parts)
    assert sum(p.count("word") for p in parts) == 100


class _CountingServer:
    """A TCP listener on the loopback that accepts and closes every connection, counting them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.count, self.stop = 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.count += 1
            conn.close()

    @property
    def address(self) -> str:
        return f"tcp:127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="system package espeak-ng not installed")
def test_espeak_opens_no_audio_socket(tmp_path, monkeypatch):
    """libespeak-ng connects to PulseAudio as it starts (PULSE_SERVER=tcp:... makes it TCP): the corpus tool and
    g2p: espeak run it so that it connects nowhere. The control run shows that the probe sees a connection."""
    from aiprod_tts.corpus import make_corpus

    server = _CountingServer()
    try:
        monkeypatch.setenv("PULSE_SERVER", server.address)
        subprocess.run(["espeak-ng", "-w", str(tmp_path / "control.wav"), "hi"], env=dict(os.environ),
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        control = server.count
        make_corpus(tmp_path / "corpus", n=2, short=True)
        if _has_phonemizer():
            fe._espeak_backend.cache_clear()
            TextFrontend(default_symbols("phoneme"), g2p="espeak").encode("hello")
            fe._espeak_backend.cache_clear()
        assert os.environ["PULSE_SERVER"] == server.address  # restored
    finally:
        server.close()
    assert control >= 1, "the probe did not see espeak-ng's own connection"
    assert server.count == control, "the stack opened an audio socket"
