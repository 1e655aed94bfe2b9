"""GPU check of the model card's scale, one command, under 8 minutes on one 80-141 GB GPU.

    python benchmarks/gpu_check.py                  # one CUDA GPU: v1 SHDT, 57,600 tokens, HW-VAE v1
    python benchmarks/gpu_check.py --tiny           # CPU smoke test with the tiny presets (seconds; run by a test)
    python benchmarks/gpu_check.py --only forward_bf16 --only vae_decode --out check.json

Checks, each timed and with its peak memory (the backend's ``max_memory_allocated`` on a GPU; the process
peak RSS on the CPU) and its MFU (model FLOPs / seconds / the GPU's peak dense bf16 FLOP/s):

1. ``build``: SHDT v1 (19.1B) built on the meta device and materialised on the GPU in bf16 — no fp32
   copy, no host copy (:func:`aiprod_shdt.init.materialize`).
2. ``forward_bf16``: one forward at 1024x576x97 (57,600 video tokens + 256 text tokens) with the CFG
   batch of 2 (a padded prompt and the empty prompt), after a small warm-up forward.
3. ``forward_fp8``: the same with the block linears in FP8 E4M3 (the ``torch-fp8`` backend's
   ``FP8Linear``, converted in place), and its relative L2 distance to the bf16 output.
4. ``train_step``: one FSDP2 training step (bf16 compute, fp32 master weights and reduce, AdamW) of a
   2-block v1 slice (1 dual-stream + 1 single-stream) at full sequence length with per-block activation
   checkpointing; MFU counts the model FLOPs (3 forwards), not the recomputation.
5. ``vae_decode``: HW-VAE v1 (random weights, bf16) tiled decode of 25x72x128 latents into 97x576x1024.

Prints one JSON object ``{"device": ..., "checks": {name: {...}}}``; a failed check has ``"error"`` and the
others still run. Exit code 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from aiprod_core.device import backend, pick_device

GIB = 1024**3
#: peak dense bf16 TFLOP/s by device name (NVIDIA data sheets, SXM parts)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0, "GH200": 989.0}


class Sizes:
    def __init__(self, tiny: bool):
        self.preset = "tiny" if tiny else "v1"
        self.latent = (2, 8, 8) if tiny else (25, 72, 128)  # 1024x576x97 through x8 / x4
        self.warm_latent = (1, 4, 4) if tiny else (1, 16, 16)
        self.text_tokens = 8 if tiny else 256
        self.vae_preset = "tiny" if tiny else "v1"
        self.vae_tile, self.vae_overlap, self.vae_chunk = (8, 4, 1) if tiny else (64, 16, 2)


def _sync(device: torch.device) -> None:
    from aiprod_core.device import synchronize

    synchronize(device)


class Meter:
    """Seconds and peak memory of a block of work."""

    def __init__(self, device: torch.device):
        from aiprod_core.device import device_memory

        self.device, self.mem = device, device_memory(device)

    def __enter__(self) -> Meter:
        _sync(self.device)
        if self.mem is not None:
            self.mem.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self.t0
        if self.mem is not None:
            self.peak_gib = self.mem.max_memory_allocated() / GIB
        else:
            self.peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # process peak RSS


def _result(m: Meter, flops: float | None, peak_tflops: float | None, **extra) -> dict:
    out = {"seconds": round(m.seconds, 4), "peak_memory_gib": round(m.peak_gib, 3)}
    if flops is not None:
        out["tflop"] = float(f"{flops / 1e12:.4g}")
        out["mfu"] = round(flops / m.seconds / (peak_tflops * 1e12), 4) if peak_tflops else None
    return {**out, **extra}


def _inputs(model, latent: tuple[int, int, int], text_tokens: int, batch: int, device, dtype):
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(batch, model.in_channels, *latent, generator=g)
    text = torch.randn(batch, text_tokens, model.text_dim, generator=g)
    mask = torch.zeros(batch, text_tokens, dtype=torch.bool)
    mask[0, : max(1, text_tokens * 3 // 4)] = True  # row 0: a padded prompt; row 1: the empty prompt (CFG)
    sigma = torch.full((batch,), 0.7)
    return [t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in (lat, sigma, text, mask)]


def check_build(state: dict, sizes: Sizes, device, peak) -> dict:
    from aiprod_shdt.init import materialize
    from aiprod_shdt.model import SHDT
    from aiprod_shdt.presets import PRESETS

    with torch.device("meta"):
        model = SHDT(**PRESETS[sizes.preset])
    with Meter(device) as m:
        materialize(model, device, seed=0, dtype=torch.bfloat16)
    model.eval()
    with torch.no_grad():  # AdaLN-zero starts as the identity (output 0): open the gates so outputs mean something
        g = torch.Generator(device=device).manual_seed(1)
        for name, p in model.named_parameters():
            if ".mod." in name or name.startswith("final."):
                p.normal_(0.0, 0.02, generator=g)
    state["model"] = model
    return _result(m, None, peak, parameters=model.num_parameters(),
                   weights_gib=round(sum(p.nbytes for p in model.parameters()) / GIB, 3))


def _forward(state: dict, sizes: Sizes, device, peak, key: str) -> tuple[dict, torch.Tensor]:
    from aiprod_shdt.plan import forward_flops, model_shapes
    from aiprod_shdt.presets import PRESETS

    model = state["model"]
    with torch.no_grad():
        model(*_inputs(model, sizes.warm_latent, sizes.text_tokens, 2, device, torch.bfloat16))  # kernels, allocator
        inputs = _inputs(model, sizes.latent, sizes.text_tokens, 2, device, torch.bfloat16)
        with Meter(device) as m:
            out = model(*inputs)
    video = model.num_tokens(inputs[0].shape)
    flops = 2 * forward_flops(model_shapes(PRESETS[sizes.preset]), video, sizes.text_tokens)
    state[key] = out.float().cpu()
    return _result(m, flops, peak, video_tokens=video, text_tokens=sizes.text_tokens, batch=2), out


def check_forward_bf16(state, sizes, device, peak) -> dict:
    return _forward(state, sizes, device, peak, "out_bf16")[0]


def to_fp8_(model: torch.nn.Module) -> int:
    """Swap the quantizable Linears (the ``aiprod quantize`` defaults and SHDT's own exclusions) for
    FP8 E4M3 per-channel ``FP8Linear`` in place, layer by layer; returns how many."""
    from aiprod_core.quantize import DEFAULT_EXCLUDE, FP8Linear, fp8_per_channel, linear_targets

    targets = linear_targets(model, DEFAULT_EXCLUDE + list(model.quantization_exclude))
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        with torch.device("meta"):
            new = FP8Linear(old.in_features, old.out_features, old.bias is not None)
        q, scale = fp8_per_channel(old.weight.detach())
        new.weight, new.weight_scale = q, scale
        if old.bias is not None:
            new.bias = torch.nn.Parameter(old.bias.detach(), requires_grad=False)
        setattr(parent, child, new)
        del old
    return len(targets)


def check_forward_fp8(state, sizes, device, peak) -> dict:
    model = state["model"]
    with Meter(device) as conv:
        n = to_fp8_(model)
    weights = sum(t.nbytes for t in [*model.parameters(), *model.buffers()]) / GIB
    result, out = _forward(state, sizes, device, peak, "out_fp8")
    ref = state.get("out_bf16")
    if ref is not None:
        result["rel_l2_vs_bf16"] = round(float((out.float().cpu() - ref).norm() / ref.norm().clamp(min=1e-12)), 5)
    return {**result, "fp8_linears": n, "weights_gib": round(weights, 3), "convert_seconds": round(conv.seconds, 3)}


def _process_group(device: torch.device) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        store = tempfile.NamedTemporaryFile(prefix="gpu_check_pg_", delete=False).name
        pg_backend = dist.Backend.default_device_backend_map.get(device.type, "gloo")  # nccl, xccl, gloo...
        dist.init_process_group(pg_backend, init_method=f"file://{store}",
                                rank=0, world_size=1)


def check_train_step(state, sizes, device, peak) -> dict:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from aiprod_shdt.diffusion import flow_loss
    from aiprod_shdt.init import materialize
    from aiprod_shdt.model import SHDT
    from aiprod_shdt.parallelize import shard_model
    from aiprod_shdt.plan import forward_flops, model_shapes
    from aiprod_shdt.presets import PRESETS

    state.pop("model", None)  # free the inference model first
    mod = backend(device)
    if mod is not None and hasattr(mod, "empty_cache"):
        mod.empty_cache()
    _process_group(device)
    config = {**PRESETS[sizes.preset], "depth_double": 1, "depth_single": 1}
    with torch.device("meta"):
        model = SHDT(**config)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    shard_model(model, fully_shard, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    materialize(model, device, seed=0)  # fp32 master shards
    model.set_activation_checkpointing(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(latent):
        lat, sigma, text, mask = _inputs(model, latent, sizes.text_tokens, 1, device, torch.float32)
        noise = torch.randn_like(lat)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = flow_loss(model, lat, text, mask, noise, sigma)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().item()

    step(sizes.warm_latent)
    with Meter(device) as m:
        loss = step(sizes.latent)
    video = model.num_tokens((1, 16, *sizes.latent))
    flops = 3 * forward_flops(model_shapes(config), video, sizes.text_tokens)
    return _result(m, flops, peak, parameters=sum(p.numel() for p in model.parameters()), video_tokens=video,
                   loss=round(loss, 5))


def check_vae_decode(state, sizes, device, peak) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from aiprod_hwvae.model import HWVAE
    from aiprod_hwvae.presets import PRESETS as VAE_PRESETS

    torch.manual_seed(0)
    vae = HWVAE(**VAE_PRESETS[sizes.vae_preset]).to(device, torch.bfloat16).eval()
    kw = dict(tile=sizes.vae_tile, overlap=sizes.vae_overlap, chunk=sizes.vae_chunk)
    z = torch.randn(1, vae.latent_channels, *sizes.latent, generator=torch.Generator().manual_seed(0))
    z = z.to(device, torch.bfloat16)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:  # also the warm-up
            vae.decode(z[:, :, :2], **kw)
        per_two = counter.get_total_flops()
        with Meter(device) as m:
            video = vae.decode(z, **kw)
    flops = per_two * sizes.latent[0] / 2  # cost grows with the latent frames decoded
    return _result(m, flops, peak, output_shape=list(video.shape), parameters=sum(p.numel() for p in vae.parameters()))


CHECKS = {"build": check_build, "forward_bf16": check_forward_bf16, "forward_fp8": check_forward_fp8,
          "train_step": check_train_step, "vae_decode": check_vae_decode}
NEEDS_MODEL = {"forward_bf16", "forward_fp8"}


def run(tiny: bool, device: str | None, only: list[str], peak_tflops: float | None) -> dict:
    dev = pick_device(device or ("cpu" if tiny else "auto"))
    mod = backend(dev)
    if dev.type == "cpu" and not tiny:
        raise SystemExit("gpu_check: no accelerator found (use --tiny for the CPU smoke test, or --device)")
    name = mod.get_device_name(dev) if mod is not None and hasattr(mod, "get_device_name") else dev.type
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls where fp32 remains (CUDA only)
    if peak_tflops is None and mod is not None:
        peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    sizes = Sizes(tiny)
    names = only or list(CHECKS)
    if any(n in NEEDS_MODEL for n in names) and "build" not in names:
        names = ["build", *names]
    state: dict = {}
    report = {"device": name, "preset": sizes.preset, "peak_tflops": peak_tflops, "torch": torch.__version__,
              "checks": {}}
    for n in names:
        t0 = time.perf_counter()
        print(f"gpu_check: {n} ...", file=sys.stderr, flush=True)
        try:
            report["checks"][n] = CHECKS[n](state, sizes, dev, peak_tflops)
        except Exception as err:  # report and go on: one failure must not hide the other measurements
            report["checks"][n] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=4)}
        print(f"gpu_check: {n} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny presets on the CPU (smoke test)")
    ap.add_argument("--device", default=None, help="default: the first accelerator (aiprod's auto), or cpu with --tiny")
    ap.add_argument("--only", action="append", choices=list(CHECKS), default=[], help="run only these checks")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: by GPU name)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.tiny:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    report = run(args.tiny, args.device, args.only, args.peak_tflops)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass
    return 1 if any("error" in c for c in report["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
