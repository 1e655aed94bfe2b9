"""Every examples/*.yaml runs on its own, with the committed demo weights (weights/tiny/) and the inputs
shipped in examples/assets/, each in its own fresh temporary directory (so in any order, and none
depends on another's output).

The examples name paths relative to the repository root (weights/tiny/..., examples/assets/...,
out/...); the test links `weights` and `examples` into an empty directory, runs the example there and
checks what it wrote. A new example needs a check below (test_every_example_has_a_check fails otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ASSETS = EXAMPLES / "assets"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
# the packages each example needs (its pipeline kind and components)
NEEDS = {
    "text_to_speech": ["aiprod_tts"],
    "audio_encode": ["aiprod_audio"],
    "audio_decode": ["aiprod_audio", "aiprod_pipelines"],
    "video_reconstruct": ["aiprod_pipelines", "aiprod_hwvae"],
    "upsample": ["aiprod_upsampler", "aiprod_shdt", "aiprod_textenc"],
    "text_to_video": ["aiprod_pipelines", "aiprod_textenc", "aiprod_shdt", "aiprod_hwvae", "aiprod_tts"],
}


def test_every_example_has_a_check_and_shows_its_command():
    assert sorted(NEEDS) == NAMES == sorted(CHECKS), "add the new example to NEEDS and CHECKS"
    for name in NAMES:
        head = (EXAMPLES / f"{name}.yaml").read_text().splitlines()[0]
        assert head == f"# aiprod run examples/{name}.yaml", f"{name}.yaml: first line should show the command"


def test_examples_read_only_shipped_inputs():
    """No example reads another example's output: every input it names is a file under examples/assets/."""
    import yaml

    for name in NAMES:
        doc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        for key in ("input", "text_file"):
            if key in doc:
                assert doc[key].startswith("examples/assets/") and (ROOT / doc[key]).is_file(), f"{name}.yaml: {key}"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """An empty working directory holding only links to weights/ and examples/ (the paths the YAMLs name)."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / ".aiprod-cache"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "weights").symlink_to(ROOT / "weights")
    (work / "examples").symlink_to(EXAMPLES)
    monkeypatch.chdir(work)
    return work


def _run(name):
    from aiprod_core.pipeline import run_document

    return run_document(EXAMPLES / f"{name}.yaml", [], expect="pipeline", device="cpu", dtype="float32",
                        quiet=True)


def check_text_to_speech(info, out):
    from aiprod_pipelines.media import read_wav

    speech, sr = read_wav(out / "examples" / "speech.wav")
    assert sr == 24000 and 1.5 * sr < len(speech) < 5 * sr and np.abs(speech).max() > 1e-3  # ~2.8 s spoken


def check_audio_encode(info, out):
    import torch
    from safetensors import safe_open

    from aiprod_pipelines.media import read_wav

    speech, sr = read_wav(ASSETS / "speech.flac")
    with safe_open(str(out / "examples" / "speech_codes.safetensors"), framework="pt") as f:
        codes, meta = f.get_tensor("codes"), f.metadata()
    assert codes.dtype == torch.int64 and codes.shape == (1, info["num_codebooks"], info["frames"])
    assert info["num_codebooks"] == 4 and int(meta["num_samples"]) == len(speech)  # 6 kbps = 4 x 150 Hz x 10 bit
    assert info["frames"] == math.ceil(len(speech) / sr * float(meta["frame_rate"]))


def check_audio_decode(info, out):
    from aiprod_pipelines.eval import si_sdr
    from aiprod_pipelines.media import read_wav

    speech, _ = read_wav(ASSETS / "speech.flac")  # what the shipped codes encode
    decoded, sr = read_wav(out / "examples" / "speech_decoded.wav")
    assert sr == 24000 and len(decoded) == len(speech) and np.isfinite(decoded).all()
    assert si_sdr(speech, decoded) > 1.0  # 2.8 dB (the codec learnt espeak-ng speech, not this voice); random: < -20


def check_video_reconstruct(info, out):
    from aiprod_pipelines.media import read_mp4

    clip = read_mp4(out / "examples" / "clip_reconstructed.mp4")
    assert clip.frames.shape == (9, 64, 64, 3) and info["latent_shape"] == (1, 32, 3, 8, 8)
    assert info["psnr"] > 24.0  # a corpus-like clip (shape over a photo); the held-out corpus: 30.0 dB


def check_upsample(info, out):
    import torch
    from safetensors import safe_open

    with safe_open(str(out / "examples" / "latents_x2.safetensors"), framework="pt") as f:
        high = f.get_tensor("latents")
    assert tuple(info["shape"]) == high.shape == (1, 32, 3, 8, 8) and torch.isfinite(high).all()


def check_text_to_video(path, out):
    from aiprod_pipelines.eval import shown_colour
    from aiprod_pipelines.media import read_mp4

    assert Path(path).resolve() == (out / "text_to_video.mp4").resolve()
    video = read_mp4(path)
    assert video.frames.shape[1:] == (64, 64, 3) and video.frames.shape[0] >= 17  # longer narration: held frames
    assert video.sample_rate == 24000 and len(video.audio) == video.frames.shape[0] * 24000 // 8  # sync: longest
    assert np.abs(video.audio).max() > 1e-3  # the prompt, spoken
    assert shown_colour(video.frames[:17]) == "red"  # the prompt: "a red circle moving left ..."


CHECKS = {name.removeprefix("check_"): fn for name, fn in dict(globals()).items() if name.startswith("check_")}


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_alone_in_a_fresh_directory(name, scratch):
    for pkg in NEEDS[name]:
        pytest.importorskip(pkg, reason=f"examples/{name}.yaml needs {pkg.replace('_', '-')}")
    result = _run(name)
    CHECKS[name](result, scratch / "out")
    written = sorted(str(p.relative_to(scratch)) for p in (scratch / "out").rglob("*") if p.is_file())
    assert written, f"{name}: wrote nothing under out/"
