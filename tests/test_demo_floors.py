"""The quality floors of the end-to-end issue, on the committed demo weights and freshly generated held-out data
(the corpora are pure functions of their settings, so these are the splits weights/tiny/README.md reports):
HW-VAE PSNR >= 30 dB, codec SI-SDR >= 8 dB at 6 kbps, TTS mel distance <= 0.5 x untrained and issue 18's TTS
PER <= 1.5 x the recordings' (the phoneme recogniser's, + pocketsphinx WER reported) on the speech corpus' held-out
split and three re-drawn sets, and text-to-video (aiprod eval's judges)
on the text-to-video corpus' held-out split and three fresh draws: colour >= 0.90 and direction >= 0.80; shape >=
0.70 is a strict xfail (issue 18)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
W = ROOT / "weights" / "tiny"


_DRAWS: dict[tuple[str, int], Path] = {}  # (kind, seed) -> corpus folder, each generated once per session


#: the settings of the corpus the demo denoiser was last trained on (tools/train_demo_weights.sh, data/t2v_shapes):
#: each photo's whole square, paths through the frame's centre, shapes of radius 0.22-0.25 of the side; the
#: HW-VAE is measured on the default corpus (random crops and paths: the widest variety of textures)
T2V_CORPUS = {"background_crop": "whole", "path": "centred", "radius": (0.22, 0.25), "travel": (0.32, 0.35)}


def _video_draw(seed: int, tmp_path_factory, kind: str = "video") -> Path:
    """The video corpus' held-out split: seed 0 is the corpus' own (what the demo weights were trained beside),
    others are fresh draws of the same held-out (colour, shape, direction) combinations (other photos, crops,
    sizes, paths). Held-out clips depend on (seed, split, index) only: 1 training clip is enough. ``kind``
    "t2v": the text-to-video corpus' settings."""
    if (kind, seed) not in _DRAWS:
        pytest.importorskip("aiprod_pipelines")
        from aiprod_pipelines.corpus import CorpusConfig, make_video_corpus

        cfg = CorpusConfig(train_clips=1, **({"draw_seed": seed} if seed else {}), **(T2V_CORPUS if kind == "t2v" else {}))
        _DRAWS[kind, seed] = make_video_corpus(tmp_path_factory.mktemp(f"{kind}{seed}") / "video_corpus", cfg)
    return _DRAWS[kind, seed]


def _speech_draw(seed: int, tmp_path_factory) -> Path:
    """The held-out split (sentences 240-255) of the speech corpus drawn with ``seed``: 0 is the corpus the codec
    and the voice were trained beside; 101-103 are re-drawn sets, none of whose sentences either trained on."""
    if ("speech", seed) not in _DRAWS:
        pytest.importorskip("aiprod_tts")
        if shutil.which("espeak-ng") is None:
            pytest.skip("espeak-ng not installed")
        from aiprod_tts.corpus import make_corpus

        out = tmp_path_factory.mktemp(f"tts{seed}") / "tts_corpus"
        _DRAWS["speech", seed] = make_corpus(out, n=240, seed=seed, heldout=16, heldout_only=True)
    return _DRAWS["speech", seed]


def _eval(component: Path, data: Path, monkeypatch, tmp_path, **kw):
    from aiprod_pipelines.eval import evaluate

    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)  # the example YAML names weights/tiny/<component>
    report = evaluate(component, data, device="cpu", **kw)
    print({k: v for k, v in report.items() if k != "floor"})
    return report


@pytest.mark.parametrize("draw_seed", [0, 1, 2, 3])
def test_hwvae_psnr(draw_seed, tmp_path_factory, monkeypatch, tmp_path):
    """PSNR >= 30 dB on the corpus' own held-out split (draw 0) and on three fresh draws of it (other photos,
    crops, sizes and paths); weights/tiny/README.md gives the measured values (30.3-31.4 dB)."""
    data = _video_draw(draw_seed, tmp_path_factory)
    r = _eval(W / "hwvae", data, monkeypatch, tmp_path)
    assert r["clips"] == 32 and r["floor"]["pass"], r["floor"]


@pytest.mark.parametrize("seed", [0, 101, 102, 103])
def test_codec_si_sdr_at_6_kbps(seed, tmp_path_factory, monkeypatch, tmp_path):
    """SI-SDR >= 8 dB at 6 kbps on the held-out split of the corpus the codec was trained beside (seed 0) and on
    three re-drawn ones (other sentences; none of their held-out sentences is in the codec's training data)."""
    data = _speech_draw(seed, tmp_path_factory)
    r = _eval(W / "audio_codec", data, monkeypatch, tmp_path, kbps=6.0)
    assert r["bitrate_kbps"] == 6.0 and r["files"] == 16 and r["floor"]["pass"], r["floor"]


_TTS: dict[int, dict] = {}  # seed -> report (each re-drawn speech set is generated and evaluated once per session)


def _tts(seed: int, tmp_path_factory, monkeypatch, tmp_path) -> dict:
    """aiprod eval of the demo voice on the 16 held-out sentences of the speech corpus drawn with ``seed`` (none
    of them among the voice's training sentences, corpus seeds 0-4 less these sets): mel distance, untrained
    voice, phoneme error rate of weights/tiny/phoneme_recogniser on the voice's speech, the recordings' and the
    untrained voice's."""
    if seed not in _TTS:
        from importlib.util import find_spec

        data = _speech_draw(seed, tmp_path_factory)
        asr = seed == 101 and find_spec("pocketsphinx") is not None  # reported on one set (slow)
        _TTS[seed] = _eval(W / "tts", data, monkeypatch, tmp_path, asr=asr, recogniser=W / "phoneme_recogniser")
    return _TTS[seed]


@pytest.mark.parametrize("seed", [0, 101, 102, 103])
def test_tts_mel_distance_and_phoneme_error_rate(seed, tmp_path_factory, monkeypatch, tmp_path):
    r = _tts(seed, tmp_path_factory, monkeypatch, tmp_path)
    checks = {c["metric"]: c for c in r["floor"]["checks"]}
    assert r["utterances"] == 16 and checks["mel_distance_ratio"]["pass"], checks  # <= 0.5 x untrained
    # the recogniser hears the recordings, and the voice far better than an untrained one (a regression bound
    # beside the floor below: 0.000 measured on each set, 0.08-0.11 before the voice's last four stages; untrained 0.98)
    assert r["per_reference"] <= 0.05 and r["per"] <= 0.04 and r["per"] <= 0.5 * r["per_untrained"], r
    if "asr_wer" in r:  # pocketsphinx, beside the reference recordings' own; not a floor (weights/tiny/README.md)
        assert 0 <= r["asr_wer_reference"] <= 1.0 and r["asr_wer"] >= 0


@pytest.mark.parametrize("seed", [0, 101, 102, 103])
def test_tts_phoneme_error_rate_floor(seed, tmp_path_factory, monkeypatch, tmp_path):
    r = _tts(seed, tmp_path_factory, monkeypatch, tmp_path)
    check = next(c for c in r["floor"]["checks"] if c["metric"] == "per_ratio")
    assert check["pass"], check


_T2V: dict[int, dict] = {}  # draw seed -> floor checks (each draw is generated and evaluated once per session)


def _text_to_video(draw_seed: int, tmp_path_factory, monkeypatch, tmp_path) -> dict:
    """aiprod eval of the README's example on held-out (colour, shape, direction) combinations never trained
    on, drawn afresh (photos, crops, sizes, paths) with a seed other than the corpus' own."""
    if draw_seed not in _T2V:
        _T2V[draw_seed] = _text_to_video_eval(_video_draw(draw_seed, tmp_path_factory, "t2v"), monkeypatch, tmp_path)
    return _T2V[draw_seed]


def _text_to_video_eval(data: Path, monkeypatch, tmp_path) -> dict:
    r = _eval(ROOT / "examples" / "text_to_video.yaml", data, monkeypatch, tmp_path)
    assert r["clips"] == 32
    for k in ("colour", "direction", "shape"):
        assert r[f"reference_{k}_hit_rate"] >= 0.90, k  # the judges read the ground truth (shape: 32 of 32 here; 30-31 on the small-shape corpus)
    assert r["reference_photo_hit_rate"] == 1.0  # a whole-photo corpus: aiprod eval reads the photo too
    return {**{c["metric"]: c for c in r["floor"]["checks"]}, "photo_hit_rate": {"value": r["photo_hit_rate"]}}


@pytest.mark.parametrize("draw_seed", [0, 1, 2, 3])
def test_text_to_video_colour_and_direction(draw_seed, tmp_path_factory, monkeypatch, tmp_path):
    """Issue 18's colour (>= 0.90) and direction (>= 0.80) floors on the text-to-video corpus' own held-out split
    and three fresh draws of it (measured 1.00 / 1.00 on each: weights/tiny/README.md), and regression bounds."""
    checks = _text_to_video(draw_seed, tmp_path_factory, monkeypatch, tmp_path)
    for key in ("colour_hit_rate", "direction_hit_rate"):
        assert checks[key]["pass"], checks[key]
    # the prompted photo (no floor in the issue; a regression bound: measured 0.75-0.88, chance 0.10)
    assert checks["photo_hit_rate"]["value"] >= 0.40, checks["photo_hit_rate"]
    # the shape's floor (0.70) is not met (the strict xfail below); a regression bound: measured 0.59-0.69 (the
    # example's Heun sampler; 0.50-0.66 with Euler), without the convolution head 0.47-0.56, on small shapes
    # 0.31-0.34, chance 0.33
    assert checks["shape_hit_rate"]["value"] >= 0.55, checks["shape_hit_rate"]


@pytest.mark.xfail(strict=True, reason="issue 18: the demo SHDT draws the held-out squares round (fill "
                   "0.81-0.85, corpus 0.96, square bound 0.845; shape hit rate 0.59-0.69 on the four held-out sets, "
                   "chance 0.33, floor 0.70; weights/tiny/README.md); strict: once it passes, drop this mark")
@pytest.mark.parametrize("draw_seed", [0, 1, 2, 3])
def test_text_to_video_shape(draw_seed, tmp_path_factory, monkeypatch, tmp_path):
    check = _text_to_video(draw_seed, tmp_path_factory, monkeypatch, tmp_path)["shape_hit_rate"]
    assert check["pass"], check
