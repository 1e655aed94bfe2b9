"""The CTC phoneme recogniser: phones of the voices' frontend, greedy decoding, PER, shapes, the recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from aiprod_core.testing import ComponentContract
from aiprod_tts.recogniser import (
    PHONE_SET,
    PhonemeRecogniser,
    RecogniserTrainConfig,
    ctc_greedy,
    ipa_to_phones,
    phoneme_error_rate,
    phoneme_errors,
    text_phones,
    train,
)


def test_ctc_greedy_merges_repeats_then_drops_blanks():
    assert ctc_greedy([0, 3, 3, 0, 3, 5, 5, 0, 0]) == [3, 3, 5]  # a blank between two 3s keeps both
    assert ctc_greedy([4, 4, 4]) == [4]
    assert ctc_greedy([0, 0]) == [] and ctc_greedy([]) == []


def test_phones_of_the_lexicon_frontend():
    assert len(PHONE_SET) == 42 and len(set(PHONE_SET)) == 42
    # stress marks, spaces and punctuation drop; two-letter phones (tʃ, iː) stay whole
    assert ipa_to_phones("ðə ˈtiːtʃɚ, ˈmuːvd!") == ["ð", "ə", "t", "iː", "tʃ", "ɚ", "m", "uː", "v", "d"]
    # CMUdict: the DH AH0 / teacher T IY1 CH ER0 / 12 -> twelve T W EH1 L V
    assert text_phones(["The teacher.", "12"]) == [["ð", "ə", "t", "iː", "tʃ", "ɚ"], ["t", "w", "ɛ", "l", "v"]]


def test_phoneme_error_rate_hand_example():
    assert phoneme_errors(list("abcd"), list("axc")) == (2, 4)  # one substitution, one deletion
    assert phoneme_errors(list("ab"), list("abcde")) == (3, 2)  # insertions count
    # corpus PER: all edits over all reference phones, (2 + 0) / (4 + 2)
    assert phoneme_error_rate([list("abcd"), list("ab")], [list("axc"), list("ab")]) == pytest.approx(2 / 6)
    assert phoneme_error_rate([list("ab")], [[]]) == 1.0
    with pytest.raises(ValueError):
        phoneme_error_rate([list("ab")], [])


def test_shapes_and_features():
    torch.manual_seed(0)
    model = PhonemeRecogniser(channels=16, blocks=2).eval()
    wav = 0.3 * torch.sin(torch.arange(24000) * 2 * np.pi * 220 / 24000)
    mel = model.features(wav)
    assert mel.shape == (80, 24000 // 256 + 1)
    assert mel.mean(-1).abs().max() < 1e-2  # normalised per channel
    # a 22.05 kHz clip is resampled first: about the same number of frames
    assert abs(model.features(wav[:22050], 22050).shape[-1] - mel.shape[-1]) <= 1
    logp = model(torch.randn(2, 80, 101))
    assert logp.shape == (2, 51, len(PHONE_SET) + 1)
    assert model.output_lengths(torch.tensor([101, 100, 1])).tolist() == [51, 50, 1]
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 51), atol=1e-5)
    heard = model.recognise([wav, wav[:5000]])
    assert len(heard) == 2 and all(p in PHONE_SET for h in heard for p in h)


class TestPhonemeRecogniserContract(ComponentContract):
    kind = "phoneme-recogniser"
    name = "ctc-conv"
    preset = "tiny"

    def make_inputs(self, module):
        return {"mel": torch.randn(2, 80, 40, generator=torch.Generator().manual_seed(0))}

    def expected_shapes(self, inputs):
        return (2, 20, len(PHONE_SET) + 1)


def _corpus(folder, texts, seed):
    """An LJSpeech folder whose 'speech' is one tone per phone (a toy language the recipe must learn)."""
    rng = np.random.default_rng(seed)
    freqs = {p: 200.0 + 90.0 * i for i, p in enumerate(PHONE_SET)}
    (folder / "wavs").mkdir(parents=True)
    lines = []
    for i, text in enumerate(texts):
        wav = np.concatenate([0.3 * np.sin(2 * np.pi * freqs[p] * np.arange(2400) / 24000) for p in text_phones([text])[0]])
        sf.write(folder / "wavs" / f"U{i}.wav", (wav + 0.01 * rng.standard_normal(wav.size)).astype(np.float32), 24000)
        lines.append(f"U{i}|{text}|{text}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A recogniser trained by the recipe on a toy language (one tone per phone): (its folder, held-out data)."""
    tmp = tmp_path_factory.mktemp("toy")
    texts = ["a dog", "the key", "my box", "a red car", "we see", "so big", "the cat", "his bag"]
    train_dir = _corpus(tmp / "train", texts, 0)
    held = _corpus(tmp / "heldout", ["a big dog", "my red key"], 1)
    cfg = RecogniserTrainConfig.model_validate({
        "model": {"channels": 32, "blocks": 2, "dropout": 0.0},
        "data": {"root": str(train_dir), "heldout": str(held)},
        "augment": {"stretch": 0.05, "noise": 0.0},
        "train": {"output_dir": str(tmp / "run"), "max_steps": 120, "batch_size": 8, "lr": 5e-3,
                  "warmup_steps": 10, "eval_every": 120, "log_every": 120, "device": "cpu", "progress": False,
                  "export_dtype": "fp32"}})
    train(cfg)
    return tmp / "run", held


def test_recipe_learns_a_toy_language_and_exports(toy):
    run, held = toy
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    per = next(r["eval/per"] for r in logs if "eval/per" in r)
    assert per < 0.5, logs  # untrained: 1.0 (nothing but blanks) or worse
    model = PhonemeRecogniser.from_pretrained(run / "final" / "recogniser")
    wav, sr = sf.read(held / "wavs" / "U0.wav", dtype="float32")
    heard = model.recognise([torch.from_numpy(wav)], sr)[0]
    assert phoneme_error_rate(text_phones(["a big dog"]), [heard]) < 0.5


class _Parrot:
    """A 'voice' that plays the reference recording of each text (or silence): PER equal to the reference's."""

    sample_rate = 24000

    def __init__(self, folder, silent=False):
        rows = [ln.split("|") for ln in (folder / "metadata.csv").read_text().splitlines()]
        self.wavs = {r[1]: folder / "wavs" / f"{r[0]}.wav" for r in rows}
        self.silent = silent

    def synthesize(self, text):
        wav, _ = sf.read(self.wavs[text], dtype="float32")
        return torch.zeros(2400) if self.silent else torch.from_numpy(wav)


def test_eval_speech_reports_phoneme_error_rates(toy):
    ev = pytest.importorskip("aiprod_pipelines.eval")
    run, held = toy
    rec = PhonemeRecogniser.from_pretrained(run / "final" / "recogniser")
    r = ev.eval_speech(_Parrot(held), held, asr=False, recogniser=rec, baseline=_Parrot(held, silent=True))
    assert r["per"] == r["per_reference"] < 0.5 and r["per_untrained"] >= 0.9
    check = next(c for c in ev.floor_check("speech-synthesizer", r)["checks"] if c["metric"] == "per_ratio")
    assert check == {"metric": "per_ratio", "op": "<=", "floor": 1.5, "value": pytest.approx(1.0 if r["per"] else 0.0),
                     "pass": True}
    silent = ev.eval_speech(_Parrot(held, silent=True), held, asr=False, recogniser=rec)
    assert silent["per"] >= 0.9 and not ev.floor_check("speech-synthesizer", silent)["pass"]


def test_recipe_names_a_missing_corpus(tmp_path):
    from aiprod_core.errors import AiprodError

    cfg = RecogniserTrainConfig.model_validate({"data": {"root": str(tmp_path / "none")},
                                                "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1}})
    with pytest.raises(AiprodError, match="none/metadata.csv not found"):
        train(cfg)


def test_augmentations_keep_shapes_and_are_identities_at_zero():
    from aiprod_tts.recogniser import _gaussian_blur, _warp_frequency, normalise

    x = torch.randn(80, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_gaussian_blur(x, 0.0, dim=1), x) and torch.allclose(_warp_frequency(x, 1.0), x)
    for dim in (0, 1):
        y = _gaussian_blur(x, 1.5, dim=dim)
        assert y.shape == x.shape and y.std() < 0.7 * x.std()  # smoothed
        assert torch.allclose(_gaussian_blur(torch.ones(80, 50), 1.5, dim=dim), torch.ones(80, 50))
    assert torch.equal(_warp_frequency(x, 1.1)[0], x[0])  # the lowest channel stays, the others move up
    n = normalise(x, floor=100.0)
    assert torch.allclose(n.mean(-1), torch.zeros(80), atol=1e-5) and torch.allclose(n.std(-1), torch.ones(80))
    assert normalise(x, floor=1.0).shape == x.shape


def test_tts_per_command(toy):
    from click.testing import CliRunner

    from aiprod_tts.cli import tts_group

    run, held = toy
    res = CliRunner().invoke(tts_group, ["per", str(run / "final" / "recogniser"), str(held)])
    assert res.exit_code == 0, res.output
    assert "PER 0." in res.output and "on 2 recordings" in res.output


def test_aiprod_eval_finds_or_skips_the_recogniser(toy, tmp_path, monkeypatch):
    ev = pytest.importorskip("aiprod_pipelines.eval")
    from aiprod_core.errors import AiprodError
    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

    run, held = toy
    torch.manual_seed(0)
    voice = FastSpeech2HiFiGAN.from_preset("tiny").save_pretrained(tmp_path / "voice")
    r = ev.evaluate(voice, held, device="cpu", asr=False, baseline=False, recogniser=run / "final" / "recogniser")
    assert 0 <= r["per_reference"] < 0.5 and r["per"] > r["per_reference"] and "per_skipped" not in r
    assert {c["metric"] for c in r["floor"]["checks"]} == {"per_ratio"}
    monkeypatch.setenv("AIPROD_PHONEME_RECOGNISER", str(tmp_path / "none"))  # the default folder is absent
    r = ev.evaluate(voice, held, device="cpu", asr=False, baseline=False)
    assert "per" not in r and "is not beside this install" in r["per_skipped"]
    assert "per" not in ev.evaluate(voice, held, device="cpu", asr=False, baseline=False, per=False)
    with pytest.raises(AiprodError, match="--recogniser .*none: not a component folder"):
        ev.evaluate(voice, held, device="cpu", asr=False, baseline=False, recogniser=tmp_path / "none")
