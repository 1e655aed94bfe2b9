"""The quality floors of the end-to-end issue, on the committed demo weights and freshly generated held-out
data (the corpora are pure functions of their settings, so these are the splits weights/tiny/README.md
reports): HW-VAE PSNR >= 30 dB, codec SI-SDR >= 8 dB at 6 kbps, TTS mel distance <= 0.5 x untrained on three
re-drawn speech sets (+ pocketsphinx WER, and the phoneme recogniser's PER beside the recordings': issue 18's
TTS PER <= 1.5 x the recordings' is a strict xfail), and text-to-video on freshly drawn held-out sets: colour >= 0.70 (the
end-to-end issue's floor) on three draws; the demo issue's floors (colour >= 0.90, direction >= 0.80,
shape >= 0.70, aiprod eval's judges) are a strict xfail until the demo is retrained."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
W = ROOT / "weights" / "tiny"


_DRAWS: dict[tuple[str, int], Path] = {}  # (kind, seed) -> corpus folder, each generated once per session


def _video_draw(seed: int, tmp_path_factory) -> Path:
    """The video corpus' held-out split: seed 0 is the corpus' own (what the demo weights were trained beside),
    others are fresh draws of the same held-out (colour, shape, direction) combinations (other photos, crops,
    sizes, paths). Held-out clips depend on (seed, split, index) only: 1 training clip is enough."""
    if ("video", seed) not in _DRAWS:
        pytest.importorskip("aiprod_pipelines")
        from aiprod_pipelines.corpus import CorpusConfig, make_video_corpus

        cfg = CorpusConfig(train_clips=1, **({"draw_seed": seed} if seed else {}))
        _DRAWS["video", seed] = make_video_corpus(tmp_path_factory.mktemp(f"vc{seed}") / "video_corpus", cfg)
    return _DRAWS["video", seed]


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
    of them among the voice's training sentences, corpus seed 0): mel distance, untrained voice, phoneme error
    rate of weights/tiny/phoneme_recogniser on the voice's speech, the recordings' and the untrained voice's."""
    if seed not in _TTS:
        from importlib.util import find_spec

        data = _speech_draw(seed, tmp_path_factory)
        asr = seed == 101 and find_spec("pocketsphinx") is not None  # reported on one set (slow)
        _TTS[seed] = _eval(W / "tts", data, monkeypatch, tmp_path, asr=asr, recogniser=W / "phoneme_recogniser")
    return _TTS[seed]


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_tts_mel_distance_and_phoneme_error_rate(seed, tmp_path_factory, monkeypatch, tmp_path):
    r = _tts(seed, tmp_path_factory, monkeypatch, tmp_path)
    checks = {c["metric"]: c for c in r["floor"]["checks"]}
    assert r["utterances"] == 16 and checks["mel_distance_ratio"]["pass"], checks  # <= 0.5 x untrained
    # the recogniser hears the recordings, and the voice far better than an untrained one
    assert r["per_reference"] <= 0.05 and r["per"] <= 0.5 * r["per_untrained"], r
    if "asr_wer" in r:  # pocketsphinx, beside the reference recordings' own; not a floor (weights/tiny/README.md)
        assert 0 <= r["asr_wer_reference"] <= 1.0 and r["asr_wer"] >= 0


@pytest.mark.xfail(strict=True, reason="issue 18's intelligibility floor, TTS PER <= 1.5 x the recordings', is not "
                   "met: the recogniser hears the espeak-ng recordings without error (PER 0.000) and the demo voice "
                   "with 0.09-0.14 (weights/tiny/README.md)")
@pytest.mark.parametrize("seed", [101, 102, 103])
def test_tts_phoneme_error_rate_floor(seed, tmp_path_factory, monkeypatch, tmp_path):
    r = _tts(seed, tmp_path_factory, monkeypatch, tmp_path)
    check = next(c for c in r["floor"]["checks"] if c["metric"] == "per_ratio")
    assert check["pass"], check


_T2V: dict[int, dict] = {}  # draw seed -> floor checks (each draw is generated and evaluated once per session)


def _text_to_video(draw_seed: int, tmp_path_factory, monkeypatch, tmp_path) -> dict:
    """aiprod eval of the README's example on held-out (colour, shape, direction) combinations never trained
    on, drawn afresh (photos, crops, sizes, paths) with a seed other than the corpus' own."""
    if draw_seed not in _T2V:
        _T2V[draw_seed] = _text_to_video_eval(_video_draw(draw_seed, tmp_path_factory), monkeypatch, tmp_path)
    return _T2V[draw_seed]


def _text_to_video_eval(data: Path, monkeypatch, tmp_path) -> dict:
    r = _eval(ROOT / "examples" / "text_to_video.yaml", data, monkeypatch, tmp_path)
    assert r["clips"] == 32
    for k in ("colour", "direction", "shape"):
        assert r[f"reference_{k}_hit_rate"] >= 0.95, k  # the judges read the ground truth (draw 2: shape 31/32)
    return {c["metric"]: c for c in r["floor"]["checks"]}


@pytest.mark.parametrize("draw_seed", [1, 2, 3])
def test_text_to_video_colour_regression(draw_seed, tmp_path_factory, monkeypatch, tmp_path):
    """The end-to-end issue's colour floor (>= 0.70) holds on three fresh draws (measured 0.875 on draw 1)."""
    check = _text_to_video(draw_seed, tmp_path_factory, monkeypatch, tmp_path)["colour_hit_rate"]
    assert check["value"] >= 0.70, check


@pytest.mark.xfail(strict=True, reason="issue 18: the demo SHDT does not learn direction and shape words at the "
                   "compute of 2 CPU cores (draw 1: colour 0.875, direction 0.25, shape 0.31 against floors "
                   "0.90 / 0.80 / 0.70; with word-level oracle text embeddings too, so not the text encoder: "
                   "weights/tiny/README.md); strict: once it passes, drop this mark")
@pytest.mark.parametrize("draw_seed", [1, 2, 3])
def test_text_to_video_floors(draw_seed, tmp_path_factory, monkeypatch, tmp_path):
    checks = _text_to_video(draw_seed, tmp_path_factory, monkeypatch, tmp_path)
    assert all(c["pass"] for c in checks.values()), checks
