"""Batches made ahead of the training loop by ``torch.utils.data.DataLoader`` workers, indexed by draw.

The trainer asks a recipe for "the batch of step ``s``" (``TrainTask.make_batch``), a pure function of the
step so that a resumed run is exact. :class:`StepLoader` keeps that contract while moving the work off
the training thread: the data set of the DataLoader is the sequence of *draws* (``step x grad_accum +
micro``) from a start draw on, each item the whole batch of one draw (``batch_size=None``), computed by
a picklable ``fetch(draw)`` in a worker. Workers run ahead by ``prefetch_factor`` batches each; batches
come back in order. Asking for a draw other than the next one (a resume, an evaluation, a stage
switch) restarts the workers at that draw, so the answer is always ``fetch(draw)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class _Draws(Dataset):
    def __init__(self, fetch: Callable[[int], Any], start: int, end: int):
        self.fetch, self.start, self.end = fetch, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def __getitem__(self, i: int) -> Any:
        return self.fetch(self.start + i)


class StepLoader:
    """``loader(draw)`` == ``fetch(draw)``, prepared by ``num_workers`` worker processes ahead of time.

    ``end`` is one past the last draw (the run's ``max_steps x grad_accum``); ``pin_memory`` defaults to
    whether CUDA is available (page-locked host memory makes the host-to-device copy asynchronous).
    """

    def __init__(self, fetch: Callable[[int], Any], *, end: int, num_workers: int = 0, prefetch_factor: int = 2,
                 pin_memory: bool | None = None, timeout: float = 0):
        self.fetch, self.end = fetch, end
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.timeout = timeout
        self._it = None
        self._next = -1

    def _start(self, draw: int) -> None:
        self.close()
        loader = DataLoader(_Draws(self.fetch, draw, max(self.end, draw + 1)), batch_size=None, shuffle=False,
                            num_workers=self.num_workers, pin_memory=self.pin_memory, timeout=self.timeout,
                            prefetch_factor=self.prefetch_factor if self.num_workers else None,
                            persistent_workers=False)
        self._it = iter(loader)
        self._next = draw

    def __call__(self, draw: int) -> Any:
        if self.num_workers == 0 and not self.pin_memory:
            return self.fetch(draw)
        if self._it is None or draw != self._next:
            self._start(draw)
        try:
            batch = next(self._it)
        except StopIteration:  # past ``end`` (e.g. an extra evaluation draw): compute in-process
            self._it = None
            return self.fetch(draw)
        self._next = draw + 1
        return batch

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
