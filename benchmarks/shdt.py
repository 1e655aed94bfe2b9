"""SHDT vs diffusers' HunyuanVideoTransformer3DModel: forward + backward time and peak memory.

    python benchmarks/shdt.py                       # CPU-sized default (width 512, 2+4 blocks, 640 tokens)
    python benchmarks/shdt.py --device cuda --dtype bfloat16 --width 3840 --heads 30 --double 2 --single 4 \
        --latent 25 72 128                          # v1 width at the card's 57,600 tokens, fewer blocks

Both models get the same width, heads, dual/single depth, MLP ratio, patch size, latent shape (hence
token count), text length and text width (HunyuanVideo's token refiner is set to 0 layers so the
depth matches; its pooled-CLIP input is fed zeros). Each model runs in its own subprocess so that peak
memory is its own: on a GPU the backend's ``max_memory_allocated``; on CPU the peak RSS growth over the RSS after
building the model and inputs. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args, which: str):
    import torch

    head_dim = args.width // args.heads
    rope = (head_dim - 2 * (head_dim * 7 // 16), head_dim * 7 // 16, head_dim * 7 // 16)  # 16/56/56 at 128
    if which.startswith("shdt"):
        from aiprod_shdt.model import SHDT

        model = SHDT(in_channels=16, patch_size=2, hidden_size=args.width, num_heads=args.heads,
                     depth_double=args.double, depth_single=args.single, mlp_ratio=4.0, text_dim=args.text_dim,
                     rope_axes_dim=rope, guidance_embed=True)
        model.set_activation_checkpointing(which == "shdt+ckpt")
    else:
        from diffusers import HunyuanVideoTransformer3DModel

        model = HunyuanVideoTransformer3DModel(
            in_channels=16, out_channels=16, num_attention_heads=args.heads, attention_head_dim=head_dim,
            num_layers=args.double, num_single_layers=args.single, num_refiner_layers=0, mlp_ratio=4.0,
            patch_size=2, patch_size_t=1, qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=args.text_dim,
            pooled_projection_dim=768, rope_axes_dim=rope)
        if which == "hunyuan+ckpt":
            model.enable_gradient_checkpointing()
    return model.to(device=args.device, dtype=getattr(torch, args.dtype))


def run_one(args, which: str) -> dict:
    import torch

    from aiprod_core.device import device_memory, synchronize

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = build(args, which).train()
    t, h, w = args.latent
    b, length = args.batch, args.text_len
    x = torch.randn(b, 16, t, h, w, device=dev, dtype=dtype)
    text = torch.randn(b, length, args.text_dim, device=dev, dtype=dtype)
    mask = torch.ones(b, length, dtype=torch.bool, device=dev)
    mask[:, length * 3 // 4 :] = False  # a padded prompt, as in real batches
    if b > 1:  # prompts of different lengths: the first item unpadded (padding no longer common to the batch)
        mask[0] = True
    sigma = torch.rand(b, device=dev)
    guidance = torch.full((b,), 4.0, device=dev)
    if which.startswith("shdt"):
        def step():
            return model(x, sigma.to(dtype), text, mask, guidance=guidance.to(dtype))
    else:
        pooled = torch.zeros(b, 768, device=dev, dtype=dtype)

        def step():
            return model(x, sigma * 1000, text, mask.long(), pooled, guidance=guidance * 1000, return_dict=False)[0]

    def fwd_bwd():
        out = step()
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    # activation memory held for backward: bytes of the distinct tensors autograd saves in forward
    saved: dict[int, int] = {}

    def pack(t):
        saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    saved_mib = sum(n for ptr, n in saved.items() if ptr not in params) / 2**20
    del out
    sync = lambda: synchronize(dev)  # noqa: E731
    # peak memory of the first forward + backward, over what the model and inputs hold
    mem = device_memory(dev)  # None on the CPU: RSS instead
    if mem is not None:
        mem.reset_peak_memory_stats()
        base = mem.memory_allocated() / 2**20
    else:
        base = rss_mib()
    fwd_bwd()
    sync()
    peak = (mem.max_memory_allocated() / 2**20 - base) if mem is not None else (peak_rss_mib() - base)
    for _ in range(args.warmup):
        fwd_bwd()
    sync()
    fwd_times, tot_times = [], []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        with torch.no_grad():
            step()
        sync()
        fwd_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fwd_bwd()
        sync()
        tot_times.append(time.perf_counter() - t0)
    return {"model": which, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "tokens": t * (h // 2) * (w // 2), "fwd_s": statistics.median(fwd_times),
            "fwd_bwd_s": statistics.median(tot_times),
            "peak_MiB": peak, "saved_MiB": saved_mib, "weights_MiB": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--double", type=int, default=2)
    p.add_argument("--single", type=int, default=4)
    p.add_argument("--latent", type=int, nargs=3, default=[5, 16, 32], metavar=("T", "H", "W"),
                   help="latent frames, height, width (tokens = T*H*W/4); v1 max: 25 72 128")
    p.add_argument("--text-len", type=int, default=64)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="runs per model (alternating); medians are reported")
    p.add_argument("--json", dest="json_path", default=None, help="also write the rows to this JSON file")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--models", nargs="+", default=["shdt", "hunyuan", "shdt+ckpt", "hunyuan+ckpt"])
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print("RESULT " + json.dumps(run_one(args, args.only)))
        return
    runs: dict[str, list[dict]] = {}
    argv = [a for a in sys.argv[1:]]
    if "--json" in argv:  # the children print their row; only the parent writes the file
        i = argv.index("--json")
        del argv[i : i + 2]
    for _ in range(args.repeats):  # alternate the models so that load changes hit them alike
        for which in args.models:
            cmd = [sys.executable, __file__, *argv, "--only", which]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{which}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            runs.setdefault(which, []).append(json.loads(lines[-1][7:]))
    rows = []
    for m in args.models:
        if m in runs:
            r = dict(runs[m][0])
            for k in ("fwd_s", "fwd_bwd_s", "peak_MiB", "saved_MiB"):
                r[k] = statistics.median(x[k] for x in runs[m])
            rows.append(r)
    by = {r["model"]: r for r in rows}
    for r in rows:  # ours / peer at the same activation-checkpointing setting
        peer = by.get(r["model"].replace("shdt", "hunyuan"))
        if r["model"].startswith("shdt") and peer:
            for k in ("fwd_s", "fwd_bwd_s", "peak_MiB"):
                r[f"ours_over_peer_{k}"] = r[k] / peer[k] if peer[k] else float("nan")
    print(f"width {args.width}, heads {args.heads}, blocks {args.double} dual + {args.single} single, latent "
          f"{tuple(args.latent)}, text {args.text_len}x{args.text_dim}, batch {args.batch}, {args.device} {args.dtype}")
    print(f"{'model':<14}{'params(M)':>11}{'tokens':>8}{'fwd(s)':>9}{'fwd+bwd(s)':>12}{'peak(MiB)':>11}"
          f"{'saved act(MiB)':>16}{'weights(MiB)':>14}")
    for r in rows:
        print(f"{r['model']:<14}{r['params_M']:>11.2f}{r['tokens']:>8}{r['fwd_s']:>9.3f}{r['fwd_bwd_s']:>12.3f}"
              f"{r['peak_MiB']:>11.1f}{r['saved_MiB']:>16.1f}{r['weights_MiB']:>14.1f}")
    print("peak: growth during the first forward+backward (GPU: max_memory_allocated; CPU: peak RSS, coarse);"
          " saved act: tensors autograd keeps for backward; medians of --repeats runs, models alternated")
    for r in rows:
        if "ours_over_peer_fwd_s" in r:
            print(f"{r['model']} / {r['model'].replace('shdt', 'hunyuan')}: forward {r['ours_over_peer_fwd_s']:.3f}x, "
                  f"forward+backward {r['ours_over_peer_fwd_bwd_s']:.3f}x, peak memory {r['ours_over_peer_peak_MiB']:.3f}x")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "only"}, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
