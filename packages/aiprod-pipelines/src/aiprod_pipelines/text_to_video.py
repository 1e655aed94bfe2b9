"""Pipeline kind ``text-to-video``: a prompt becomes an mp4 with H.264 video and an AAC narration.

    prompt ─ text-encoder ─┐
                           ├─ video-denoiser, rectified-flow sampling (Euler/Heun, token-count shift, CFG)
    noise (CPU, seeded) ───┘     │  optional two-stage: latent-upsampler x2, re-noise to sigma, refine
                                 └─ video-autoencoder decode ─ frames ─┐
    narration ─ speech-synthesizer ─ wav ──────────────────────────────┴─ reconcile lengths ─ mp4

Example (``examples/text_to_video.yaml``)::

    pipeline: text-to-video
    prompt: a red circle moving left over a photo of a cat
    narration: A red circle glides to the left.
    output: out/text_to_video.mp4
    text_encoder: {name: gemma3-lora, preset: tiny}
    denoiser: {name: shdt, preset: tiny}
    autoencoder: {name: hwvae, preset: tiny}
    speech: {name: fastspeech2-hifigan, preset: tiny}

Lengths (``sync``): ``longest`` (default) keeps everything: a narration longer than the clip holds
the clip's last frame until the narration ends; a shorter one is padded with silence. ``video`` keeps
the clip's length and pads or cuts (with a 20 ms fade) the narration. See :mod:`aiprod_pipelines.media`.

This module is the YAML face of :class:`aiprod_pipelines.api.TextToVideoPipeline`: it validates the
document, loads the components it names, builds the pipeline object and writes its clips. Sampling is
the pipeline's: a registered ``sampler`` component (``sampler: euler | heun | dpm++2m``, from
aiprod-shdt) integrates rectified flow ``x_s = (1 - s) x0 + s noise`` from ``s = 1`` to 0 (Liu et al.
2022, arXiv:2209.03003) over SD3's token-count shifted schedule (Esser et al. 2024, arXiv:2403.03206),
with classifier-free guidance against the negative prompt or the empty (all-masked) prompt. Noise is
drawn on the CPU from the seed (clip ``i`` of ``prompts:`` from ``seed + i``), so a seed gives the
same clip on every device and in every batch.

Beyond one prompt and one mp4: ``prompts:`` (a list or a text file, one prompt a line) writes one
output per prompt (``out/clip.mp4`` → ``out/clip_000.mp4`` ...), sampled ``batch_size`` at a time;
``output`` may end in ``.mp4``, ``.webm``, ``.gif`` or name a folder (PNG frames + wav); ``image:``
conditions on a first frame; ``loras:`` applies exported adapters; ``offload:`` and ``vae_tiling:``
trade speed for memory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.pipeline import ComponentRef, RunContext

if TYPE_CHECKING:  # torch is imported where a clip is made: `aiprod validate` stays light (issue 21)
    import torch

KINDS = {
    "text_encoder": "text-encoder",
    "denoiser": "video-denoiser",
    "autoencoder": "video-autoencoder",
    "speech": "speech-synthesizer",
    "upsampler": "latent-upsampler",
}


def _with_kind(ref: ComponentRef | None, kind: str) -> ComponentRef | None:
    """Fill in a reference's kind (so validation finds the right component), or refuse a wrong one."""
    if ref is None:
        return None
    if ref.kind is None:
        return ref.model_copy(update={"kind": kind})
    if ref.kind != kind:
        raise ValueError(f"expected a {kind} component, got kind {ref.kind!r}")
    return ref


class TwoStage(StrictModel):
    """Stage 2: the latent-upsampler doubles the stage-1 latent, which is re-noised to ``sigma`` and refined."""

    upsampler: ComponentRef
    sigma: float = Field(0.6, gt=0, le=1, description="noise level the upsampled latent is re-noised to")
    steps: int = Field(3, ge=1, description="Euler steps from sigma to 0")

    @field_validator("upsampler")
    @classmethod
    def _kind(cls, v: ComponentRef) -> ComponentRef:
        return _with_kind(v, KINDS["upsampler"])


class LoraRef(StrictModel):
    """A LoRA folder exported by ``aiprod train`` (``<run>/final/lora``), verified by its manifest."""

    path: str
    scale: float = Field(1.0, description="multiplies alpha / r")


class VaeTiling(StrictModel):
    """Decode memory: spatial tiles of ``tile`` latent pixels cross-faded over ``overlap``, ``chunk`` latent frames."""

    tile: int | None = Field(None, ge=2)
    overlap: int = Field(16, ge=0)
    chunk: int | None = Field(None, ge=1)


class TextToVideoConfig(StrictModel):
    """``pipeline: text-to-video`` (``aiprod run``)."""

    prompt: str | None = Field(None, min_length=1, description="what the clip shows (or give 'prompts')")
    prompts: list[str] | str | None = Field(None, description="several prompts: a list, or a text file with one "
                                            "a line; one output each (<output stem>_000<ext>, ...)")
    negative_prompt: str = Field("", description="steered away from by CFG; empty = the unconditional prompt")
    output: str = Field(description="the mp4 to write (refused if it exists, unless --overwrite)")
    width: int = Field(64, ge=16, description="pixels; a multiple of 8 x patch size (x2 with two_stage)")
    height: int = Field(64, ge=16)
    frames: int = Field(17, ge=1, description="1 + 4k (the autoencoder codes 4 frames per latent frame)")
    fps: int = Field(8, ge=1, le=120)
    steps: int = Field(20, ge=1, description="sampling steps (stage 1)")
    guidance_scale: float = Field(4.0, ge=0, description="classifier-free guidance; 1 = off")
    sampler: str = Field("euler", description="a registered sampler component: euler | heun | dpm++2m")
    batch_size: int = Field(1, ge=1, description="prompts sampled together")
    image: str | None = Field(None, description="first frame to keep (an image file, resized to width x height)",
                              json_schema_extra={"aiprod_path": "input"})
    loras: list[LoraRef] = Field([], description="LoRA adapters for the denoiser: [{path, scale}]")
    offload: Literal["model", "sequential"] | None = Field(
        None, description="keep components on the CPU, moving each (model) or each layer (sequential) "
        "to the device only while it runs")
    vae_tiling: VaeTiling | None = Field(None, description="decode in spatial tiles and/or temporal chunks")
    text_encoder: ComponentRef
    denoiser: ComponentRef
    autoencoder: ComponentRef
    two_stage: TwoStage | None = Field(None, description="half-resolution sampling, then x2 upsample and refine")
    speech: ComponentRef | None = Field(None, description="speech-synthesizer for the narration; none = silent")
    narration: str | None = Field(None, description="text spoken over the clip (default: the prompt)")
    speech_speed: float = Field(1.0, ge=0.25, le=4, description="narration speed; 0.25 = four times slower")
    sync: Literal["longest", "video"] = Field("longest", description="how audio and video lengths are reconciled")
    crf: int = Field(18, ge=0, le=51, description="x264 quality (lower is better)")
    audio_bitrate: int = Field(96_000, ge=16_000, le=512_000)

    @field_validator("text_encoder", "denoiser", "autoencoder", "speech")
    @classmethod
    def _kinds(cls, v: ComponentRef | None, info) -> ComponentRef | None:
        return _with_kind(v, KINDS[info.field_name])

    @field_validator("output")
    @classmethod
    def _output_format(cls, v: str) -> str:
        from aiprod_pipelines.media import output_format

        try:
            output_format(v)
        except AiprodError as err:
            raise ValueError(str(err)) from None
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        from aiprod_core.registry import get_registry

        known = sorted(n for (k, n) in get_registry().components if k == "sampler")
        if v not in known:
            raise ValueError(f"unknown sampler {v!r}; installed: {', '.join(known) or 'none (install aiprod-shdt)'}")
        return v

    @model_validator(mode="after")
    def _one_prompt_source(self) -> TextToVideoConfig:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give exactly one of 'prompt' (one clip) or 'prompts' (a list or a text file)")
        if self.image is not None and self.two_stage is not None:
            raise ValueError("'image' (first-frame conditioning) does not combine with 'two_stage'")
        return self

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k (e.g. {1 + 4 * round((v - 1) / 4)})")
        return v

    @field_validator("width", "height")
    @classmethod
    def _multiple(cls, v: int) -> int:
        if v % 16:
            raise ValueError("must be a multiple of 16 (autoencoder x8, patch 2)")
        return v

    @field_validator("narration")
    @classmethod
    def _narration(cls, v: str | None, info) -> str | None:
        if v is not None and "speech" in info.data and info.data["speech"] is None:
            raise ValueError("'narration' needs a 'speech' component (kind speech-synthesizer)")
        if v is not None and not any(ch.isalnum() for ch in v):
            raise ValueError("has nothing to speak (no letter or digit); leave it out to speak the prompt")
        return v

    @field_validator("two_stage")
    @classmethod
    def _two_stage_sizes(cls, v: TwoStage | None, info) -> TwoStage | None:
        bad = [f"{k}: {info.data[k]} is not a multiple of 32" for k in ("width", "height")
               if v is not None and info.data.get(k, 0) % 32]
        if bad:
            raise ValueError(f"{'; '.join(bad)} (autoencoder x8 x patch 2 x upsampler 2)")
        return v

    @field_validator("frames")
    @classmethod
    def _fits_memory(cls, v: int, info) -> int:
        from aiprod_core.checks import memory_problem

        w, h = info.data.get("width", 0), info.data.get("height", 0)
        why = memory_problem(4 * 3 * v * w * h, f"a {w}x{h} clip of {v} frames (decoded in float32)")
        if why:
            raise ValueError(why)
        return v


# -- components ----------------------------------------------------------------------------------
@dataclass
class Models:
    text_encoder: Any
    denoiser: Any
    autoencoder: Any
    upsampler: Any | None = None
    speech: Any | None = None


def _check_kind(module: Any, kind: str, key: str) -> None:
    from aiprod_core.interfaces import PROTOCOLS

    if not isinstance(module, PROTOCOLS[kind]):
        raise AiprodError(f"{key}: {type(module).__name__} does not implement the {kind} interface "
                          f"(aiprod_core.interfaces.{PROTOCOLS[kind].__name__})")


def load_models(cfg: TextToVideoConfig, ctx: RunContext, *, speech: bool = True) -> Models:
    """Load every component and check they fit together (text width, latent channels, sizes)."""
    bar = ctx.progress(total=4 + (cfg.two_stage is not None) + (speech and cfg.speech is not None),
                       desc="load components", unit="component")
    loaded: dict[str, Any] = {}
    refs = {"text_encoder": cfg.text_encoder, "denoiser": cfg.denoiser, "autoencoder": cfg.autoencoder}
    if cfg.two_stage is not None:
        refs["upsampler"] = cfg.two_stage.upsampler
    if speech and cfg.speech is not None:
        refs["speech"] = cfg.speech
    cache = getattr(ctx, "component_cache", None)  # aiprod serve: components load once per server
    for key, ref in refs.items():
        ckey = (ref.model_dump_json(), str(ctx.device), str(ctx.dtype))
        if cache is not None and ckey in cache:
            loaded[key] = cache[ckey]
        else:
            loaded[key] = ref.load(ctx)
            if cache is not None:
                cache[ckey] = loaded[key]
        _check_kind(loaded[key], KINDS[key], f"{ctx.source}: {key}")
        bar.update()
    bar.close()
    m = Models(**loaded)
    src = ctx.source
    if m.text_encoder.out_dim != m.denoiser.text_dim:
        raise AiprodError(f"{src}: text_encoder gives {m.text_encoder.out_dim}-wide embeddings, "
                          f"the denoiser expects text_dim {m.denoiser.text_dim}")
    if m.autoencoder.latent_channels != m.denoiser.in_channels:
        raise AiprodError(f"{src}: autoencoder has {m.autoencoder.latent_channels} latent channels, "
                          f"the denoiser expects in_channels {m.denoiser.in_channels}")
    up_ch = getattr(m.upsampler, "latent_channels", None)
    if up_ch is not None and up_ch != m.denoiser.in_channels:
        raise AiprodError(f"{src}: two_stage.upsampler has {up_ch} latent channels, "
                          f"the denoiser expects {m.denoiser.in_channels}")
    step = m.autoencoder.spatial_compression * m.denoiser.patch_size * (2 if m.upsampler is not None else 1)
    for name in ("width", "height"):
        if getattr(cfg, name) % step:
            raise AiprodError(f"{src}: {name}: {getattr(cfg, name)} is not a multiple of {step} "
                              f"(autoencoder x{m.autoencoder.spatial_compression} x patch {m.denoiser.patch_size}"
                              + (" x upsampler 2)" if m.upsampler is not None else ")"))
    if (cfg.frames - 1) % m.autoencoder.temporal_compression:
        raise AiprodError(f"{src}: frames: {cfg.frames} is not 1 + {m.autoencoder.temporal_compression}k")
    return m


# -- generation: the pipeline object ------------------------------------------------------------------
def build_pipeline(models: Models, cfg: TextToVideoConfig | None = None, ctx: RunContext | None = None) -> Any:
    """A :class:`~aiprod_pipelines.api.TextToVideoPipeline` over loaded components, with the YAML's
    LoRAs, offload and VAE tiling applied."""
    from aiprod_pipelines.api import TextToVideoPipeline

    pipe = TextToVideoPipeline(text_encoder=models.text_encoder, denoiser=models.denoiser,
                               autoencoder=models.autoencoder, upsampler=models.upsampler, speech=models.speech)
    if cfg is None:
        return pipe
    if ctx is not None:
        pipe.device, pipe.dtype = ctx.device, ctx.dtype
    for lora in cfg.loras:
        pipe.load_lora(ctx.resolve(lora.path) if ctx else lora.path, lora.scale,
                       force_verify=bool(ctx and ctx.force_verify))
    if pipe.loras:
        pipe.fuse_lora()
    if cfg.offload == "model":
        pipe.enable_model_cpu_offload()
    elif cfg.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    if cfg.vae_tiling is not None:
        pipe.enable_vae_tiling(cfg.vae_tiling.tile, cfg.vae_tiling.overlap, cfg.vae_tiling.chunk)
    return pipe


def _two_stage(two_stage: TwoStage | None) -> dict[str, Any] | None:
    return None if two_stage is None else {"sigma": two_stage.sigma, "steps": two_stage.steps}


def generate(models: Models, prompt: str, *, negative_prompt: str = "", width: int, height: int, frames: int,
             steps: int, guidance_scale: float, seed: int, method: str = "euler", two_stage: TwoStage | None = None,
             progress: Callable | None = None, video: torch.Tensor | None = None,
             strength: float = 1.0) -> torch.Tensor:
    """One clip ``[3, frames, height, width]`` float32 in [-1, 1] on the CPU (``aiprod eval`` uses it);
    from ``video`` noised to ``strength`` when given (video to video)."""
    import torch

    with torch.no_grad():
        pipe = build_pipeline(models)
        return pipe.generate_videos([prompt], negative_prompt, num_frames=frames, height=height, width=width,
                                    num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed,
                                    sampler=method, two_stage=_two_stage(two_stage), progress=progress is not None,
                                    video=video, strength=strength)[0]


def read_prompts(cfg: TextToVideoConfig, ctx: RunContext) -> list[str]:
    """``prompt``, or ``prompts`` as a list or a UTF-8 text file (one a line; blank lines and ``#`` skipped)."""
    if cfg.prompt is not None:
        return [cfg.prompt]
    if isinstance(cfg.prompts, list):
        prompts = [p.strip() for p in cfg.prompts]
        src = f"{ctx.source}: prompts"
    else:
        path = ctx.resolve(cfg.prompts)
        src = str(path)
        try:
            prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
                       if ln.strip() and not ln.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as err:
            raise AiprodError(f"{ctx.source}: prompts: cannot read {path} ({err})") from None
    if not prompts or not all(prompts):
        raise AiprodError(f"{src}: expected at least one non-empty prompt")
    return prompts


def output_paths(output: str, n: int) -> list[str]:
    """``out/clip.mp4`` for one prompt; ``out/clip_000.mp4``, ``out/clip_001.mp4`` ... for several."""
    if n == 1:
        return [output]
    from pathlib import Path

    p = Path(output)
    if str(output).endswith(("/", "\\")) or not p.suffix:  # folders of frames
        return [str(p.parent / f"{p.name}_{i:03d}") for i in range(n)]
    return [str(p.with_name(f"{p.stem}_{i:03d}{p.suffix}")) for i in range(n)]


# -- the pipeline ------------------------------------------------------------------------------------
def run(cfg: TextToVideoConfig, ctx: RunContext) -> str | list[str]:
    """Generate, narrate, reconcile lengths, write each output. Returns its path (a list for ``prompts``)."""
    from aiprod_pipelines.media import write_output

    prompts = read_prompts(cfg, ctx)
    outs = [ctx.output_path(p) for p in output_paths(cfg.output, len(prompts))]  # refused before any weight
    if cfg.image is not None and not ctx.resolve(cfg.image).is_file():
        raise AiprodError(f"{ctx.source}: image: {ctx.resolve(cfg.image)} not found")
    pipe = build_pipeline(load_models(cfg, ctx), cfg, ctx)
    progress = not ctx.quiet
    narration = cfg.narration if len(prompts) == 1 else None
    on_step = getattr(ctx, "on_step", None)  # aiprod serve reports progress through it
    written = []
    for b0 in range(0, len(prompts), cfg.batch_size):
        batch = prompts[b0:b0 + cfg.batch_size]
        result = pipe(batch, cfg.negative_prompt, num_frames=cfg.frames, height=cfg.height, width=cfg.width,
                      num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=ctx.seed + b0,
                      sampler=cfg.sampler, batch_size=cfg.batch_size, two_stage=_two_stage(cfg.two_stage),
                      image=None if cfg.image is None else ctx.resolve(cfg.image), narration=narration,
                      speech_speed=cfg.speech_speed, fps=cfg.fps, progress=progress,
                      callback_on_step_end=on_step)
        for i, prompt in enumerate(batch):
            out = outs[b0 + i]
            frames, audio, sr = result.frames[i], result.audio[i], result.sample_rate
            n_frames = frames.shape[0] if audio is None else max(
                frames.shape[0], -(-len(audio) * cfg.fps // sr) if cfg.sync == "longest" else frames.shape[0])
            info = {"prompt": prompt, "seed": ctx.seed + b0 + i, "steps": cfg.steps,
                    "guidance_scale": cfg.guidance_scale, "sampler": cfg.sampler, "two_stage": cfg.two_stage is not None,
                    "sync": cfg.sync, "generated_frames": cfg.frames, "written_frames": int(n_frames)}
            write_output(out, frames, cfg.fps, audio, sr, sync=cfg.sync, overwrite=True, crf=cfg.crf,
                         audio_bitrate=cfg.audio_bitrate, metadata={"comment": json.dumps(info)})
            written.append(str(out))
            if not ctx.quiet:
                narr = f", narration {len(audio) / sr:.2f} s ({cfg.sync})" if audio is not None else ", no audio"
                print(f"text-to-video: {n_frames} frames {cfg.width}x{cfg.height} at {cfg.fps} fps "
                      f"({n_frames / cfg.fps:.2f} s){narr} -> {out}", file=sys.stderr)
    return written[0] if len(written) == 1 else written
