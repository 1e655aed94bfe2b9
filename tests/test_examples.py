"""Every examples/*.yaml runs end to end with the committed demo weights (weights/tiny/), in dependency
order, in a scratch folder.

The examples name relative paths under out/examples/; this test runs them from a temporary working
directory, first writing the inputs no example produces (a short mp4, a latents file), and checks each
output. A new example must be added to ORDER (the test fails otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# dependency order: text_to_speech writes the wav audio_encode reads, whose codes audio_decode reads
ORDER = ["text_to_speech", "audio_encode", "audio_decode", "video_reconstruct", "upsample", "text_to_video"]
PACKAGES = ["aiprod_pipelines", "aiprod_tts", "aiprod_audio", "aiprod_hwvae", "aiprod_upsampler", "aiprod_shdt",
            "aiprod_textenc"]


def test_every_example_is_run_here():
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(ORDER)
    for name in ORDER:
        head = (EXAMPLES / f"{name}.yaml").read_text().splitlines()[0]
        assert head == f"# aiprod run examples/{name}.yaml", f"{name}.yaml: first line should show the command"


def test_examples_run_in_order(tmp_path, monkeypatch):
    for pkg in PACKAGES:
        pytest.importorskip(pkg)
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from aiprod_core.pipeline import run_document
    from aiprod_pipelines.media import read_mp4, read_wav, write_mp4

    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / ".aiprod-cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").symlink_to(ROOT / "weights")  # the examples name weights/tiny/<component>
    out = Path("out/examples")
    out.mkdir(parents=True)
    # inputs no example writes: a 12-frame 72x80 clip (cropped to 9 frames 64x64) and stage-1 latents
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:72, :80]
    frames = np.stack([np.stack([(xx * 3 + 10 * t) % 256, yy * 3 % 256, np.full_like(xx, 128)], -1)
                       for t in range(12)]).astype(np.uint8)
    write_mp4(out / "clip.mp4", frames, 8, preset="ultrafast")
    latents = torch.from_numpy(rng.standard_normal((1, 32, 2, 4, 4)).astype(np.float32))  # the demo VAE: 32 ch
    save_file({"latents": latents}, str(out / "latents.safetensors"))

    def run(name, overrides=()):
        return run_document(EXAMPLES / f"{name}.yaml", list(overrides), expect="pipeline", device="cpu",
                            dtype="float32", quiet=True, overwrite=True)

    # text -> speech
    run("text_to_speech")
    speech, sr = read_wav(out / "speech.wav")
    assert sr == 24000 and 1.5 * sr < len(speech) < 5 * sr and np.abs(speech).max() > 1e-3  # ~2.8 s spoken

    # speech -> codes -> speech (the demo codec on both sides)
    info = run("audio_encode")
    with safe_open(str(out / "speech_codes.safetensors"), framework="pt") as f:
        codes, meta = f.get_tensor("codes"), f.metadata()
    assert codes.dtype == torch.int64 and codes.shape == (1, info["num_codebooks"], info["frames"])
    assert info["num_codebooks"] == 4 and int(meta["num_samples"]) == len(speech)  # 6 kbps = 4 x 150 Hz x 10 bit
    assert info["frames"] == math.ceil(len(speech) / sr * float(meta["frame_rate"]))
    run("audio_decode")
    decoded, sr2 = read_wav(out / "speech_decoded.wav")
    assert sr2 == 24000 and len(decoded) == len(speech) and np.isfinite(decoded).all()
    from aiprod_pipelines.eval import si_sdr

    assert si_sdr(speech, decoded) > 1.0  # 2.8 dB (the codec learnt espeak-ng, not this voice); random: < -20

    # clip -> HW-VAE -> clip
    rec = run("video_reconstruct")
    clip = read_mp4(out / "clip_reconstructed.mp4")
    assert clip.frames.shape == (9, 64, 64, 3) and rec["latent_shape"] == (1, 32, 3, 8, 8)
    assert rec["psnr"] > 20.0  # 24.3 dB on this synthetic gradient clip (the corpus: 29.8 dB held-out)

    # latents -> x2 latents (+ refinement)
    up = run("upsample")
    with safe_open(str(out / "latents_x2.safetensors"), framework="pt") as f:
        high = f.get_tensor("latents")
    assert tuple(up["shape"]) == high.shape == (1, 32, 2, 8, 8) and torch.isfinite(high).all()

    # prompt -> narrated mp4, at its shipped size (a few seconds on 2 cores); output at out/text_to_video.mp4
    path = run("text_to_video")
    video = read_mp4(path)
    assert video.frames.shape[1:] == (64, 64, 3) and video.frames.shape[0] >= 17  # longer narration: held frames
    assert video.sample_rate == 24000 and len(video.audio) == video.frames.shape[0] * 24000 // 8  # sync: longest
    assert np.abs(video.audio).max() > 1e-3
    from aiprod_pipelines.eval import shown_colour

    assert shown_colour(video.frames[:17]) == "red"  # the prompt: "a red circle moving left ..."
