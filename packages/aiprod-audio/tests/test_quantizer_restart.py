"""Codebook seeding and dead-code restarts happen outside the forward (``NACCodec.restart_dead_codes``, called
by the recipe after the optimizer step), so they survive FSDP2, which frees the gathered parameters a write
inside the forward would land on."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from aiprod_audio.model import NACCodec
from aiprod_audio.presets import PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from restart_worker import worker  # noqa: E402


def test_forward_keeps_vectors_and_restart_seeds_outside_it():
    torch.manual_seed(0)
    m = NACCodec(**PRESETS["tiny"]).train()
    stage = m.quantizer.stages[0]
    before = stage.codebook.detach().clone()
    m(torch.randn(4, 1, 3200) * 0.3)
    assert torch.equal(stage.codebook.detach(), before)  # the forward writes no parameter
    assert m.restart_dead_codes() == m.num_codebooks * m.codebook_size  # fresh: every code seeded
    assert not torch.equal(stage.codebook.detach(), before)
    assert m.restart_dead_codes() == 0  # nothing kept since the last restart
    # a collapsed stage (every code identical, only code 0 used for long): the unused codes are re-seeded
    with torch.no_grad():
        stage.codebook.data[:] = stage.codebook.data[:1]
        stage.usage.zero_()[0] = 1.0
    m(torch.randn(4, 1, 3200) * 0.3)
    m(torch.randn(4, 1, 3200) * 0.3)  # two forwards before one restart (gradient accumulation)
    assert m.restart_dead_codes() == m.codebook_size - 1
    assert torch.unique(stage.codebook.detach(), dim=0).shape[0] > 30 and (stage.usage > 0).all()
    m.eval()
    m(torch.randn(1, 1, 3200) * 0.3)  # evaluation keeps nothing
    assert m.restart_dead_codes() == 0


@pytest.mark.slow
def test_restart_survives_fsdp2(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for r in (r0, r1):
        assert r["local_rows"] * 2 == r["rows"]  # sharded for real
        assert r["unchanged_in_forward"]
        assert r["restarted"] == 2 * r["rows"] and r["restarted_again"] == 0
        assert r["changed"] > 0.1  # the write reached the sharded parameter
        assert r["max_dist"] < 1e-5  # every code is one of rank 0's encoder vectors
        assert r["usage_min"] > 0
    assert r0["codebook"] == r1["codebook"]  # the ranks agree
