"""`aiprod eval`: the metrics themselves, then the command on dummy components and small data folders."""

from __future__ import annotations

import json
import math

import dummies
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import aiprod_core.registry as registry_mod
from aiprod_core.errors import AiprodError
from aiprod_pipelines import eval as ev
from aiprod_pipelines.corpus import CorpusConfig, make_video_corpus
from aiprod_pipelines.media import read_mp4, write_wav

SR = 24000


# -- metrics -------------------------------------------------------------------------------------------
def test_psnr_and_si_sdr_known_values():
    ref = np.zeros((2, 8, 8, 3), np.uint8)
    assert ev.psnr(ref, ref + 16) == pytest.approx(10 * math.log10(255**2 / 256))
    assert ev.psnr(ref, ref) == float("inf")
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 200 * np.arange(SR) / SR)
    noise = rng.standard_normal(SR)
    noise -= noise.dot(x) / x.dot(x) * x  # orthogonal to the reference
    noise *= math.sqrt(x.dot(x) / noise.dot(noise) / 10)  # 10 dB below it
    assert ev.si_sdr(x, x + noise) == pytest.approx(10.0, abs=0.05)
    assert ev.si_sdr(x, 0.3 * (x + noise)) == pytest.approx(10.0, abs=0.05)  # scale-invariant
    assert ev.si_sdr(x, noise) < -20


def test_codebooks_for_bitrate():
    assert ev.codebooks_for_kbps(6.0, 75, 1024, 8) == 8  # the codec card: 8 x 10 bit x 75 Hz = 6 kbps
    assert ev.codebooks_for_kbps(1.5, 75, 1024, 8) == 2
    assert ev.codebooks_for_kbps(12.0, 75, 1024, 8) == 8
    with pytest.raises(AiprodError, match="below one codebook of this codec .* pass --kbps 7.5 or more"):
        ev.codebooks_for_kbps(6.0, 750, 1024, 8)  # a 32-sample hop cannot code 6 kbps


def test_mel_distance_ignores_timing_not_content():
    n = np.arange(SR) / SR

    def tone(f, start, dur=0.5):
        return 0.3 * np.sin(2 * np.pi * f * n) * ((n >= start) & (n < start + dur))

    a = tone(300, 0.1)
    d_same, d_shift, d_other = ev.mel_distance(a, a, SR), ev.mel_distance(a, tone(300, 0.35), SR), ev.mel_distance(
        a, tone(1200, 0.1), SR)
    assert d_same == 0.0 and d_shift < 1.0 and d_other > 5 * max(d_shift, 0.5)
    seq = np.arange(12, dtype=float).reshape(6, 2)
    assert ev.dtw_distance(seq, np.repeat(seq, 2, axis=0)) == 0.0


# -- the command on dummies ----------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch):
    reg = dummies.make_registry()
    monkeypatch.setattr(registry_mod, "_REGISTRY", reg)
    from aiprod_core.cli import cli

    reg.add_commands(cli)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="module")
def video_corpus(tmp_path_factory):
    cfg = CorpusConfig(train_clips=1, heldout_clips=4, size=32, frames=5, heldout_per_colour=1)
    return make_video_corpus(tmp_path_factory.mktemp("vc") / "corpus", cfg)


def test_eval_video_autoencoder(cli, tmp_path, video_corpus):
    folder = dummies.DummyAutoencoder().save_pretrained(tmp_path / "ae")
    res = cli("eval", folder, video_corpus, "--json", "--frames", "5")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["kind"] == "video-autoencoder" and report["clips"] == 4 and report["data"].endswith("heldout")
    # the same number by hand for the clips: block-mean autoencoder, 8-bit frames
    ae = dummies.DummyAutoencoder()
    scores = []
    for p in sorted((video_corpus / "heldout").glob("*.mp4")):
        f = read_mp4(p).frames
        v = torch.from_numpy(f.astype(np.float32).transpose(3, 0, 1, 2) / 127.5 - 1)[None]
        out = ae.decode(ae.encode(v))[0].detach().numpy().transpose(1, 2, 3, 0)
        scores.append(ev.psnr(f, np.clip((out + 1) * 127.5, 0, 255).round().astype(np.uint8)))
    assert report["psnr_db"] == pytest.approx(np.mean(scores), abs=1e-6)
    assert 10 < report["psnr_db"] < 30 and report["floor"] == {"pass": False, "checks": [
        {"metric": "psnr_db", "op": ">=", "floor": 30.0, "value": report["psnr_db"], "pass": False}]}
    assert cli("eval", folder, video_corpus, "--check").exit_code == 1  # below the 30 dB floor


def test_eval_audio_codec(cli, tmp_path):
    data = tmp_path / "wavs"
    t = np.arange(int(0.5 * 22050)) / 22050
    for i, f in enumerate((220.0, 330.0)):
        write_wav(data / f"{i}.wav", 0.4 * np.sin(2 * np.pi * f * t), 22050)  # 22.05 kHz: resampled to 24 kHz
    folder = dummies.DummyCodec().save_pretrained(tmp_path / "codec")
    res = cli("eval", folder, data, "--json", "--check", "--kbps", "200")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["codebooks"] == 1 and r["bitrate_kbps"] == pytest.approx(192.0) and r["files"] == 2
    assert r["si_sdr_db"] > 30 and r["floor"]["pass"]  # 8-bit uniform quantisation of a tone


def _ljspeech(folder, texts, freq=220.0, sr=22050):
    lines = []
    for i, text in enumerate(texts):
        n = int(len(text) * 0.05 * sr)
        write_wav(folder / "wavs" / f"U{i}.wav", 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / sr), sr)
        lines.append(f"U{i}|{text}|{text}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_eval_speech_against_untrained(cli, tmp_path):
    data = _ljspeech(tmp_path / "lj", ["Hello there.", "A red circle moves left."])
    model = dummies.DummySpeech()  # untrained: 880 Hz
    with torch.no_grad():
        model.freq.fill_(220.0)  # "trained": the reference voice
    folder = model.save_pretrained(tmp_path / "tts")
    res = cli("eval", folder, data, "--json", "--check", "--no-asr")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert "asr_wer" not in r
    assert r["utterances"] == 2 and r["mel_distance_db"] < 1.5 < r["untrained_mel_distance_db"]
    assert r["mel_distance_ratio"] < 0.8 and r["floor"]["pass"]
    text = cli("eval", folder, data, "--no-baseline", "--no-asr").output
    assert "mel_distance_db" in text and "untrained" not in text


def test_word_error_rate():
    assert ev.word_error_rate("a b c d".split(), "a b c d".split()) == (0, 4)
    assert ev.word_error_rate("a b c d".split(), "a x c".split()) == (2, 4)  # one substitution, one deletion
    assert ev.word_error_rate("a b".split(), "a b c d e".split()) == (3, 2)  # insertions count: WER may pass 1
    assert ev.word_error_rate("a b".split(), []) == (2, 2)
    assert ev.asr_words("Mister Green, nineteen eighty-four!") == ["mister", "green", "nineteen", "eighty", "four"]


def test_eval_speech_word_error_rate_on_espeak(cli, tmp_path):
    """pocketsphinx (offline, model in its wheel) recognises espeak-ng speech better than a tone."""
    pytest.importorskip("pocketsphinx", reason="aiprod-pipelines[asr] (pocketsphinx) not installed")
    if __import__("shutil").which("espeak-ng") is None:
        pytest.skip("system package espeak-ng not installed (the corpus tool speaks with it)")
    from aiprod_tts.corpus import make_corpus

    data = make_corpus(tmp_path / "esp", n=3, seed=1)
    folder = dummies.DummySpeech().save_pretrained(tmp_path / "tts")
    res = cli("eval", folder, data, "--json", "--no-baseline")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["asr_wer"] >= 0.9  # a tone: (nearly) every word missed
    assert r["asr_wer_reference"] < r["asr_wer"] - 0.1  # espeak-ng itself: about 0.8 on these three


def _dummy_t2v_yaml(tmp_path):
    """A text-to-video YAML of the dummy components at 32x32x5 (its output path is never written)."""
    cfg = {"pipeline": "text-to-video", "prompt": "unused", "output": str(tmp_path / "unused.mp4"), "width": 32,
           "height": 32, "frames": 5, "steps": 3, "guidance_scale": 1.0,
           "text_encoder": {"name": "dummy-text", "preset": "tiny"}, "denoiser": {"name": "dummy-dit", "preset": "tiny"},
           "autoencoder": {"name": "dummy-ae", "preset": "tiny"}}
    path = tmp_path / "t2v.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_eval_text_to_video_colour_hits(cli, tmp_path, video_corpus):
    path = _dummy_t2v_yaml(tmp_path)
    res = cli("eval", path, video_corpus, "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["colour_hit_rate"] == 1.0 and r["clips"] == 4
    for k in ("colour", "direction", "shape"):  # the corpus' own clips pass every judge
        assert r[f"reference_{k}_hit_rate"] == 1.0
    checks = {c["metric"]: c["pass"] for c in r["floor"]["checks"]}
    assert checks["colour_hit_rate"] and set(checks) == {"colour_hit_rate", "direction_hit_rate", "shape_hit_rate"}
    # the dummy denoiser paints a still blob: the direction floor fails, and --check says so
    assert r["direction_hit_rate"] == 0.0 and not checks["direction_hit_rate"] and not r["floor"]["pass"]
    assert cli("eval", path, video_corpus, "--check").exit_code == 1
    blind = cli("eval", path, video_corpus, "--set", "denoiser.config.colour_blind=true", "--check")
    assert blind.exit_code == 1 and "colour_hit_rate" in blind.output and "FAIL" in blind.output
    assert not (tmp_path / "unused.mp4").exists()
    assert "photo_hit_rate" not in r  # random crops: no one picture per photo word to compare with
    # one row per held-out (colour, shape, direction): hits that add up to the rates, and the corpus' own blob's
    # fill in its shape's range of the judge
    rows = r["per_prompt"]
    captions = [json.loads(line) for line in (video_corpus / "heldout" / "captions.jsonl").read_text().splitlines()]
    assert set(rows) == {f"{e['colour']} {e['shape']} {e['direction']}" for e in captions}
    assert sum(row["clips"] for row in rows.values()) == 4
    assert sum(row["colour"] for row in rows.values()) == 4 and sum(row["direction"] for row in rows.values()) == 0
    assert sum(row["shape"] for row in rows.values()) == round(r["shape_hit_rate"] * 4)
    for combo, row in rows.items():
        assert ev.shown_shape_of_fill(row["reference_shape_fill"]) == combo.split()[1], (combo, row)
    text = cli("eval", path, video_corpus).output
    assert all(f"{combo} " in text and "shape fill" in text for combo in rows), text
    # --strength: each clip starts from the corpus' own, noised; a diagnosis: reported, no floor
    res = cli("eval", path, video_corpus, "--strength", "0.5", "--json")
    assert res.exit_code == 0, res.output
    v2v = json.loads(res.output)
    assert v2v["strength"] == 0.5 and "floor" not in v2v and v2v["clips"] == 4 and v2v["colour_hit_rate"] == 1.0
    assert "strength" not in r
    res = cli("eval", path, video_corpus, "--strength", "0.5", "--set", "frames=9")  # longer than the corpus' clips
    assert res.exit_code == 2 and res.output.count("aiprod: error:") == 1 and "--strength starts from" in res.output


def test_eval_text_to_video_photo_hits(cli, tmp_path):
    """On a whole-photo corpus the report adds the photo-hit rate: the ground truth reads 1.00, and a denoiser
    whose clips show no photo (the dummy's flat grey) reads 1 / (number of photos) at most."""
    photos = ["chelsea", "coffee", "moon", "brick"]
    corpus = make_video_corpus(tmp_path / "whole", CorpusConfig(train_clips=1, heldout_clips=8, size=32, frames=5,
                                                                heldout_per_colour=2, photos=photos,
                                                                background_crop="whole", path="centred"))
    path = _dummy_t2v_yaml(tmp_path)
    r = json.loads(cli("eval", path, corpus, "--json").output)
    assert r["reference_photo_hit_rate"] == 1.0 and r["clips"] == 8
    shown = {json.loads(line)["photo"] for line in (corpus / "heldout" / "captions.jsonl").read_text().splitlines()}
    assert len(shown) >= 2 and r["photo_hit_rate"] <= 1 - 1 / len(shown) + 1e-9
    assert "photo_hit_rate" not in {c["metric"] for c in r["floor"]["checks"]}  # reported, no floor


def test_eval_errors_are_one_line(cli, tmp_path, video_corpus):
    folder = dummies.DummyTextEncoder().save_pretrained(tmp_path / "te")
    res = cli("eval", folder, video_corpus)
    assert res.exit_code == 2 and res.output.count("aiprod: error:") == 1 and "no metric for a text-encoder" in res.output
    ae = dummies.DummyAutoencoder().save_pretrained(tmp_path / "ae")
    res = cli("eval", ae, video_corpus, "--strength", "0.5")
    assert res.exit_code == 2 and "--strength: video to video is measured for a text-to-video YAML" in res.output
    res = cli("eval", ae, tmp_path / "missing")
    assert res.exit_code == 2 and "data folder not found" in res.output
    (ae / "model.safetensors").write_bytes(b"tampered")
    res = cli("eval", ae, video_corpus)
    assert res.exit_code == 2 and "aiprod: error:" in res.output


def test_registered_through_the_entry_point():
    import importlib.metadata as md

    eps = {ep.name: ep.value for ep in md.entry_points(group="aiprod")}
    assert eps.get("pipelines") == "aiprod_pipelines.plugin"
    reg = registry_mod.Registry()
    from aiprod_pipelines import plugin

    reg.register_module(plugin, "pipelines")
    assert reg.pipeline("text-to-video").load_config_model().__name__ == "TextToVideoConfig"
    import click

    group = click.Group()
    reg.add_commands(group)
    assert "eval" in group.commands


# -- the text-to-video judges on drawn clips ---------------------------------------------------------------
@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_judges_read_rendered_clips(shape, direction):
    from aiprod_pipelines.corpus import render_clip

    for seed in range(3):
        frames = render_clip("green", shape, direction, "chelsea", size=64, frames=17,
                             rng=np.random.default_rng(seed))
        assert ev.shown_colour(frames) == "green"
        assert ev.shown_direction(frames, "green") == direction
        assert ev.shown_shape(frames, "green") == shape
        assert ev.shown_direction(frames[::-1], "green") != direction  # played backwards: the other way
        still = np.repeat(frames[:1], 17, axis=0)
        assert ev.shown_direction(still, "green") is None  # standing still is no direction
        assert ev.shown_direction(frames, "red") is None and ev.shown_shape(frames, "red") is None  # absent
