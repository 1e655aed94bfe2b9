"""What every benchmark in this folder shares (issue 21): interleaved rounds, medians, peak memory,
the ratio to the peer, and ``--json``.

A benchmark builds a list of :class:`Case` (ours and its peers at comparable sizes), then
:func:`run_cases` times them in turn, round after round (A B C A B C ...), so load from other
processes falls on all of them alike; each figure is the median over the rounds. Times are wall
seconds and, on CPU, the process CPU seconds of the call (less sensitive to a loaded machine).
Peak memory is the peak allocated by the call on CUDA, or on CPU the rise of the process's resident
set above its level before the call (sampled every 2 ms by a thread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Case:
    name: str
    fn: Callable[[], Any]  # one timed call (input prepared outside)
    params: int = 0
    group: str = ""  # cases of one group are compared; the first "ours" of a group is the numerator
    ours: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def add_common_args(ap: argparse.ArgumentParser, repeats: int = 3) -> None:
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--repeats", type=int, default=repeats, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file ('-': stdout)")


def setup(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    from aiprod_core.device import pick_device

    return pick_device(args.device)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: no sampling
        return 0


def _trim() -> None:
    """Give freed heap back to the OS (glibc), so the resident set before a call is a fair baseline."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakRSS:
    def __enter__(self):
        import gc

        gc.collect()
        _trim()
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def rise(self) -> int:
        return self.peak - self.base


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, int]:
    """(wall s, process CPU s, peak bytes) of one call."""
    from aiprod_core.device import device_memory, synchronize

    mem_mod = device_memory(device)  # the accelerator's allocator when it tracks its peak, else process RSS
    if mem_mod is not None:
        mem_mod.reset_peak_memory_stats(device)
        base = mem_mod.memory_allocated(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        return wall, cpu, mem_mod.max_memory_allocated(device) - base
    with _PeakRSS() as mem:
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    return wall, cpu, mem.rise


def run_cases(cases: list[Case], device: torch.device, repeats: int, warmup: int = 1) -> list[dict[str, Any]]:
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:  # samples are kept per name: two cases of one name would be pooled into one row
        raise ValueError(f"run_cases: case names must be distinct, repeated: {', '.join(dupes)}")
    for _ in range(warmup):
        for c in cases:
            c.fn()
    samples: dict[str, list[tuple[float, float, int]]] = {c.name: [] for c in cases}
    for _ in range(repeats):  # interleaved rounds
        for c in cases:
            samples[c.name].append(measure(c.fn, device))
    rows = []
    for c in cases:
        s = samples[c.name]
        rows.append({
            "name": c.name, "group": c.group, "ours": c.ours, "params_M": round(c.params / 1e6, 3),
            "wall_s": statistics.median(x[0] for x in s), "cpu_s": statistics.median(x[1] for x in s),
            "peak_MiB": statistics.median(x[2] for x in s) / 2**20, "wall_all": [round(x[0], 4) for x in s],
            **c.extra,
        })
    # ratio of each case to the group's first "ours" case (ours / peer: below 1 means we are faster)
    for g in {r["group"] for r in rows}:
        members = [r for r in rows if r["group"] == g]
        ref = next((r for r in members if r["ours"]), None)
        for r in members:
            if ref is not None and r is not ref:
                r["ours_over_this"] = ref["wall_s"] / r["wall_s"] if r["wall_s"] else float("nan")
                r["ours_over_this_cpu"] = ref["cpu_s"] / r["cpu_s"] if r["cpu_s"] else float("nan")
                r["ours_over_this_mem"] = ref["peak_MiB"] / r["peak_MiB"] if r["peak_MiB"] > 0 else float("nan")
    return rows


def header(device: torch.device, repeats: int, what: str) -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"what": what, "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "repeats": repeats, "load_1min": round(load, 2), "cpus": os.cpu_count(),
            "python": sys.version.split()[0]}


def report(head: dict[str, Any], rows: list[dict[str, Any]], json_path: str | None,
           extra_cols: tuple[str, ...] = ()) -> None:
    print("# " + ", ".join(f"{k}={v}" for k, v in head.items()) + "; medians, interleaved rounds")
    cols = ("params_M", "wall_s", "cpu_s", "peak_MiB", *extra_cols, "ours_over_this", "ours_over_this_cpu",
            "ours_over_this_mem")
    print(f"{'case':<44}" + "".join(f"{c.replace('ours_over_this', 'ours/this'):>14}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'' if v is None else (f'{v:.3f}' if isinstance(v, float) else v):>14}")
        print(f"{('* ' if r['ours'] else '  ') + r['name']:<44}" + "".join(cells))
    print("(* ours; ours/this = our wall (cpu) time / this row's, the group's first * row against each other:"
          " below 1.0 we are faster; _mem: peak memory)")
    if json_path:
        payload = json.dumps({"header": head, "rows": rows}, indent=2)
        if json_path == "-":
            print(payload)
        else:
            with open(json_path, "w") as f:
                f.write(payload + "\n")
