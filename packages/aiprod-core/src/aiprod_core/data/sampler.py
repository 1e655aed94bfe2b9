"""Epoch sampler: every rank draws without replacement from a per-epoch permutation, in O(1) per step.

The sampler is a pure function of ``(seed, world_size, step)``: nothing to save in a checkpoint, and a
resumed run (or a run restarted on a different machine) draws exactly what the uninterrupted one would.

- An **epoch** is ``steps_per_epoch`` steps. At each step all ranks take a batch from the same bucket
  (the same resolution / frames / aspect, so a batch stacks and DDP ranks do the same amount of work).
- Bucket ``b`` holding ``n_b`` items gives ``ceil(n_b / G)`` global batches per epoch (``G = batch_size x
  world_size x grad_accum``); the last one wraps to the bucket's first items, like
  ``torch.utils.data.DistributedSampler`` pads (``drop_last=True`` drops it instead).
- Which bucket batch a step trains on is a pseudo-random **permutation of the epoch's slots**; which items
  fill a batch is a permutation of the bucket's items. Both permutations are keyed Feistel networks
  (format-preserving encryption of the position, with cycle walking) rather than shuffled arrays, so the
  ``i``-th element of a permutation of a million items costs a few integer operations and no memory,
  and no step pays an O(N) shuffle at an epoch boundary.

Within one epoch, the ranks' batches are disjoint and their union is every item (each once when ``G``
divides every bucket size).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

M64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64's finaliser: a fast bijective 64-bit integer hash."""
    x &= M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def derive_key(*parts: int) -> int:
    """One 64-bit key from a tuple of integers (seed, epoch, bucket, ...)."""
    k = 0x9E3779B97F4A7C15
    for p in parts:
        k = mix64(k ^ mix64(int(p) + 0x632BE59BD9B4E019))
    return k


class Permutation:
    """A pseudo-random permutation of ``range(n)`` keyed by ``key``: ``perm(i)`` in O(1), no table.

    A 4-round balanced Feistel network on the smallest even number of bits covering ``n`` (a bijection on
    ``[0, 4^h)``); values ``>= n`` are walked through the network again until they fall in range (cycle
    walking keeps it a bijection on ``[0, n)``; the domain is < 4n, so < 4 rounds trips on average).
    """

    __slots__ = ("n", "half", "mask", "keys")

    def __init__(self, n: int, key: int, rounds: int = 4):
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits & 1
        self.half = bits // 2
        self.mask = (1 << self.half) - 1
        self.keys = tuple(derive_key(key, r) for r in range(rounds))

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"position {i} outside a permutation of {self.n}")
        half, mask, keys = self.half, self.mask, self.keys
        while True:
            left, right = i >> half, i & mask
            for k in keys:
                left, right = right, left ^ (mix64(right ^ k) & mask)
            i = (left << half) | right
            if i < self.n:
                return i

    def __len__(self) -> int:
        return self.n


@lru_cache(maxsize=256)
def _perm(n: int, key: int) -> Permutation:
    return Permutation(n, key)


class EpochSampler:
    """Which items each rank trains on at each step.

    ``buckets[i]`` is item ``i``'s bucket id (``-1``: never drawn, e.g. too short for the stage). Building
    the sampler groups the items by bucket once (O(N)); every call after that is O(batch_size).
    """

    def __init__(self, buckets: Sequence[int] | np.ndarray, *, batch_size: int, world_size: int = 1,
                 seed: int = 0, grad_accum: int = 1, drop_last: bool = False):
        if batch_size < 1 or world_size < 1 or grad_accum < 1:
            raise ValueError("batch_size, world_size and grad_accum must be >= 1")
        ids = np.asarray(buckets, dtype=np.int64)
        self.batch_size, self.world_size, self.grad_accum = batch_size, world_size, grad_accum
        self.seed, self.drop_last = seed, drop_last
        self.global_batch = batch_size * world_size * grad_accum
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        uniq, starts, counts = np.unique(sorted_ids, return_index=True, return_counts=True)
        self.bucket_ids: list[int] = []
        self.members: list[np.ndarray] = []
        steps: list[int] = []
        for b, s, c in zip(uniq.tolist(), starts.tolist(), counts.tolist()):
            if b < 0:
                continue
            k = c // self.global_batch if drop_last else -(-c // self.global_batch)
            if k == 0:
                continue
            self.bucket_ids.append(b)
            self.members.append(order[s : s + c])
            steps.append(k)
        if not steps:
            raise ValueError(f"no bucket holds enough items for one global batch of {self.global_batch}")
        self.offsets = np.concatenate([[0], np.cumsum(steps)]).tolist()
        self.steps_per_epoch = int(self.offsets[-1])
        self.num_items = int(sum(len(m) for m in self.members))

    def locate(self, step: int) -> tuple[int, int, int]:
        """``(epoch, bucket position, batch within the bucket)`` of ``step``."""
        epoch, s = divmod(int(step), self.steps_per_epoch)
        slot = _perm(self.steps_per_epoch, derive_key(self.seed, epoch, -1))(s)
        b = bisect.bisect_right(self.offsets, slot) - 1
        return epoch, b, slot - self.offsets[b]

    def bucket(self, step: int) -> int:
        """The bucket id every rank draws from at ``step``."""
        return self.bucket_ids[self.locate(step)[1]]

    def epoch(self, step: int) -> int:
        return int(step) // self.steps_per_epoch

    def indices(self, step: int, rank: int = 0, micro: int = 0) -> list[int]:
        """The item indices rank ``rank`` trains on at ``step`` (micro-batch ``micro`` of accumulation)."""
        if not 0 <= rank < self.world_size or not 0 <= micro < self.grad_accum:
            raise ValueError(f"rank {rank} / micro {micro} outside world {self.world_size} x accum {self.grad_accum}")
        epoch, b, j = self.locate(step)
        members = self.members[b]
        n = len(members)
        perm = _perm(n, derive_key(self.seed, epoch, self.bucket_ids[b]))
        base = j * self.global_batch + (micro * self.world_size + rank) * self.batch_size
        return [int(members[perm((base + k) % n)]) for k in range(self.batch_size)]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (torch.distributed when initialised, else torchrun's env)."""
    import os

    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class StepIndices:
    """What a recipe's ``make_batch(step, generator)`` asks for: the item indices this rank trains on at
    ``step``, from an :class:`EpochSampler` over ``buckets`` (or ``n`` items in one bucket) built on first use
    (when torch.distributed is up). With gradient accumulation the trainer calls ``make_batch`` ``grad_accum``
    times per step, in order; each call gets the next micro-batch."""

    def __init__(self, buckets: int | Sequence[int] | np.ndarray, batch_size: int, seed: int = 0,
                 grad_accum: int = 1):
        self.buckets = np.zeros(buckets, np.int64) if isinstance(buckets, int) else np.asarray(buckets)
        self.batch_size, self.seed, self.grad_accum = batch_size, seed, grad_accum
        self.sampler: EpochSampler | None = None
        self.rank = 0
        self._last = (-1, 0)

    def __call__(self, step: int) -> list[int]:
        if self.sampler is None:
            self.rank, world = rank_and_world()
            self.sampler = EpochSampler(self.buckets, batch_size=self.batch_size, world_size=world, seed=self.seed,
                                        grad_accum=self.grad_accum)
        micro = self._last[1] + 1 if self._last[0] == step else 0
        self._last = (step, micro)
        return self.sampler.indices(step, self.rank, micro % self.grad_accum)
