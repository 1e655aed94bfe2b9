"""video-reconstruct: cropping, PSNR and overwrite rules with the exact dummy autoencoder, then real HW-VAE tiny."""

from __future__ import annotations

import json
import math

import dummies
import numpy as np
import pytest
import yaml

import aiprod_core.registry as registry_mod
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.pipeline import run_document
from aiprod_pipelines.media import read_mp4, write_mp4
from aiprod_pipelines.video_reconstruct import crop_frames, psnr


@pytest.fixture
def reg(monkeypatch):
    reg = dummies.make_registry()
    monkeypatch.setattr(registry_mod, "_REGISTRY", reg)
    return reg


def blocky_clip(t=11, h=36, w=44, seed=0) -> np.ndarray:
    """Frames constant on the dummy's blocks (8x8 px aligned on the centred crop; frame 0, then 4-frame groups)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((t, h, w, 3), np.uint8)
    top, left = (h - h // 8 * 8) // 2, (w - w // 8 * 8) // 2
    groups = [0] + [1 + (i - 1) // 4 for i in range(1, t)]
    blocks = rng.integers(40, 215, size=(max(groups) + 1, h // 8, w // 8, 3))
    for i, g in enumerate(groups):
        frames[i, top:top + h // 8 * 8, left:left + w // 8 * 8] = np.kron(blocks[g], np.ones((8, 8, 1)))
    return frames


def doc(tmp_path, **over):
    d = {"pipeline": "video-reconstruct", "autoencoder": {"name": "dummy-ae", "preset": "tiny"},
         "input": str(tmp_path / "in.mp4"), "output": str(tmp_path / "out" / "rec.mp4"), "crf": 0}
    d.update(over)
    path = tmp_path / "rec.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_crop_rules():
    f = np.zeros((12, 37, 50, 3), np.uint8)
    assert crop_frames(f).shape == (9, 32, 48, 3)
    assert crop_frames(f, max_frames=8, size=(24, 30)).shape == (5, 24, 24, 3)
    assert crop_frames(f[:1]).shape == (1, 32, 48, 3)
    with pytest.raises(AiprodError, match="smaller than one 8x8 block"):
        crop_frames(f[:, :7])
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    assert abs(psnr(a, a + 1) - 20 * math.log10(255)) < 1e-9


def test_dummy_reconstruction_crops_and_scores(reg, tmp_path):
    src = blocky_clip()
    write_mp4(tmp_path / "in.mp4", src, 8, crf=0, preset="ultrafast")
    out = run_document(doc(tmp_path), device="cpu", quiet=True)
    assert out["frames"] == 9 and out["latent_shape"] == (1, 4, 3, 4, 5)  # 11 -> 9 frames, 36x44 -> 32x40
    clip = read_mp4(out["output"])
    assert clip.frames.shape == (9, 32, 40, 3) and clip.fps == 8
    # block-constant input survives block means up to the H.264/yuv420p rounding of the two files
    assert out["psnr"] > 30
    assert json.loads(clip.metadata["comment"])["psnr_db"] == round(out["psnr"], 3)
    # a noisy clip is not block-constant: the dummy loses its detail and the PSNR says so
    noisy = np.random.default_rng(1).integers(0, 256, size=(9, 32, 40, 3), dtype=np.uint8)
    write_mp4(tmp_path / "noisy.mp4", noisy, 8, crf=0, preset="ultrafast")
    bad = run_document(doc(tmp_path, input=str(tmp_path / "noisy.mp4"), output=str(tmp_path / "n.mp4")),
                       device="cpu", quiet=True)
    assert bad["psnr"] < 15


def test_frames_and_size_options(reg, tmp_path):
    write_mp4(tmp_path / "in.mp4", blocky_clip(t=17, h=48, w=64), 10, crf=0, preset="ultrafast")
    out = run_document(doc(tmp_path, frames=7, size=[24, 40], fps=5), device="cpu", quiet=True)
    clip = read_mp4(out["output"])
    assert clip.frames.shape == (5, 40, 24, 3) and clip.fps == 5


def test_existing_output_refused_and_bad_config(reg, tmp_path):
    write_mp4(tmp_path / "in.mp4", blocky_clip(t=5), 8, crf=0, preset="ultrafast")
    path = doc(tmp_path)
    run_document(path, device="cpu", quiet=True)
    before = (tmp_path / "out" / "rec.mp4").read_bytes()
    with pytest.raises(AiprodError, match="already exists; pass --overwrite"):
        run_document(path, device="cpu", quiet=True)
    assert (tmp_path / "out" / "rec.mp4").read_bytes() == before
    run_document(path, device="cpu", quiet=True, overwrite=True)
    with pytest.raises(AiprodError, match="not found"):
        run_document(doc(tmp_path, input=str(tmp_path / "missing.mp4")), device="cpu", quiet=True)
    with pytest.raises(ConfigError, match="video-autoencoder"):
        run_document(doc(tmp_path, autoencoder={"name": "dummy-ae", "kind": "audio-codec", "preset": "tiny"}),
                     device="cpu", quiet=True)


def test_real_hwvae_tiny(tmp_path):
    pytest.importorskip("aiprod_hwvae")
    write_mp4(tmp_path / "in.mp4", blocky_clip(t=6, h=32, w=32), 8, crf=0, preset="ultrafast")
    out = run_document(doc(tmp_path, autoencoder={"name": "hwvae", "preset": "tiny"}), device="cpu",
                       dtype="float32", quiet=True)
    assert out["frames"] == 5 and out["latent_shape"] == (1, 16, 2, 4, 4)
    clip = read_mp4(out["output"])
    assert clip.frames.shape == (5, 32, 32, 3)
    assert math.isfinite(out["psnr"]) and out["psnr"] > 0  # untrained: a score, not a quality floor
