"""Named sizes of SHDT, and the parameter / memory report of a size.

``python -m aiprod_shdt.presets v1`` builds the preset on the meta device and prints the parameter
breakdown and memory estimates (bf16 and FP8 E4M3 weights; training with FSDP2).

``v1`` (model card: 19B, up to 1024x576 at 97 frames): width 3840, 30 heads of 128 (flash-attention
friendly), 20 dual-stream + 38 single-stream blocks — the HunyuanVideo/Flux 1:2 dual:single split,
scaled in width (3072 → 3840) rather than depth to keep the 57,600-token sequence latency down.
"""

from __future__ import annotations

import sys

PRESETS: dict[str, dict] = {
    # tests and demos: ~0.3M parameters, head_dim 32
    "tiny": dict(in_channels=16, patch_size=2, hidden_size=64, num_heads=2, depth_double=2, depth_single=2,
                 mlp_ratio=4.0, text_dim=32, rope_axes_dim=(8, 12, 12)),
    # model card v1: 19B
    "v1": dict(in_channels=16, patch_size=2, hidden_size=3840, num_heads=30, depth_double=20, depth_single=38,
               mlp_ratio=4.0, text_dim=4096, rope_axes_dim=(16, 56, 56), guidance_embed=False),
}

#: 1024x576 at 97 frames through HW-VAE (x8 spatial, x4 temporal) and 2x2 patches
V1_VIDEO_TOKENS = (1 + (97 - 1) // 4) * (576 // 8 // 2) * (1024 // 8 // 2)  # 25 * 36 * 64 = 57,600
V1_TEXT_TOKENS = 256
GIB = 1024**3


def breakdown(model) -> dict[str, int]:
    """Parameters per top-level part (embedders, dual blocks, single blocks, final)."""
    parts: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        parts[top] = parts.get(top, 0) + p.numel()
    return parts


def linear_parameters(model) -> int:
    """Parameters in ``nn.Linear`` weights (what FP8 weight-only quantization stores in 1 byte)."""
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def memory_estimates(model, video_tokens: int = V1_VIDEO_TOKENS, text_tokens: int = V1_TEXT_TOKENS,
                     gpus: int = 8) -> dict[str, float]:
    """GiB estimates: weights (bf16, FP8 E4M3 linears + bf16 rest), inference activations, FSDP2 training."""
    cfg = model.config
    total = model.num_parameters()
    lin = linear_parameters(model)
    s, d = video_tokens + text_tokens, cfg.hidden_size
    hidden = int(d * cfg.mlp_ratio)
    depth = cfg.depth_double + cfg.depth_single
    # inference peak activation (bf16) inside a single-stream block: input, normed input, qkv+mlp-in,
    # attention out + gelu(mlp) concat, output — the widest transient is linear1's output.
    act_infer = s * (2 * d + (3 * d + hidden) + (d + hidden) + d) * 2
    # training, per-block activation checkpointing: one saved input per block (+ text stream in dual
    # blocks), plus one block recomputed in full (~ 34 bytes per token per channel, Korthikanti et al. 2022)
    act_train = (depth * s * d + cfg.depth_double * text_tokens * d) * 2 + 34 * s * d
    return {
        "parameters_B": total / 1e9,
        "weights_bf16_GiB": total * 2 / GIB,
        "weights_fp8_GiB": (lin * 1 + (total - lin) * 2) / GIB,
        "inference_activation_peak_GiB": act_infer / GIB,
        "inference_bf16_total_GiB": (total * 2 + act_infer) / GIB,
        "inference_fp8_total_GiB": (lin + (total - lin) * 2 + act_infer) / GIB,
        # AdamW full fine-tune: bf16 params + fp32 master + fp32 grads + 2 fp32 moments = 18 B/param, sharded
        f"train_full_fsdp{gpus}_states_per_gpu_GiB": total * 18 / gpus / GIB,
        "train_activations_per_gpu_GiB": act_train / GIB,
        # LoRA: frozen bf16 base (sharded) + tiny adapters
        f"train_lora_fsdp{gpus}_states_per_gpu_GiB": total * 2 / gpus / GIB,
    }


def flops_estimate(model, video_tokens: int = V1_VIDEO_TOKENS, text_tokens: int = V1_TEXT_TOKENS) -> dict[str, float]:
    """Forward TFLOP for one sample: 2 * (per-token block parameters, i.e. without the AdaLN modulation
    that acts on the conditioning vector) per token for the linears (a dual-block stream sees its own
    tokens only), 4 * S^2 * width per block for attention (QK^T and AV)."""
    from aiprod_shdt.model import Modulation

    cfg = model.config
    s, d = video_tokens + text_tokens, cfg.hidden_size

    def per_token(blocks) -> int:
        mod = sum(p.numel() for m in blocks.modules() if isinstance(m, Modulation) for p in m.parameters())
        return sum(p.numel() for p in blocks.parameters()) - mod

    dual, single = per_token(model.double_blocks), per_token(model.single_blocks)
    linear = 2 * (dual / 2 * video_tokens + dual / 2 * text_tokens + single * s)
    attn = 4 * s * s * d * (cfg.depth_double + cfg.depth_single)
    return {"linear_TFLOP": linear / 1e12, "attention_TFLOP": attn / 1e12, "forward_TFLOP": (linear + attn) / 1e12,
            "train_step_TFLOP (fwd+bwd, x3)": 3 * (linear + attn) / 1e12}


def report(name: str = "v1") -> str:
    import torch

    from aiprod_shdt.model import SHDT

    with torch.device("meta"):
        model = SHDT(**PRESETS[name])
    lines = [f"SHDT preset {name!r}: {model.num_parameters():,} parameters ({model.num_parameters() / 1e9:.3f} B)"]
    for part, n in breakdown(model).items():
        lines.append(f"  {part:<16} {n:>16,}  {100 * n / model.num_parameters():5.1f}%")
    if model.double_blocks:
        lines.append(f"  per dual-stream block   {sum(p.numel() for p in model.double_blocks[0].parameters()):,}")
    if model.single_blocks:
        lines.append(f"  per single-stream block {sum(p.numel() for p in model.single_blocks[0].parameters()):,}")
    if name == "v1":
        lines.append(f"memory estimates at {V1_VIDEO_TOKENS:,} video + {V1_TEXT_TOKENS} text tokens (GiB):")
        for k, v in memory_estimates(model).items():
            lines.append(f"  {k:<36} {v:10.2f}")
        lines.append("compute per sample at that length (batch 1, no CFG):")
        for k, v in flops_estimate(model).items():
            lines.append(f"  {k:<36} {v:10.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    for preset in sys.argv[1:] or ["v1"]:
        print(report(preset))
