"""`aiprod data prepare` on a folder of mixed videos, `aiprod data cache` under torchrun x2 into shards, and the
tiny SHDT trained from those shards under torchrun x2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

av = pytest.importorskip("av")
pytest.importorskip("webdataset")

from aiprod_core.errors import AiprodError  # noqa: E402
from aiprod_pipelines.ingest import PrepareConfig, format_report, prepare  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def _video(path: Path, n: int, fps: int, size: tuple[int, int], fmt: str | None = None) -> None:
    """Frame ``i`` is flat grey ``8 i mod 256`` (so a clip tells which source instants it holds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as box:
        s = box.add_stream("libx264", rate=fps)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        s.options = {"g": "8", "crf": "10"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((*size, 3), (8 * i) % 256, np.uint8), format="rgb24")
            f.pts = i
            box.mux(s.encode(f))
        box.mux(s.encode(None))


def make_videos(root: Path) -> None:
    _video(root / "a.mp4", 30, 12, (48, 64))               # 2.5 s landscape 4:3 at 12 fps -> 5 clips
    _video(root / "sub" / "b.mov", 40, 25, (64, 48), "mov")  # 1.6 s portrait 3:4 at 25 fps -> 3 clips
    _video(root / "c.mp4", 6, 30, (80, 80))                # 0.2 s: too short
    _video(root / "d.mp4", 20, 10, (48, 64))               # no caption
    _video(root / "f.mp4", 20, 10, (24, 32))               # smaller than its bucket
    (root / "e.mp4").write_bytes(b"not a video at all")
    (root / "captions.jsonl").write_text("\n".join(json.dumps(e) for e in [
        {"file": "a.mp4", "caption": "a grey ramp, landscape"}, {"file": "c.mp4", "caption": "short"},
        {"file": "e.mp4", "caption": "broken"}, {"file": "f.mp4", "caption": "tiny"}]) + "\n")
    (root / "sub" / "b.txt").write_text("a grey ramp, portrait\n")


CFG = PrepareConfig(fps=10, frames=5, resolutions=[64], aspect_ratios=["4:3", "3:4", "1:1"])


def test_prepare_cuts_resamples_crops_and_reports(tmp_path):
    from aiprod_pipelines.corpus import read_captions
    from aiprod_pipelines.media import read_mp4

    make_videos(tmp_path / "videos")
    report = prepare(tmp_path / "videos", tmp_path / "out", CFG, progress=False)
    assert report["clips"] == 8
    reasons = dict(report["skipped"])
    assert sorted(reasons) == ["c.mp4", "d.mp4", "e.mp4", "f.mp4"]
    assert "too short" in reasons["c.mp4"] and "no caption" in reasons["d.mp4"]
    assert "not a readable video" in reasons["e.mp4"] and "smaller than every bucket" in reasons["f.mp4"]
    assert any("e.mp4" in line for line in format_report(report))
    entries = read_captions(tmp_path / "out")
    assert [e["source"] for e in entries] == ["a.mp4"] * 5 + ["sub/b.mov"] * 3
    assert {(e["height"], e["width"]) for e in entries} == {(48, 64), (64, 48)}
    assert entries[5]["caption"] == "a grey ramp, portrait"
    clip = read_mp4(entries[1]["path"], audio=False)  # a.mp4 from 0.5 s at 10 fps: source frames 6, 7, 8, 9, 10
    assert clip.frames.shape == (5, 48, 64, 3) and abs(clip.fps - 10) < 1e-6
    assert [int(round(f.mean() / 8)) for f in clip.frames] == [6, 7, 8, 9, 10]
    # a second run resumes: nothing redone, same report
    again = prepare(tmp_path / "videos", tmp_path / "out", CFG, progress=False)
    assert again["clips"] == 8 and len(again["skipped"]) == 4 and len(read_captions(tmp_path / "out")) == 8
    with pytest.raises(AiprodError, match="other settings"):
        prepare(tmp_path / "videos", tmp_path / "out", CFG.model_copy(update={"fps": 12}), progress=False)


def _torchrun(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AIPROD_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    aiprod = Path(sys.executable).with_name("aiprod")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(aiprod), *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res


@pytest.mark.slow
def test_ingest_cache_and_train_tiny_shdt_under_torchrun(tmp_path):
    pytest.importorskip("aiprod_hwvae")
    pytest.importorskip("aiprod_textenc")
    pytest.importorskip("aiprod_shdt")
    import torch

    from aiprod_core.data.shards import ShardReader
    from aiprod_core.registry import get_registry

    make_videos(tmp_path / "videos")
    prepare(tmp_path / "videos", tmp_path / "clips", CFG, progress=False)
    reg = get_registry()
    torch.manual_seed(0)
    vae = reg.component("video-autoencoder", "hwvae").build("tiny").save_pretrained(tmp_path / "vae")
    enc = reg.component("text-encoder", "gemma3-lora").build("tiny").save_pretrained(tmp_path / "enc")
    cache = ["data", "cache", str(tmp_path / "clips"), str(tmp_path / "shards"), "--autoencoder", str(vae),
             "--text-encoder", str(enc), "--batch-size", "2", "--shard-size", "2", "--device", "cpu", "--quiet"]
    res = _torchrun(cache)
    assert "rank 0: 4 samples" in res.stdout and "rank 1: 4 samples" in res.stdout  # each rank its half
    reader = ShardReader(tmp_path / "shards")
    assert len(reader) == 8 and {s[:4] for s in reader.shards} == {"r000", "r001"}
    assert sorted(zip(reader.index["height"].tolist(), reader.index["width"].tolist())) == [(6, 8)] * 5 + [(8, 6)] * 3
    sample = reader[0]
    assert sample["latents"].shape == (16, 2, 6, 8) and sample["text"].shape[-1] == 32
    from aiprod_pipelines.latent_cache import cache_corpus

    # resume (here in one process): every sample is already in a shard, nothing is encoded again
    assert cache_corpus(tmp_path / "clips", tmp_path / "shards", vae, enc, device="cpu", progress=False) == 0
    assert len(ShardReader(tmp_path / "shards")) == 8

    config = {
        "recipe": "shdt", "model": {"preset": "tiny"}, "mode": "full",
        "curriculum": [{"resolution": 64, "frames": 5, "steps": 4, "batch_size": 1}],
        "data": {"source": "cached", "cache_dir": str(tmp_path / "shards"), "aspect_ratios": ["4:3", "3:4"]},
        "text_dropout": 0.1, "eval_clips": 2,
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "seed": 0, "lr": 1e-3, "warmup_steps": 1,
                  "checkpoint_every": 2, "log_every": 1, "device": "cpu", "progress": False, "strategy": "ddp"},
    }
    (tmp_path / "shdt.yaml").write_text(yaml.safe_dump(config))
    _torchrun(["train", str(tmp_path / "shdt.yaml")])
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m and m.get("step", 0) <= 4]
    assert len(losses) >= 4 and all(np.isfinite(losses))
    assert (tmp_path / "run" / "final" / "model" / "model.safetensors").is_file()


def test_prepare_command_line(tmp_path):
    from click.testing import CliRunner

    from aiprod_core.cli import build_cli

    cli = build_cli()
    make_videos(tmp_path / "videos")
    args = ["data", "prepare", str(tmp_path / "videos"), str(tmp_path / "out"), "--fps", "10", "--frames", "5",
            "--resolution", "64", "--aspect", "4:3", "--aspect", "3:4", "--max-clips", "1", "--workers", "2"]
    r = CliRunner().invoke(cli, ["--quiet", *args])
    assert r.exit_code == 0, r.output
    assert "-> 2 clips" in r.output and "skipped e.mp4: not a readable video" in r.output
    bad = CliRunner().invoke(cli, ["data", "prepare", str(tmp_path / "videos"), str(tmp_path / "o2"), "--frames", "8"])
    assert bad.exit_code == 2 and "frames must be 1 + 4k" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(cli, ["data", "prepare", str(tmp_path / "nothing"), str(tmp_path / "o3")])
    assert missing.exit_code == 2 and "not a folder of videos" in missing.output


def test_cache_names_and_skips_a_clip_that_is_not_1_plus_4k_frames(tmp_path, capsys):
    pytest.importorskip("aiprod_hwvae")
    pytest.importorskip("aiprod_textenc")
    pytest.importorskip("aiprod_shdt")
    import torch

    from aiprod_core.data.shards import ShardReader
    from aiprod_core.registry import get_registry
    from aiprod_pipelines.latent_cache import cache_corpus

    split = tmp_path / "split"
    _video(split / "good.mp4", 5, 10, (32, 48))
    _video(split / "bad.mp4", 6, 10, (32, 48))
    (split / "captions.jsonl").write_text(json.dumps({"file": "good.mp4", "caption": "good"}) + "\n"
                                          + json.dumps({"file": "bad.mp4", "caption": "bad"}) + "\n")
    reg = get_registry()
    torch.manual_seed(0)
    vae = reg.component("video-autoencoder", "hwvae").build("tiny").save_pretrained(tmp_path / "vae")
    enc = reg.component("text-encoder", "gemma3-lora").build("tiny").save_pretrained(tmp_path / "enc")
    assert cache_corpus(split, tmp_path / "shards", vae, enc, device="cpu", progress=False) == 1
    err = capsys.readouterr().err
    assert "bad.mp4" in err and "6 frames" in err and "1 + 4k" in err
    assert json.loads((tmp_path / "shards" / "skipped.r000.jsonl").read_text())["file"] == "bad.mp4"
    reader = ShardReader(tmp_path / "shards")
    assert reader.index["key"].tolist() == ["48-good"] and reader[0]["latents"].shape == (16, 2, 4, 6)
