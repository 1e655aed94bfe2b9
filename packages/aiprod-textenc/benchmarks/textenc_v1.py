"""Benchmark of the v1 text encoder at full size: build, encode latency, one training step.

    python packages/aiprod-textenc/benchmarks/textenc_v1.py                     # random 1B base, auto device
    python packages/aiprod-textenc/benchmarks/textenc_v1.py --base /models/gemma-3-1b-pt --dtype bfloat16

Prints a table (parameters, seconds, memory). A random base has Gemma-3-1B's exact shapes, so
timings and memory are those of the real model; its outputs are meaningless.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from aiprod_core.device import pick_device, pick_dtype
from aiprod_textenc.data import synthetic_pairs
from aiprod_textenc.model import Gemma3LoraTextEncoder
from aiprod_textenc.presets import PRESETS
from aiprod_textenc.train import LossSection, alignment_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat: int):
    fn()  # warm-up
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync(device)
    return (time.perf_counter() - t) / repeat, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=None, help="local Gemma-3-1B folder (default: random base of the same shape)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    rows: list[tuple[str, str]] = []

    t = time.perf_counter()
    torch.manual_seed(0)
    kw = {"base_path": args.base} if args.base else {"random_base": True}
    model = Gemma3LoraTextEncoder(**{**PRESETS["v1"], **kw})
    rows.append(("build (load/init base + LoRA + projection)", f"{time.perf_counter() - t:.1f} s"))
    counts = model.trainable_parameters()
    rows += [(f"parameters: {k}", f"{v:,}") for k, v in counts.items()]
    model.to(device=device, dtype=dtype)

    pairs = synthetic_pairs(args.batch, seed=0)
    prompts, captions = [p for p, _ in pairs], [c for _, c in pairs]
    p_ids, p_mask = (x.to(device) for x in model.tokenize(prompts))
    c_ids, c_mask = (x.to(device) for x in model.tokenize(captions))
    rows.append(("tokens per prompt / caption (max)", f"{p_ids.shape[1]} / {c_ids.shape[1]}"))

    model.eval()
    with torch.no_grad():
        sec, _ = timed(lambda: model(c_ids, c_mask), device, args.repeat)
    rows.append((f"encode {args.batch} captions ({dtype})", f"{sec * 1000:.0f} ms"))

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        with torch.no_grad(), model.adapter_disabled():
            target = model(c_ids, c_mask)[0]
        student = model(p_ids, p_mask)[0]
        loss, _ = alignment_loss(student, p_mask, target, c_mask, LossSection())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec, loss = timed(step, device, args.repeat)
    rows.append((f"train step, batch {args.batch} (teacher + student + backward + AdamW)", f"{sec:.2f} s"))
    if device.type == "cuda":
        rows.append(("peak GPU memory", f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"))
    rows.append(("peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"))
    rows.append(("device / threads", f"{device} / {torch.get_num_threads()}"))

    width = max(len(k) for k, _ in rows)
    print(f"{'AIPROD-Text-Encoder v1':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
