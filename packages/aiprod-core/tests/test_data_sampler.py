"""The epoch sampler: disjoint rank partitions covering the set, exact resume, shared buckets, O(1) steps."""

from __future__ import annotations

import numpy as np
import pytest

from aiprod_core.data.sampler import EpochSampler, Permutation


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_bijection(n):
    p = Permutation(n, key=12345)
    out = [p(i) for i in range(n)]
    assert sorted(out) == list(range(n))
    if n >= 64:  # actually shuffled, and the key matters
        assert out != list(range(n))
        assert out != [Permutation(n, key=54321)(i) for i in range(n)]


def test_two_ranks_one_epoch_disjoint_and_complete():
    buckets = np.repeat([0, 1, 2], [40, 24, 16])  # 80 items, every bucket a multiple of G = 4 x 2
    s = EpochSampler(buckets, batch_size=4, world_size=2, seed=3)
    assert s.steps_per_epoch == 80 // 8
    seen = {0: [], 1: []}
    for step in range(s.steps_per_epoch):
        b = s.bucket(step)
        for rank in (0, 1):
            idx = s.indices(step, rank)
            assert all(buckets[i] == b for i in idx)  # both ranks on the bucket of the step
            seen[rank] += idx
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(80))
    # the next epoch is another order of the same items
    nxt = [i for step in range(s.steps_per_epoch, 2 * s.steps_per_epoch) for i in s.indices(step, 0)]
    assert nxt != seen[0] and len(set(nxt)) == len(nxt)


def test_uneven_buckets_pad_like_distributed_sampler():
    buckets = np.repeat([0, 1], [10, 3])
    s = EpochSampler(buckets, batch_size=2, world_size=2)
    drawn = [i for step in range(s.steps_per_epoch) for r in (0, 1) for i in s.indices(step, r)]
    assert set(drawn) == set(range(13))  # every item, a few twice
    assert s.steps_per_epoch == 3 + 1
    dropped = EpochSampler(buckets, batch_size=2, world_size=2, drop_last=True)
    assert dropped.steps_per_epoch == 2
    assert EpochSampler([-1, 0, 0], batch_size=1).num_items == 2  # -1: never drawn


def test_resume_mid_epoch_is_the_same_sequence():
    buckets = np.arange(500) % 5
    a = EpochSampler(buckets, batch_size=3, world_size=2, seed=11)
    full = [a.indices(step, r) for step in range(300) for r in (0, 1)]
    b = EpochSampler(buckets, batch_size=3, world_size=2, seed=11)  # a fresh process resuming at step 137
    resumed = [b.indices(step, r) for step in range(137, 300) for r in (0, 1)]
    assert resumed == full[137 * 2:]
    other_seed = EpochSampler(buckets, batch_size=3, world_size=2, seed=12)
    assert [other_seed.indices(s, 0) for s in range(5)] != [a.indices(s, 0) for s in range(5)]


def test_grad_accumulation_micro_batches_are_disjoint():
    s = EpochSampler(np.zeros(48, int), batch_size=2, world_size=2, grad_accum=3)
    assert s.steps_per_epoch == 4
    drawn = [i for step in range(4) for m in range(3) for r in range(2) for i in s.indices(step, r, m)]
    assert sorted(drawn) == list(range(48))


def test_million_items_steps_are_cheap():
    import time

    s = EpochSampler(np.arange(1_000_000) % 12, batch_size=8, world_size=8, seed=0)
    t = time.perf_counter()
    for step in range(0, 10_000_000, 50_000):
        s.indices(step, 5)
    per_step = (time.perf_counter() - t) / 200
    assert per_step < 1e-3, per_step


def test_step_indices_follow_accumulation_calls(monkeypatch):
    from aiprod_core.data import StepIndices

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    s = StepIndices(24, batch_size=2, seed=9, grad_accum=3)
    calls = [s(step) for step in (0, 0, 0, 1, 1, 1)]  # the trainer: grad_accum calls per step, in order
    ref = EpochSampler(np.zeros(24, int), batch_size=2, world_size=2, seed=9, grad_accum=3)
    assert calls == [ref.indices(step, 1, m) for step in (0, 1) for m in range(3)]
