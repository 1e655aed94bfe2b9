"""HW-VAE v1 vs diffusers' AutoencoderKLWan (Wan 2.2 style, patchified) — speed and memory.

    python benchmarks/hwvae.py                       # CPU, both parts
    python benchmarks/hwvae.py --device cuda         # GPU for the comparison (tiled decode stays on CPU)
    python benchmarks/hwvae.py --skip-large          # only the 17×256×256 comparison

Part 1: encode and decode time and peak memory of both models, random weights, float32, on the
same ``1×3×17×256×256`` clip. The Wan model is configured at a comparable parameter count and the
same compression (×8 space, ×4 time, 16 channels) the Wan 2.2 way: 2×2 patchify + residual
down/up blocks (``is_residual=True``, ``patch_size=2``), base_dim 128, decoder_base_dim 256.
Part 2: peak memory of HW-VAE's tiled + chunked decode of ``97×576×1024`` on the CPU.

Every measurement runs in a fresh subprocess: on CPU, peak memory is the increase of the peak
resident set (``ru_maxrss``) over the resident set just before the call (weights and inputs
excluded); on a GPU, the backend's ``max_memory_allocated`` over the allocation before the call.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch

WAN_KW = dict(base_dim=128, decoder_base_dim=256, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=2,
              temperal_downsample=[True, True, False], is_residual=True, in_channels=12, out_channels=12,
              patch_size=2, scale_factor_spatial=8, scale_factor_temporal=4)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _build(name: str, device: str):
    if name == "hwvae":
        from aiprod_hwvae.model import HWVAE
        from aiprod_hwvae.presets import PRESETS

        model = HWVAE(**PRESETS["v1"])
        enc = lambda x, **kw: model.encode(x, **kw)  # noqa: E731
        dec = lambda z, **kw: model.decode(z, **kw)  # noqa: E731
    else:
        from diffusers import AutoencoderKLWan

        model = AutoencoderKLWan(**WAN_KW)
        enc = lambda x, **kw: model.encode(x).latent_dist.mode()  # noqa: E731
        dec = lambda z, **kw: model.decode(z).sample  # noqa: E731
    model = model.to(device).eval()
    return model, enc, dec


def _measure(job: dict, queue) -> None:
    from aiprod_core.device import device_memory, synchronize

    torch.manual_seed(0)
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = job["device"]
    model, enc, dec = _build(job["model"], device)
    params = sum(p.numel() for p in model.parameters())
    t, h, w = job["shape"]
    with torch.no_grad():
        if job["op"] == "encode":
            x = torch.rand(1, 3, t, h, w, device=device) * 2 - 1
            fn = lambda: enc(x, **job.get("kw", {}))  # noqa: E731
        else:
            x = torch.randn(1, 16, 1 + (t - 1) // 4, h // 8, w // 8, device=device)
            fn = lambda: dec(x, **job.get("kw", {}))  # noqa: E731
        mem = device_memory(device)  # None on the CPU: RSS instead
        if mem is not None:
            fn()  # warm-up (kernels, autotuning)
            synchronize(device)
            mem.reset_peak_memory_stats()
            base = mem.memory_allocated()
        else:
            base = _rss_mib()
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        dt = time.perf_counter() - t0
        if mem is not None:
            peak = (mem.max_memory_allocated() - base) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    queue.put({**job, "params_m": params / 1e6, "seconds": dt, "peak_mib": peak, "out": list(out.shape),
               "out_mib": out.numel() * out.element_size() / 2**20})


def run(job: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(job, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--only", choices=["hwvae", "wan"], default=None, help="part 1: one model only")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--large-frames", type=int, default=97)
    ap.add_argument("--tile", type=int, default=40, help="tile, latent px (×8 for pixels)")
    ap.add_argument("--overlap", type=int, default=8, help="tile overlap, latent px")
    ap.add_argument("--chunk", type=int, default=2, help="latent frames per temporal chunk")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--repeats", type=int, default=1, help="part 1: runs per model, alternated; medians reported")
    ap.add_argument("--shape", type=int, nargs=3, default=[17, 256, 256], metavar=("T", "H", "W"),
                    help="part 1 clip (frames 1 + 4k, sides multiples of 8)")
    args = ap.parse_args()
    rows = []
    print(f"torch {torch.__version__}, device {args.device}, float32, random weights, batch 1")
    if not args.skip_small:
        shape = tuple(args.shape)
        print(f"\n{'×'.join(map(str, shape))} clip            params    encode s   enc peak MiB   decode s   dec peak MiB"
              f"   (medians of {args.repeats}, models alternated)")
        # diffusers' Wan streams one latent frame at a time through its causal cache by default;
        # HW-VAE is shown both as one full pass and streaming the same way (chunk=1)
        variants = [("HW-VAE v1, full pass", "hwvae", {}), ("HW-VAE v1, chunk=1", "hwvae", {"chunk": 1}),
                    ("Wan 2.2-style (diffusers)", "wan", {})]
        variants = [v for v in variants if not args.only or v[1] == args.only]
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeats):  # interleaved: load from other processes falls on every model alike
            for label, name, kw in variants:
                for op in ("encode", "decode"):
                    runs.setdefault((label, op), []).append(run({"model": name, "op": op, "shape": shape,
                                                                 "device": args.device, "threads": args.threads,
                                                                 "kw": kw, "label": label}))
        med = {}
        for (label, op), rs in runs.items():
            r = dict(rs[0])
            r["seconds"] = statistics.median(x["seconds"] for x in rs)
            r["peak_mib"] = statistics.median(x["peak_mib"] for x in rs)
            med[label, op] = r
            rows.append(r)
        for label, _, _ in variants:
            e, d = med[label, "encode"], med[label, "decode"]
            print(f"{label:<26}{e['params_m']:7.1f}M {e['seconds']:10.2f} {e['peak_mib']:13.0f} {d['seconds']:10.2f} "
                  f"{d['peak_mib']:13.0f}", flush=True)
        peer = "Wan 2.2-style (diffusers)"
        for label, _, _ in variants:
            if label != peer and (peer, "encode") in med:
                ratio = {f"{op}_{k}": med[label, op][k] / med[peer, op][k] if med[peer, op][k] else float("nan")
                         for op in ("encode", "decode") for k in ("seconds", "peak_mib")}
                rows.append({"ours_over_peer": label, **ratio})
                print(f"{label} / {peer}: encode {ratio['encode_seconds']:.2f}x time, {ratio['encode_peak_mib']:.2f}x "
                      f"memory; decode {ratio['decode_seconds']:.2f}x time, {ratio['decode_peak_mib']:.2f}x memory")
    if not args.skip_large:
        t = args.large_frames
        kw = {"tile": args.tile, "overlap": args.overlap, "chunk": args.chunk}
        r = run({"model": "hwvae", "op": "decode", "shape": (t, 576, 1024), "device": "cpu", "kw": kw,
                 "threads": args.threads})
        rows.append(r)
        print(f"\nHW-VAE v1 tiled decode {t}×576×1024 on CPU (tile {args.tile * 8}px, overlap {args.overlap * 8}px, "
              f"chunk {args.chunk} latent frames): {r['seconds']:.1f} s, peak +{r['peak_mib']:.0f} MiB "
              f"(of which output video {r['out_mib']:.0f} MiB)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
