"""The data layer every recipe shares: index, epoch sampler, buckets, step loader, WebDataset shards.

- :mod:`.index` — a data set's item table (duration, size, bucket keys, where the bytes are), built once
  and cached next to the data.
- :mod:`.sampler` — :class:`EpochSampler`: epochs without replacement, partitioned across ranks, all ranks
  on the same bucket at a step, a pure O(1) function of ``(seed, world_size, step)`` (exact resume needs
  only the step).
- :mod:`.buckets` — the (resolution, frames, aspect) grid.
- :mod:`.loader` — :class:`StepLoader`: ``torch.utils.data.DataLoader`` workers, prefetch and pinned memory
  over the sequence of steps.
- :mod:`.shards` — WebDataset tar shards, written resumably and read at random from a folder or object
  storage.
"""

from aiprod_core.data.index import Index, fingerprint_files
from aiprod_core.data.loader import StepLoader
from aiprod_core.data.sampler import EpochSampler, Permutation, StepIndices, rank_and_world

__all__ = ["EpochSampler", "Index", "Permutation", "StepIndices", "StepLoader", "fingerprint_files", "rank_and_world"]
