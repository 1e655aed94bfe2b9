"""Pipeline kind ``upsample`` (``aiprod run``): a latents file in, the ×2 (optionally refined) latents out.

Example YAML::

    # aiprod run upsample.yaml
    pipeline: upsample
    input: out/low_res.safetensors        # tensor "latents" [B, C, T, H, W] (or [C, T, H, W]), normalised
    output: out/high_res.safetensors
    upsampler: {name: latent-x2, weights: weights/upsampler-v1}
    refine:                               # optional: re-noise to sigma and refine with a denoiser
      denoiser: {name: shdt, weights: weights/shdt-v1}
      text_encoder: {name: ..., weights: ...}   # with `prompt`; or "text"/"text_mask" tensors in the input file
      prompt: "a red fox running through snow"
      sigma: 0.6
      steps: 3

Every other tensor of the input file (e.g. the text embeddings stage 1 used) is copied to the
output, so stages chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef, RunContext
from aiprod_core.store import atomic_path

if TYPE_CHECKING:  # torch is imported where latents are read: `aiprod validate` stays light (issue 21)
    import torch


class RefineSection(StrictModel):
    """Stage-2 refinement after upsampling."""

    denoiser: ComponentRef
    text_encoder: ComponentRef | None = None
    prompt: str | None = None
    negative_prompt: str = ""
    cfg_scale: float = Field(1.0, ge=0, description="classifier-free guidance; 1 = off")
    sigma: float = Field(0.6, gt=0, le=1, description="noise level the upsampled latent is re-noised to")
    steps: int = Field(3, ge=1, description="Euler steps from sigma to 0")

    @model_validator(mode="after")
    def _prompt(self) -> RefineSection:
        if (self.text_encoder is None) != (self.prompt is None):
            raise ValueError("give 'text_encoder' and 'prompt' together (or neither: text from the input file)")
        if self.cfg_scale != 1.0 and self.text_encoder is None:
            raise ValueError("cfg_scale != 1 needs 'text_encoder' for the negative prompt")
        return self


class UpsamplePipelineConfig(StrictModel):
    """``pipeline: upsample``."""

    input: str
    output: str
    upsampler: ComponentRef
    refine: RefineSection | None = None


def read_latents(path: Any) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors latents file; ``latents`` is required, made 5-D."""
    from safetensors import safe_open

    if not path.is_file():
        raise AiprodError(f"{path}: latents file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise AiprodError(f"{path}: not a safetensors file ({err})") from None
    if "latents" not in tensors:
        raise AiprodError(f"{path}: no tensor 'latents' (found: {', '.join(tensors) or 'none'})")
    lat = tensors["latents"]
    if lat.ndim == 4:
        tensors["latents"] = lat.unsqueeze(0)
    elif lat.ndim != 5:
        raise AiprodError(f"{path}: 'latents' must be [B, C, T, H, W] or [C, T, H, W], got {tuple(lat.shape)}")
    return tensors


def run(config: UpsamplePipelineConfig, ctx: RunContext) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from aiprod_upsampler.two_stage import two_stage_refine

    src = ctx.resolve(config.input)
    tensors = read_latents(src)
    out_path = ctx.output_path(config.output)
    upsampler = config.upsampler.load(ctx)
    low = tensors["latents"].to(ctx.device)
    channels = getattr(upsampler, "latent_channels", low.shape[1])
    if low.shape[1] != channels:
        raise AiprodError(f"{src}: latents have {low.shape[1]} channels, the upsampler expects {channels}")
    r = config.refine
    with torch.no_grad():
        if r is None:
            high = upsampler(low.to(ctx.dtype))
        else:
            text, mask, neg, neg_mask = _text(r, tensors, ctx, batch=low.shape[0], source=str(src))
            denoiser = r.denoiser.load(ctx)
            high = two_stage_refine(
                denoiser,
                upsampler,
                low,
                text,
                mask,
                sigma=r.sigma,
                steps=r.steps,
                generator=ctx.generator(),
                negative_text=neg,
                negative_mask=neg_mask,
                cfg_scale=r.cfg_scale,
                progress=ctx.progress,
            )
    tensors["latents"] = high.float().cpu().contiguous()
    meta = {"producer": "aiprod-upsampler", "refined": str(r is not None)}
    if r is not None:
        meta.update(sigma=str(r.sigma), steps=str(r.steps), seed=str(ctx.seed))
    with atomic_path(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    if not ctx.quiet:
        print(f"upsample: {tuple(low.shape)} -> {tuple(high.shape)} written to {out_path}")
    return {"output": str(out_path), "shape": tuple(high.shape)}


def _text(r: RefineSection, tensors: dict[str, torch.Tensor], ctx: RunContext, batch: int, source: str):
    """Text conditioning: encode ``prompt`` (and the negative prompt), or read it from the input file."""
    if r.text_encoder is not None:
        enc = r.text_encoder.load(ctx)
        text, mask = enc.encode([r.prompt] * batch)
        neg = neg_mask = None
        if r.cfg_scale != 1.0:
            neg, neg_mask = enc.encode([r.negative_prompt] * batch)
        return text, mask, neg, neg_mask
    if "text" not in tensors or "text_mask" not in tensors:
        raise AiprodError(
            f"{source}: refine needs 'text' and 'text_mask' tensors in the input file, "
            "or refine.text_encoder + refine.prompt"
        )
    return tensors["text"], tensors["text_mask"].bool(), None, None
