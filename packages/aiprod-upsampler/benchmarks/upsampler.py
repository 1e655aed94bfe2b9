"""Benchmark of the latent upsampler: parameters, forward time and memory; optional held-out quality.

    python packages/aiprod-upsampler/benchmarks/upsampler.py --preset v1 --device auto --dtype bfloat16 \
        --latent 25x36x64            # T x H x W of the LOW-res latent (1024x576, 97 frames after x2)
    python packages/aiprod-upsampler/benchmarks/upsampler.py --weights runs/tiny-upsampler/final/model

Prints one table. Speed targets live here, never in the timed test suite.
"""

from __future__ import annotations

import argparse
import time

import torch

from aiprod_core.device import pick_device, pick_dtype
from aiprod_upsampler.data import synthetic_pairs
from aiprod_upsampler.model import LatentUpsampler
from aiprod_upsampler.presets import PRESETS
from aiprod_upsampler.train import evaluate_upsampler


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=list(PRESETS))
    ap.add_argument("--weights", default=None, help="a latent-x2 component folder (overrides --preset)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--latent", default="3x16x16", help="T x H x W of the low-resolution latent")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    print(f"{'preset':<10} {'parameters':>14}")
    for name, kw in PRESETS.items():
        with torch.device("meta"):
            print(f"{name:<10} {LatentUpsampler(**kw).num_parameters():>14,}")

    if args.weights:
        model = LatentUpsampler.from_pretrained(args.weights, device=device, dtype=dtype)
    else:
        model = LatentUpsampler(**PRESETS[args.preset]).to(device, dtype).eval()
    t, h, w = (int(v) for v in args.latent.lower().split("x"))
    x = torch.randn(args.batch, model.latent_channels, t, h, w, device=device, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        model(x)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            model(x)
        sync(device)
    dt = (time.perf_counter() - t0) / args.repeats
    print(f"\n{'device':<8} {'dtype':<9} {'low latent':<14} {'high latent':<14} {'ms/forward':>11} {'peak GiB':>9}")
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    print(
        f"{device.type:<8} {str(dtype).removeprefix('torch.'):<9} {f'{t}x{h}x{w}':<14} "
        f"{f'{t}x{2 * h}x{2 * w}':<14} {dt * 1e3:>11.1f} {peak:>9.2f}"
    )

    if args.weights:
        pairs = synthetic_pairs(torch.Generator().manual_seed(1_000_003), 16, model.latent_channels, 3, 16, 16)
        m = evaluate_upsampler(model, pairs, device=device)
        print(f"\n{'method':<10} {'L1':>8} {'MSE':>8}   (held-out synthetic latents)")
        for label, sfx in (("nearest", "_nearest"), ("bilinear", "_bilinear"), ("upsampler", "")):
            print(f"{label:<10} {m['l1' + sfx]:8.4f} {m['mse' + sfx]:8.4f}")


if __name__ == "__main__":
    main()
