#!/usr/bin/env python3
"""FP8 quantization of a checkpoint of at least 2 GB: size, time and peak RSS per backend.

Shows the streaming bound: peak RSS stays near one output shard + one tensor + the
process's baseline, far below the checkpoint size.

    python benchmarks/quantize.py                       # SHDT at ~1.1B parameters (2.2 GB bf16)
    python benchmarks/quantize.py --workdir /big/disk --shard 512MB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_CONFIG = {"hidden_size": 2048, "num_heads": 16, "rope_axes_dim": [16, 56, 56], "depth_double": 4,
                  "depth_single": 8, "text_dim": 1024}


def build_checkpoint(folder: Path, kind: str, name: str, config: dict, shard: str) -> tuple[int, float]:
    from aiprod_core.registry import get_registry

    spec = get_registry().component(kind, name)
    with torch.device("meta"):
        model = spec.build(None, **config)
    model.to_empty(device="cpu")
    model.to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=g)
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    model.save_pretrained(folder, max_shard_size=shard)
    return params, time.perf_counter() - t0


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def vm_hwm_kb() -> int:
    """Peak RSS of this process image (VmHWM restarts at exec, unlike getrusage's ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(src: str, dst: str, backend: str, shard: str) -> None:
    from aiprod_core.quantize import get_quantizer

    if backend == "quanto":
        import optimum.quanto  # noqa: F401  (count the library itself in the baseline)
    base = vm_hwm_kb()
    t0 = time.perf_counter()
    get_quantizer(backend).quantize_folder(Path(src), Path(dst), max_shard_size=shard, progress=False,
                                           overwrite=True)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "peak_rss_kb": vm_hwm_kb(), "baseline_rss_kb": base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="video-denoiser")
    ap.add_argument("--name", default="shdt")
    ap.add_argument("--config", default=json.dumps(DEFAULT_CONFIG), help="JSON constructor kwargs")
    ap.add_argument("--shard", default="512MB", help="input and output shard size")
    ap.add_argument("--backends", default="torch-fp8,quanto")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse the bf16 checkpoint already in --workdir")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--json", dest="json_path", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    os.environ.setdefault("AIPROD_QUIET", "1")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="aiprod-quant-bench-"))
    src = work / "bf16"
    if args.reuse and src.is_dir():
        params, save_s = json.loads((src / "config.json").read_text())["_aiprod"]["parameters"], 0.0
    else:
        params, save_s = build_checkpoint(src, args.kind, args.name, json.loads(args.config), args.shard)
    src_bytes = dir_bytes(src)
    print(f"checkpoint: {args.name}, {params / 1e9:.2f}B parameters, {src_bytes / 2**30:.2f} GiB bf16 "
          f"in {len(list(src.glob('*.safetensors')))} shards of <= {args.shard} (saved in {save_s:.1f} s)")
    rows = []
    for backend in args.backends.split(","):
        dst = work / f"fp8-{backend}"
        out = subprocess.run([sys.executable, __file__, "--child", str(src), str(dst), backend, args.shard],
                             capture_output=True, text=True)
        if out.returncode != 0:
            rows.append((backend, "failed: " + out.stderr.strip().splitlines()[-1], "", "", "", ""))
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        dst_bytes = dir_bytes(dst)
        rows.append((backend, f"{dst_bytes / 2**30:.2f} GiB", f"{dst_bytes / src_bytes:.3f}", f"{r['seconds']:.1f}",
                     f"{r['peak_rss_kb'] / 2**20:.2f} GiB", f"{r['baseline_rss_kb'] / 2**20:.2f} GiB"))
    header = ("backend", "fp8 size", "ratio", "time s", "peak RSS", "RSS after imports")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print(f"input checkpoint {src_bytes / 2**30:.2f} GiB; workdir {work}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"parameters": params, "input_bytes": src_bytes,
                       "rows": [dict(zip(header, row)) for row in rows]}, f, indent=2)


if __name__ == "__main__":
    main()
