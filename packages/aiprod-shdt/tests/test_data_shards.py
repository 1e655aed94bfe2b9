"""SHDT's cached source on WebDataset shards through the core epoch sampler."""

from __future__ import annotations

import pytest
import torch

from aiprod_shdt.data import CachedClips, Stage, write_clip_shard

pytest.importorskip("webdataset")


def _shards(folder, n=24):
    """``n`` clips whose latents hold their own number (so a batch tells which clips it drew): 16 square
    (4x4 latent = 32 px), 8 wide (2x4), all 3 latent frames, at resolution 32; plus 4 square at resolution 64."""
    from aiprod_core.data.shards import ShardWriter, finalize

    with ShardWriter(folder, max_count=5) as w:
        for i in range(n + 4):
            h, w_ = (4, 4) if i < 16 or i >= n else (2, 4)
            res = 32 if i < n else 64
            lat = torch.full((16, 3, h * res // 32, w_ * res // 32), float(i))
            write_clip_shard(w, f"c{i:03d}", lat, torch.randn(5, 8), torch.ones(5, dtype=torch.bool), res,
                             {"caption": f"clip {i}"})
    finalize(folder)


def _ids(batch):
    return [int(v) for v in batch["latents"][:, 0, 0, 0, 0]]


def test_two_ranks_disjoint_epoch_and_exact_resume(tmp_path, monkeypatch):
    _shards(tmp_path)
    stages = [Stage(resolution=32, frames=9, steps=6, batch_size=2)]
    ratios = ["1:1", "2:1"]
    runs = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        data = CachedClips(tmp_path, stages, seed=5)
        runs[rank] = [_ids(data.batch(stages[0], ratios, torch.Generator(), step=s)) for s in range(6)]
        for s in range(6):  # every batch from one bucket, the same on both ranks
            assert len({(i < 16) for i in runs[rank][s]}) == 1
    assert [(r0[0] < 16) for r0 in runs[0]] == [(r1[0] < 16) for r1 in runs[1]]
    seen0 = {i for b in runs[0] for i in b}
    seen1 = {i for b in runs[1] for i in b}
    assert not seen0 & seen1 and seen0 | seen1 == set(range(24))  # one epoch: disjoint, complete, no 64 px clip
    # a resumed process (fresh source, workers) continues the same sequence from step 3
    monkeypatch.setenv("RANK", "1")
    resumed = CachedClips(tmp_path, stages, seed=5, num_workers=2)
    assert [_ids(resumed.batch(stages[0], ratios, torch.Generator(), step=s)) for s in range(3, 6)] == runs[1][3:]
    b = resumed.batch(stages[0], ratios, torch.Generator(), step=4)
    assert b["latents"].shape[2] == 3 and b["text"].shape == (2, 5, 8)


def test_resolution_column_picks_the_stage_and_eval_draws(tmp_path):
    _shards(tmp_path)
    stage = Stage(resolution=64, frames=5, steps=1, batch_size=3)
    data = CachedClips(tmp_path, [stage])
    b = data.batch(stage, ["1:1"], torch.Generator().manual_seed(0))  # no step: generator draws (evaluation)
    assert b["latents"].shape == (3, 16, 2, 8, 8) and set(_ids(b)) <= {24, 25, 26, 27}
