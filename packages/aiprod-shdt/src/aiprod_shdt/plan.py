"""``aiprod plan RECIPE.yaml --gpus N``: per-GPU memory and compute of an SHDT recipe, before renting GPUs.

Everything comes from the recipe and the model's own shapes (built on the meta device: no weight is
read). For every curriculum stage, at its largest bucket:

- **parameters, gradients, optimizer, EMA**: fp32 master weights, fp32 gradients, AdamW's two fp32
  moments and the fp32 EMA of the trainable parameters, sharded over every rank with FSDP2 (dp x cp),
  whole on every rank with DDP. LoRA: the frozen base in its stored dtype (bf16 from a bf16 folder).
- **FSDP buffers**: per-block shard groups (:mod:`aiprod_shdt.parallelize`): two blocks' unsharded
  parameters in the compute dtype (the current one and the prefetched next) in forward; in backward also
  two blocks' unsharded gradients, in the compute dtype and in fp32 for the reduce-scatter.
- **activations**, with and without per-block checkpointing: bytes saved for backward per token and per
  channel of each block type, counted tensor by tensor from the block code (below), times the tokens a
  rank holds (``video / K + text`` with context parallelism K), plus the working set of one block's
  backward. Checked against a measured CPU run by ``tests/test_plan.py``.
- **FLOPs per step and GPU**: ``2 x`` per-token parameters per token for the linears (a dual-stream
  stream uses its own weights on its own tokens) plus ``4 S^2 width`` per block for attention; a
  training step is 3 forwards (4 with activation checkpointing, the recomputation). Step time =
  FLOPs / (peak x MFU); the MFU is an assumption you pass, measure it with ``benchmarks/gpu_check.py``.

Saved tensors per token, in units of ``width`` (``r`` = mlp_ratio, ``a`` = bytes of the activation dtype):

- single-stream block: input, LayerNorm output, modulated input (3), linear1 output ``3 + r`` (kept as the
  views v and mlp-in), q and k after RoPE (2), attention output (1), linear2 input ``1 + r``, linear2
  output (1): ``a (11 + 2r)``;
- dual-stream block, per token of either stream: input, LayerNorm, modulated (3), q, k after RoPE, the
  concatenated v, attention output and its head-merged copy (5), proj output (1), second LayerNorm's
  input, output, modulated (3), MLP hidden before and after GELU (2r), MLP output (1): ``a (13 + 2r)``,
  ``+ 3`` (the fused qkv output, which QK-norm keeps as its input) when activations are fp32;
- QK-norm (RMSNorm on q and k): two fp32 tensors of ``width`` each in fp32, four in bf16 autocast (the
  float32 copy of the input and the normalised output, for q and for k);
- CUDA autocast also runs LayerNorm in fp32 (an fp32 copy of its input and an fp32 output: ``+4`` bytes
  per LayerNorm against bf16); CPU autocast does not, which is what the test measures.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
VAE_SPATIAL = 8  # HW-VAE: x8 spatial, x4 temporal (aiprod_shdt.data)
DEFAULT_TEXT_TOKENS = 256  # the text encoder's maximum prompt (model card)


# -- shapes --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shapes:
    """What the plan needs from an SHDT config, counted on a meta-device model."""

    width: int
    heads: int
    mlp_ratio: float
    depth_double: int
    depth_single: int
    patch: int
    patch_dim: int
    text_dim: int
    params: int
    dual_block: int  # parameters of one dual-stream block
    single_block: int
    dual_stream_token: int  # per-token parameters of one stream of a dual block (no modulation)
    single_token: int  # per-token parameters of a single-stream block (no modulation)


def model_shapes(config: dict[str, Any]) -> Shapes:
    import torch

    from aiprod_shdt.model import SHDT, Modulation

    with torch.device("meta"):
        m = SHDT(**config)

    def count(module, skip_mod: bool = False) -> int:
        n = sum(p.numel() for p in module.parameters())
        if skip_mod:
            n -= sum(p.numel() for s in module.modules() if isinstance(s, Modulation) for p in s.parameters())
        return n

    d = m.final.linear.in_features
    return Shapes(
        width=d, heads=m.double_blocks[0].heads if m.double_blocks else m.single_blocks[0].heads,
        mlp_ratio=config.get("mlp_ratio", 4.0), depth_double=len(m.double_blocks), depth_single=len(m.single_blocks),
        patch=m.patch_size, patch_dim=m.video_in.in_features, text_dim=m.text_dim, params=count(m),
        dual_block=count(m.double_blocks[0]) if m.double_blocks else 0,
        single_block=count(m.single_blocks[0]) if m.single_blocks else 0,
        dual_stream_token=count(m.double_blocks[0].video, skip_mod=True) if m.double_blocks else 0,
        single_token=count(m.single_blocks[0], skip_mod=True) if m.single_blocks else 0,
    )


# -- activations -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """Activation dtype: ``bf16`` autocast (``mixed_precision: bf16``) or plain fp32."""

    bf16: bool
    cuda: bool = True  # CUDA autocast runs LayerNorm in fp32; CPU autocast does not

    @property
    def act(self) -> int:
        return 2 if self.bf16 else 4


def block_bytes_per_token(kind: str, s: Shapes, prec: Precision) -> float:
    """Bytes saved for backward per token by one block, divided by ``width`` (see the module docstring)."""
    a, r = prec.act, s.mlp_ratio
    qk_norm = (4 if prec.bf16 else 2) * 4
    ln_fp32 = 4 if (prec.bf16 and prec.cuda) else 0
    if kind == "single":
        return a * (11 + 2 * r) + qk_norm + ln_fp32
    return a * (13 + 2 * r + (0 if prec.bf16 else 3)) + qk_norm + 2 * ln_fp32


def backward_working_set(s: Shapes, prec: Precision) -> float:
    """Bytes per token / width alive on top of the saved tensors when a block's backward peaks: the
    incoming gradient of the residual stream and the first gradient it produces (the saved tensors are
    freed as fast as new gradients appear; measured on CPU, ``tests/test_plan.py``)."""
    return prec.act * 2


def activation_memory(s: Shapes, prec: Precision, video_tokens: int, text_tokens: int, batch: int,
                      checkpointing: bool) -> float:
    """Peak bytes of activations (saved for backward + one block's backward working set) on one rank
    holding ``video_tokens`` video tokens (already divided by the context-parallel degree)."""
    d, a = s.width, prec.act
    tokens = video_tokens + text_tokens
    full = {k: block_bytes_per_token(k, s, prec) * tokens * d for k in ("dual", "single")}
    blocks = ["dual"] * s.depth_double + ["single"] * s.depth_single
    # outside the blocks: patch tokens (fp32), video_in output, final LayerNorm / modulation / linear inputs
    outside = video_tokens * (4 * s.patch_dim + 4 * a * d)
    if checkpointing:  # one saved input per block; in backward block i is recomputed with 0..i still saved
        peak, saved = 0.0, 0.0
        for kind in blocks:
            saved += a * tokens * d
            peak = max(peak, saved + full[kind])
    else:
        peak = sum(full[k] for k in blocks)
    return batch * (peak + outside + backward_working_set(s, prec) * tokens * d)


# -- FLOPs -------------------------------------------------------------------------------------------------
def forward_flops(s: Shapes, video_tokens: int, text_tokens: int) -> float:
    """FLOPs of one sample's forward (multiply-add = 2)."""
    n, length, d = video_tokens, text_tokens, s.width
    seq = n + length
    linear = s.depth_double * 2 * s.dual_stream_token * seq + s.depth_single * 2 * s.single_token * seq
    embed = 2 * (s.patch_dim * d * n + (s.text_dim * d + d * d) * length + d * s.patch_dim * n)
    attention = 4 * seq * seq * d * (s.depth_double + s.depth_single)
    return float(linear + embed + attention)


# -- the plan ---------------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    stage: int
    kind: str  # "video", or "images" (the stage's image steps, T = 1)
    steps: int
    bucket: str  # largest bucket, e.g. "1024x576x97"
    video_tokens: int
    text_tokens: int
    batch: int  # clips per data-parallel group and step
    memory_gib: dict[str, float]
    total_gib: float  # with the recipe's activation checkpointing setting
    total_checkpointed_gib: float
    total_not_checkpointed_gib: float
    fits: bool
    tflop_per_gpu_step: float  # model FLOPs (3 forwards)
    step_seconds: float
    stage_hours: float


@dataclass
class Plan:
    recipe: str
    mode: str
    parameters: int
    trainable: int
    gpus: int
    context_parallel: int
    strategy: str
    checkpointing: bool
    gpu_memory_gib: float
    peak_tflops: float
    mfu: float
    stages: list[StagePlan]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_memory(text: str) -> float:
    """``80GB``, ``141GB``, ``80GiB`` or ``80`` → GiB. GPU makers' "GB" are binary: an "80GB" H100
    has 81,559 MiB, a "141GB" H200 143,771 MiB."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(GB|GiB|G)?\s*", text, flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--gpu-memory {text!r}: expected a size such as 80GB or 141GB")
    return float(m.group(1))


#: part of a GPU's memory the plan leaves to the CUDA context, NCCL buffers and allocator fragmentation
RESERVED = 0.08


def _lora_parameters(s: Shapes, rank: int, targets: list[str]) -> int:
    d, h = s.width, int(s.width * s.mlp_ratio)
    per_dual = {"qkv": (d, 3 * d), "proj": (d, d), "mlp.0": (d, h), "mlp.2": (h, d)}
    per_single = {"linear1": (d, 3 * d + h), "linear2": (d + h, d)}
    dual = 2 * sum(rank * (i + o) for k, (i, o) in per_dual.items() if k in targets)
    single = sum(rank * (i + o) for k, (i, o) in per_single.items() if k in targets)
    return s.depth_double * dual + s.depth_single * single


def _model_config(cfg) -> tuple[dict[str, Any], int]:
    """Constructor arguments and stored bytes per parameter of the recipe's model."""
    from aiprod_shdt.presets import PRESETS

    if cfg.model.init_weights:
        path = Path(cfg.model.init_weights) / "config.json"
        if path.is_file():
            data = json.loads(path.read_text())
            meta = data.pop("_aiprod", {})
            stored = 2 if str(meta.get("dtype", "float32")) in ("bfloat16", "float16") else 4
            return {**data, **cfg.model.config}, stored  # the recipe's checks allow growing fields only
        return {**PRESETS[cfg.model.preset], **cfg.model.config}, 2  # a phase export, not written yet: bf16
    return {**PRESETS[cfg.model.preset], **cfg.model.config}, 4


def make_plan(cfg, gpus: int, context_parallel: int | None = None, gpu_memory_gib: float = 80.0,
              peak_tflops: float = 989.0, mfu: float = 0.35, text_tokens: int | None = None,
              cuda: bool = True, name: str = "") -> Plan:
    """The plan of an :class:`aiprod_shdt.train.SHDTTrainConfig` on ``gpus`` GPUs."""
    from aiprod_shdt.data import bucket_sizes
    from aiprod_shdt.parallel import check_tokens, head_splits

    if context_parallel is None:  # the recipe's own setting
        context_parallel = getattr(cfg.train, "context_parallel", 1)
    if gpus < 1 or gpus % context_parallel:
        raise ValueError(f"--gpus {gpus} must be a positive multiple of --context-parallel {context_parallel}")
    config, stored = _model_config(cfg)
    s = model_shapes(config)
    head_splits(s.heads, context_parallel)
    t = cfg.train
    prec = Precision(bf16=t.mixed_precision == "bf16", cuda=cuda)
    shard = gpus if (t.strategy == "fsdp2" and gpus > 1) else 1
    compute = 2 if prec.bf16 else 4
    if cfg.mode == "lora":
        trainable = _lora_parameters(s, cfg.lora.rank, cfg.lora.target_modules)
        weights = (s.params * stored + trainable * 4) / shard
    else:
        trainable = s.params
        weights = s.params * 4 / shard  # fp32 master weights
    states = {
        "parameters": weights,
        "gradients": trainable * 4 / shard,
        "optimizer": trainable * 8 / shard,
        "ema": trainable * 4 / shard if t.ema_decay is not None else 0.0,
    }
    if shard > 1:
        block = max(s.dual_block, s.single_block)
        grad_bufs = 2 * block * (compute + 4) if cfg.mode == "full" else 0
        states["fsdp_buffers"] = 2 * block * compute + grad_bufs
    else:
        states["fsdp_buffers"] = 0.0
    text = text_tokens if text_tokens is not None else (
        cfg.data.text_tokens if cfg.data.source == "synthetic" else DEFAULT_TEXT_TOKENS)
    stages, pixel = [], VAE_SPATIAL * s.patch
    images = getattr(cfg, "images", None)
    fraction = images.fraction if images is not None else 0.0
    for i, st in enumerate(cfg.curriculum):
        sizes = bucket_sizes(st.resolution, st.aspect_ratios or cfg.data.aspect_ratios)
        rows = [("video", st.latent_frames, st.frames, st.batch_size, st.steps - round(fraction * st.steps))]
        if fraction:  # joint image training: one latent frame, its own batch size
            rows.append(("images", 1, 1, images.batch_size, round(fraction * st.steps)))
        for kind, latent_frames, frames, batch, steps in rows:
            toks = [latent_frames * (h // pixel) * (w // pixel) for h, w in sizes]
            j = max(range(len(toks)), key=toks.__getitem__)
            video = toks[j]
            for n, (h, w) in zip(toks, sizes):
                check_tokens(n, context_parallel, f"stage {i} bucket {w}x{h} ({kind}): ")
            local = video // context_parallel
            act = {ck: activation_memory(s, prec, local, text, batch, ck) for ck in (True, False)}
            mem_gib = {k: v / GIB for k, v in states.items()}
            mem_gib.update(activations_checkpointed=act[True] / GIB, activations_not_checkpointed=act[False] / GIB)
            fixed = sum(states.values())
            total = (fixed + act[t.activation_checkpointing]) / GIB
            fwd = forward_flops(s, video, text)
            model_flops = 3 * fwd * batch / context_parallel
            hw_flops = (4 if t.activation_checkpointing else 3) * fwd * batch / context_parallel
            step = hw_flops / (peak_tflops * 1e12 * mfu)
            stages.append(StagePlan(
                stage=i, kind=kind, steps=steps, bucket=f"{sizes[j][1]}x{sizes[j][0]}x{frames}", video_tokens=video,
                text_tokens=text, batch=batch, memory_gib=mem_gib, total_gib=total,
                total_checkpointed_gib=(fixed + act[True]) / GIB, total_not_checkpointed_gib=(fixed + act[False]) / GIB,
                fits=total <= gpu_memory_gib * (1 - RESERVED), tflop_per_gpu_step=model_flops / 1e12,
                step_seconds=step, stage_hours=step * steps / 3600))
    return Plan(recipe=name, mode=cfg.mode, parameters=s.params, trainable=trainable, gpus=gpus,
                context_parallel=context_parallel, strategy=t.strategy, checkpointing=t.activation_checkpointing,
                gpu_memory_gib=gpu_memory_gib, peak_tflops=peak_tflops, mfu=mfu, stages=stages)


def format_plan(plan: Plan) -> str:
    k = plan.context_parallel
    lines = [
        f"{plan.recipe}: SHDT {plan.mode}, {plan.parameters / 1e9:.2f}B parameters ({plan.trainable / 1e9:.3f}B trainable)",
        f"{plan.gpus} GPUs x {plan.gpu_memory_gib:.1f} GiB, {plan.strategy}"
        + (f", context parallel {k} (data parallel {plan.gpus // k})" if k > 1 else "")
        + f", activation checkpointing {'on' if plan.checkpointing else 'off'}",
        f"clips per step: batch x {plan.gpus // k} data-parallel groups"
        + (f" (each clip split over {k} GPUs: multiply batch_size by K to keep the global batch)" if k > 1 else ""),
        f"time at {plan.mfu:.0%} MFU of {plan.peak_tflops:.0f} TFLOP/s per GPU (measure it: benchmarks/gpu_check.py)",
        "",
        "per GPU, GiB (v: video, i: image steps)      params grads optim   ema  fsdp | act ckpt / none | total ckpt / none"
        " | TFLOP/GPU s/step  hours",
    ]
    for sp in plan.stages:
        m = sp.memory_gib
        flag = "" if sp.fits else f"  DOES NOT FIT ({sp.total_gib:.1f} GiB as configured)"
        lines.append(
            f"stage {sp.stage} {sp.kind[0]} {sp.bucket:>13} {sp.video_tokens:>6}+{sp.text_tokens:<3} b{sp.batch:<2}: "
            f"{m['parameters']:6.1f} {m['gradients']:5.1f} {m['optimizer']:5.1f} {m['ema']:5.1f} {m['fsdp_buffers']:5.1f} | "
            f"{m['activations_checkpointed']:6.1f} {m['activations_not_checkpointed']:7.1f} | "
            f"{sp.total_checkpointed_gib:6.1f} {sp.total_not_checkpointed_gib:7.1f} | "
            f"{sp.tflop_per_gpu_step:9.1f} {sp.step_seconds:6.2f} {sp.stage_hours:6.1f}{flag}")
    hours = sum(sp.stage_hours for sp in plan.stages)
    lines.append(f"total: {hours:.0f} h ({hours * plan.gpus:.0f} GPU-hours)")
    return "\n".join(lines)


def _command():
    import click

    @click.command("plan")
    @click.argument("recipe", type=click.Path(path_type=Path))
    @click.option("--gpus", type=click.IntRange(min=1), required=True, help="GPUs of the run (all nodes).")
    @click.option("--gpu-memory", default="80GB", show_default=True, help="Memory of one GPU (80GB, 141GB).")
    @click.option("--context-parallel", type=click.IntRange(min=1), default=None,
                  help="Ranks sharing one sample's sequence (default: the recipe's train.context_parallel).")
    @click.option("--text-tokens", type=click.IntRange(min=1), default=None,
                  help=f"Prompt tokens (default: the synthetic data's, else {DEFAULT_TEXT_TOKENS}).")
    @click.option("--gpu-tflops", type=float, default=989.0, show_default=True,
                  help="Peak dense bf16 TFLOP/s of one GPU (H100/H200 SXM 989, A100 312).")
    @click.option("--mfu", type=float, default=0.35, show_default=True, help="Assumed model FLOPs utilisation.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plan(recipe, gpus, gpu_memory, context_parallel, text_tokens, gpu_tflops, mfu, as_json) -> None:
        """Per-GPU memory and time of every curriculum stage of an SHDT recipe, from the model's shapes."""
        from aiprod_core.errors import ConfigError
        from aiprod_core.pipeline import load_document

        what, spec, cfg = load_document(recipe)
        if what != "recipe" or spec.name != "shdt":
            raise ConfigError([f"{recipe}: aiprod plan knows the 'shdt' recipe, not {what} {spec.name!r}"])
        try:
            result = make_plan(cfg, gpus, context_parallel, parse_memory(gpu_memory), gpu_tflops, mfu, text_tokens,
                               name=str(recipe))
        except ValueError as err:
            raise ConfigError([f"{recipe}: {err}"]) from None
        click.echo(json.dumps(result.as_dict(), indent=2) if as_json else format_plan(result))

    return plan


def register(cli) -> None:
    """Add ``aiprod plan`` (called from :func:`aiprod_shdt.plugin.aiprod_register_commands`)."""
    cli.add_command(_command())
