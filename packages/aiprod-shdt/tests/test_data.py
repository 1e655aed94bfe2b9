"""Buckets, curriculum stages and cached clips."""

import pytest
import torch

from aiprod_core.errors import AiprodError
from aiprod_core.training import Trainer
from aiprod_shdt.data import CachedClips, Stage, SyntheticClips, bucket_sizes, stage_at, write_clip
from aiprod_shdt.train import SHDTTask


def test_buckets_keep_long_side_and_multiples_of_16():
    assert bucket_sizes(1024, ["16:9", "9:16", "1:1"]) == [(576, 1024), (1024, 576), (1024, 1024)]
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in bucket_sizes(768, ["4:3", "3:4", "21:9"]))
    with pytest.raises(ValueError, match="W:H"):
        bucket_sizes(256, ["wide"])


def test_stage_boundaries():
    stages = [Stage(resolution=256, frames=17, steps=3, batch_size=2), Stage(resolution=512, frames=9, steps=2, batch_size=1)]
    assert [stage_at(stages, s)[0] for s in range(7)] == [0, 0, 0, 1, 1, 1, 1]
    assert stages[0].latent_frames == 5


def test_synthetic_clips_same_content_across_calls():
    data = SyntheticClips(3, 16, 8, 6, seed=1)
    a, b = data.clip(2, (2, 4, 4)), data.clip(2, (2, 4, 4))
    assert torch.equal(a["latents"], b["latents"]) and a["text"].shape[1] == 8
    assert 0.5 < float(a["latents"].std()) < 2.0
    assert not torch.equal(a["latents"], data.clip(1, (2, 4, 4))["latents"])


def test_cached_clips_bucketed_cropped_padded(tmp_path):
    g = torch.Generator().manual_seed(0)
    shapes = {"sq0": (3, 4, 4), "sq1": (2, 5, 4), "wide": (3, 2, 5), "short": (1, 4, 4)}
    for i, (name, shape) in enumerate(shapes.items()):
        mask = torch.ones(6, dtype=torch.bool)
        mask[3 + i % 3:] = False
        write_clip(tmp_path / "32" / f"{name}.safetensors", torch.randn(16, *shape, generator=g),
                   torch.randn(6, 8, generator=g), mask)
    data = CachedClips(tmp_path)
    stage = Stage(resolution=32, frames=5, steps=1, batch_size=3)
    seen = set()
    for seed in range(12):
        b = data.batch(stage, ["1:1", "2:1"], torch.Generator().manual_seed(seed))
        seen.add(tuple(b["latents"].shape))
        assert b["text"].shape[:2] == b["text_mask"].shape and b["text_mask"][:, 0].all()
        assert (b["text"][~b["text_mask"]] == 0).all()
    assert seen == {(3, 16, 2, 4, 4), (3, 16, 2, 2, 4)}  # square bucket 32x32, wide bucket 16x32; 'short' never
    with pytest.raises(AiprodError, match="no cached clip is large enough"):
        data.batch(Stage(resolution=32, frames=17, steps=1, batch_size=1), ["1:1"], torch.Generator())
    with pytest.raises(AiprodError, match="no cached clips"):
        CachedClips(tmp_path / "empty").batch(stage, ["1:1"], torch.Generator())


def test_cached_source_trains(tmp_path, tiny_config):
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        write_clip(tmp_path / "cache" / "32" / f"{i}.safetensors", torch.randn(16, 2, 4, 4, generator=g),
                   torch.randn(5, 32, generator=g), torch.ones(5, dtype=torch.bool))
    cfg = tiny_config(tmp_path, data={"source": "cached", "cache_dir": str(tmp_path / "cache")},
                      curriculum=[{"resolution": 32, "frames": 5, "steps": 3, "batch_size": 2}])
    metrics = Trainer(cfg.train, SHDTTask(cfg)).fit()
    assert metrics["step"] == 3 and metrics["loss"] > 0
