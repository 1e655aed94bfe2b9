"""Data layer at scale: per-step sampler + index overhead, and loader throughput from shards.

    python benchmarks/data_loader.py [--items 10000 100000 1000000] [--workers 0 2 4] [--json]

Part 1 — per-step overhead of :class:`aiprod_core.data.EpochSampler` plus the index look-up (shard,
offset, size of each sample) at 10k, 100k and 1M indexed items: 12 buckets, batch 8 per rank, 8 ranks;
steps spread over many epochs (every epoch boundary included). "CPU / step" is the thread's CPU time
(what a step costs), the wall-clock columns add whatever preemption the machine inflicts. Building the
sampler (grouping items by bucket, once per run or curriculum stage) is reported apart. Reference: the SHDT source this
replaces re-bucketed the whole index in Python every step (0.05 s at 10k, 0.8 s at 100k, 4.2 s at 1M).

Part 2 — samples/s of :class:`aiprod_core.data.StepLoader` reading WebDataset shards (latents
``[16, 5, 16, 16]`` + a 32-token text embedding per sample, bf16, about 50 KB) with 0, 2 and 4
DataLoader workers, batch 8; steady state after the first batch (worker start-up is reported apart);
alone, and beside a simulated ``--step-ms`` training step (what workers are for: reading overlaps it).
``--mp4`` adds a decode-heavy source (HW-VAE's mp4 clips), where the work per batch outweighs the
worker-to-trainer transfer.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def step_overhead(n: int, steps: int = 2000, batch: int = 8, world: int = 8, buckets: int = 12) -> dict:
    from aiprod_core.data import EpochSampler, Index

    rng = np.random.default_rng(0)
    idx = Index({"bucket": rng.integers(0, buckets, n), "shard": np.arange(n) // 256,
                 "offset": rng.integers(0, 1 << 30, n), "nbytes": rng.integers(1 << 10, 1 << 20, n)})
    t = time.perf_counter()
    sampler = EpochSampler(idx["bucket"], batch_size=batch, world_size=world, seed=0)
    build = time.perf_counter() - t
    shard, offset, nbytes = idx["shard"], idx["offset"], idx["nbytes"]
    spe = sampler.steps_per_epoch
    probe = rng.integers(0, spe * 50, steps).tolist() + [spe * e - 1 for e in range(1, 20)] + [spe * e for e in range(20)]
    times = []
    gc.disable()  # a collection pause is not the sampler's cost
    cpu = time.thread_time()
    for s in probe:
        t = time.perf_counter()
        for i in sampler.indices(s, rank=int(s) % world):
            (int(shard[i]), int(offset[i]), int(nbytes[i]))
        times.append(time.perf_counter() - t)
    cpu = (time.thread_time() - cpu) / len(probe)  # CPU time: what the step costs without preemption
    gc.enable()
    times.sort()
    return {"items": n, "build_s": build, "mean_ms": 1e3 * statistics.fmean(times),
            "median_ms": 1e3 * statistics.median(times), "cpu_ms": 1e3 * cpu,
            "p99_ms": 1e3 * times[int(0.99 * len(times))], "max_ms": 1e3 * times[-1], "steps_per_epoch": spe}


class _Fetch:
    """The batch of a draw: sampler indices → shard reads → stacked tensors (what a recipe's source does)."""

    def __init__(self, location: str, sampler, rank: int = 0):
        from aiprod_core.data.shards import ShardReader

        self.reader, self.sampler, self.rank = ShardReader(location), sampler, rank

    def __call__(self, draw: int) -> dict[str, torch.Tensor]:
        items = [self.reader[i] for i in self.sampler.indices(draw, self.rank)]
        return {k: torch.stack([it[k].float() for it in items]) for k in items[0]}


def write_shards(folder: str, n: int) -> None:
    from aiprod_core.data.shards import ShardWriter, finalize

    g = torch.Generator().manual_seed(0)
    with ShardWriter(folder, max_count=128) as w:
        for i in range(n):
            w.write(f"c{i:06d}", {"latents": torch.randn(16, 5, 16, 16, generator=g).to(torch.bfloat16),
                                  "text": torch.randn(32, 64, generator=g).to(torch.bfloat16)},
                    {"caption": f"clip {i}"}, {"bucket": 0})
    finalize(folder)


def loader_rate(folder: str, workers: int, steps: int, batch: int = 8, step_s: float = 0.0) -> dict:
    from aiprod_core.data import EpochSampler, StepLoader
    from aiprod_core.data.shards import ShardReader

    sampler = EpochSampler(ShardReader(folder).index["bucket"], batch_size=batch, seed=0)
    loader = StepLoader(_Fetch(folder, sampler), end=steps + 1, num_workers=workers, prefetch_factor=4,
                        pin_memory=False)
    t0 = time.perf_counter()
    loader(0)
    first = time.perf_counter() - t0
    t = time.perf_counter()
    for d in range(1, steps + 1):
        loader(d)
        if step_s:
            time.sleep(step_s)  # the training step the workers overlap with (sleep: leaves the CPUs to them)
    rate = steps * batch / (time.perf_counter() - t)
    loader.close()
    return {"workers": workers, "samples_per_s": rate, "first_batch_s": first, "step_ms": step_s * 1e3}


def mp4_rates(folder: str, workers: list[int], steps: int = 12, batch: int = 2) -> list[dict]:
    """Decode-heavy data: HW-VAE's mp4 source (17 frames of 256x256 H.264, seeking decode, resize + crop
    to 128) by steps through the same sampler and StepLoader, with 0 / N workers."""
    import av

    from aiprod_hwvae.data import Mp4FolderSource

    root = os.path.join(folder, "mp4")
    os.makedirs(root, exist_ok=True)
    for k in range(8):
        with av.open(os.path.join(root, f"{k}.mp4"), "w") as box:
            s = box.add_stream("libx264", rate=24)
            s.width = s.height = 256
            s.pix_fmt = "yuv420p"
            base = np.random.default_rng(k).integers(0, 255, (256, 256, 3), dtype=np.uint8)
            for i in range(120):
                f = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
                f.pts = i
                box.mux(s.encode(f))
            box.mux(s.encode(None))
    out = []
    for w in workers:
        src = Mp4FolderSource(root, frames=17, height=128, width=128, num_workers=w, prefetch=2)
        src.batch_at(0, batch)
        t = time.perf_counter()
        for step in range(1, steps + 1):
            src.batch_at(step, batch)
        out.append({"workers": w, "samples_per_s": steps * batch / (time.perf_counter() - t)})
        src._loader.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    p.add_argument("--samples", type=int, default=1024, help="samples written to the benchmark shards")
    p.add_argument("--steps", type=int, default=96, help="loader steps timed per worker count")
    p.add_argument("--step-ms", type=float, default=20.0,
                   help="simulated training step for the overlap rows (0: loader alone only)")
    p.add_argument("--mp4", action="store_true", help="also a decode-heavy source (HW-VAE mp4 clips; needs aiprod-hwvae)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    overhead = [step_overhead(n) for n in a.items]
    with tempfile.TemporaryDirectory() as d:
        write_shards(d, a.samples)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".tar"))
        rates = [loader_rate(d, w, a.steps) for w in a.workers]
        if a.step_ms:
            rates += [loader_rate(d, w, a.steps, step_s=a.step_ms / 1e3) for w in a.workers]
        mp4 = mp4_rates(d, a.workers) if a.mp4 else []
    if a.json:
        print(json.dumps({"step_overhead": overhead, "loader": rates, "mp4_loader": mp4, "shard_bytes": size,
                          "cpus": os.cpu_count()}, indent=2))
        return
    print("per-step sampler + index overhead (batch 8/rank, 8 ranks, 12 buckets)")
    print(f"{'items':>10} | {'build (once)':>12} | {'CPU / step':>10} | {'median / step':>13} | {'mean / step':>11} | "
          f"{'p99 / step':>10} | {'max / step':>10}")
    for r in overhead:
        print(f"{r['items']:>10,} | {r['build_s'] * 1e3:>9.1f} ms | {r['cpu_ms'] * 1e3:>7.1f} us | "
              f"{r['median_ms'] * 1e3:>10.1f} us | {r['mean_ms'] * 1e3:>8.1f} us | "
              f"{r['p99_ms'] * 1e3:>7.1f} us | {r['max_ms'] * 1e3:>7.1f} us")
    print(f"\nloader from WebDataset shards ({a.samples} samples, {size / 2**20:.1f} MiB, batch 8, "
          f"{os.cpu_count()} CPUs)")
    print(f"{'workers':>7} | {'train step':>10} | {'samples/s':>9} | {'first batch':>11}")
    for r in rates:
        step = f"{r['step_ms']:.0f} ms" if r["step_ms"] else "none"
        print(f"{r['workers']:>7} | {step:>10} | {r['samples_per_s']:>9.0f} | {r['first_batch_s']:>9.2f} s")
    if a.step_ms:
        print(f"(with a {a.step_ms:.0f} ms step the ideal is {8 / (a.step_ms / 1e3):.0f} samples/s: "
              "workers hide the reading behind it)")
    if mp4:
        print("\ndecode-heavy source: HW-VAE mp4 clips (17 x 256x256 H.264 -> 128 crops, batch 2)")
        print(f"{'workers':>7} | {'samples/s':>9}")
        for r in mp4:
            print(f"{r['workers']:>7} | {r['samples_per_s']:>9.1f}")


if __name__ == "__main__":
    main()
