"""Training recipe ``shdt``: phase 0 (pretraining from random init), phase 1 (LoRA through peft) and
phase 2 (full fine-tune), one trainer.

``aiprod train configs/train/pretrain.yaml`` / ``lora_phase1.yaml`` / ``full_finetune.yaml``.

- Objective: rectified-flow velocity MSE (:mod:`aiprod_shdt.diffusion`) with shifted logit-normal noise
  levels (the shift follows the stage's token count), and text dropout for classifier-free guidance.
- Curriculum: ``curriculum`` is a list of stages (resolution, frames, steps, batch size) switched at
  step boundaries; each batch comes from one aspect-ratio bucket (:mod:`aiprod_shdt.data`).
- Data: cached latents + text embeddings (safetensors), or synthetic clips for tests.
- Phase 0 extras: ``images`` mixes image steps (one latent frame) into the video curriculum, and
  ``first_frame`` keeps the first latent frame clean with some probability (excluded from the loss) so the
  same weights do image-to-video (:func:`aiprod_shdt.diffusion.sample` with ``first_frame_mode="clean"``;
  the LTX-Video / Wan image-to-video recipe, here without per-token timesteps).
- Sharded start: the model is built on the meta device and filled after FSDP2 sharding, each rank
  computing or reading only its own rows (:mod:`aiprod_shdt.init`), whatever the world size.
- Context parallelism (``train.context_parallel: K``): each sample's video tokens are split over K
  ranks (:mod:`aiprod_shdt.parallel`); the K ranks of a group train on the same batch (broadcast from
  the group's first rank), FSDP2 shards over every rank.
- Loop, checkpoints, exact resume, EMA, DDP / FSDP2 under torchrun: :mod:`aiprod_core.training`.
- Export: ``final/model`` is always a full SHDT component folder (LoRA merged into the weights);
  LoRA runs also write the adapters alone to ``final/lora/adapter_model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.errors import ConfigError
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask, shared_generator
from aiprod_shdt.data import SPATIAL, CachedClips, Stage, SyntheticClips, bucket_sizes, parse_ratio, stage_at
from aiprod_shdt.diffusion import FlowConfig, flow_loss, token_shift, training_sigmas
from aiprod_shdt.init import init_parameters_, load_shards_, patch_converters
from aiprod_shdt.model import SHDT
from aiprod_shdt.parallel import apply_context_parallel, context_parallel_mesh, head_splits
from aiprod_shdt.parallelize import apply_activation_checkpointing, shard_model
from aiprod_shdt.presets import PRESETS

ADAPTER = "default"  # peft adapter name


class ModelSection(StrictModel):
    """The model to train: a preset (+ overrides), optionally initialised from a component folder."""

    preset: str = "v1"
    config: dict[str, Any] = {}
    init_weights: str | None = Field(None, description="SHDT component folder to start from (required for LoRA)")

    @model_validator(mode="after")
    def _known(self) -> ModelSection:
        if self.init_weights is None and self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} unknown (known: {', '.join(PRESETS)})")
        return self


class LoraSection(StrictModel):
    """peft LoRA (Hu et al. 2021) on the attention and MLP linears of every block."""

    rank: int = Field(32, ge=1)
    alpha: float = Field(32.0, gt=0, description="scale = alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["qkv", "proj", "mlp.0", "mlp.2", "linear1", "linear2"]


class DataSection(StrictModel):
    source: Literal["synthetic", "cached"] = "synthetic"
    cache_dir: str | None = Field(None, description="cached: WebDataset shards (index.npz + *.tar; a folder or a URL, "
                                  "aiprod data cache) or clip files per resolution in <cache_dir>/<res>/")
    num_workers: int = Field(2, ge=0, description="cached: DataLoader worker processes reading ahead (0: in the loop)")
    prefetch: int = Field(2, ge=1, description="cached: batches each worker prepares ahead")
    aspect_ratios: list[str] = Field(["1:1"], min_length=1, description="buckets, 'W:H'")
    num_clips: int = Field(4, ge=1, description="synthetic: number of fixed clips")
    text_tokens: int = Field(16, ge=1, description="synthetic: longest prompt, tokens")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        for r in self.aspect_ratios:
            parse_ratio(r)
        if self.source == "cached" and not self.cache_dir:
            raise ValueError("source 'cached' needs cache_dir")
        return self


class ImagesSection(StrictModel):
    """Joint image and video training: some steps train on single frames (T = 1) of the stage's resolution."""

    fraction: float = Field(0.0, ge=0, lt=1, description="share of steps that are image steps (drawn per step)")
    batch_size: int = Field(8, ge=1, description="images per rank on an image step")


class FirstFrameSection(StrictModel):
    """Image-to-video from the same weights: the first latent frame kept clean (the conditioning image)."""

    probability: float = Field(0.0, ge=0, le=1, description="per video clip: keep frame 0 clean, out of the loss")


class SHDTLoopConfig(TrainConfig):
    """The core loop's ``train:`` section plus what only this recipe supports."""

    context_parallel: int = Field(1, ge=1, description="ranks sharing one sample's video tokens (Ulysses); "
                                  "must divide the number of processes; FSDP2 shards over all of them")


class SHDTTrainConfig(StrictModel):
    model: ModelSection = ModelSection()
    mode: Literal["full", "lora"] = "full"
    lora: LoraSection = LoraSection()
    curriculum: list[Stage] = Field(min_length=1)
    data: DataSection = DataSection()
    images: ImagesSection = ImagesSection()
    first_frame: FirstFrameSection = FirstFrameSection()
    flow: FlowConfig = FlowConfig()
    text_dropout: float = Field(0.1, ge=0, le=1, description="probability of training on the empty prompt (CFG)")
    eval_clips: int = Field(4, ge=1, description="clips in the fixed evaluation batch (the current stage's "
                            "resolution and frames, its first bucket)")
    train: SHDTLoopConfig

    @model_validator(mode="after")
    def _check(self) -> SHDTTrainConfig:
        problems = []
        for i, stage in enumerate(self.curriculum):
            for r in stage.aspect_ratios or []:
                try:
                    parse_ratio(r)
                except ValueError as err:
                    problems.append(f"curriculum[{i}].aspect_ratios: {err}")
        total = sum(s.steps for s in self.curriculum)
        if total != self.train.max_steps:
            problems.append(f"train.max_steps is {self.train.max_steps} but the curriculum stages sum to {total}")
        if self.mode == "lora" and self.model.init_weights is None:
            problems.append("mode 'lora' adapts a trained model: set model.init_weights to an SHDT component folder")
        grown = [k for k in self.model.config if GROWABLE.get(k) or k == "patch_size"] if self.model.init_weights else []
        if self.mode == "lora" and grown:
            problems.append(f"model.config: {', '.join(grown)} adds or reshapes modules of init_weights that mode 'lora' "
                            "would keep frozen at their start; use mode 'full'")
        problems += self._context_parallel_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self


    def _context_parallel_problems(self) -> list[str]:
        """Context parallelism splits heads and video tokens over K ranks: both must allow it."""
        k = self.train.context_parallel
        if k == 1:
            return []
        problems = []
        if self.model.init_weights is None:
            heads = {**PRESETS.get(self.model.preset, {}), **self.model.config}.get("num_heads", 30)
            try:
                head_splits(heads, k)
            except ValueError as err:
                problems.append(f"train.context_parallel: {err}")
        patch = {**PRESETS.get(self.model.preset, {}), **self.model.config}.get("patch_size", 2)
        for i, stage in enumerate(self.curriculum):
            for h, w in bucket_sizes(stage.resolution, stage.aspect_ratios or self.data.aspect_ratios):
                for frames in {stage.latent_frames, 1} if self.images.fraction else {stage.latent_frames}:
                    tokens = frames * (h // (8 * patch)) * (w // (8 * patch))
                    if tokens % k:
                        problems.append(f"curriculum[{i}]: bucket {w}x{h}, {frames} latent frames has {tokens} video "
                                        f"tokens, not a multiple of train.context_parallel {k}")
        return problems


#: ``model.config`` fields that may be set on top of ``init_weights``, each with the parameter-name prefixes it
#: adds: those start as the identity (drawn by :func:`init_parameters_`, the folder's weights read as they are).
#: ``patch_size`` (a multiple of the folder's) adds nothing: the patch embedding and output layer are converted
#: on load (:func:`aiprod_shdt.init.patch_converters`), for training at k x the pixels with the same tokens.
GROWABLE: dict[str, tuple[str, ...]] = {"out_conv": ("out_conv.",), "compile": (), "patch_size": ()}


def model_config(cfg: SHDTTrainConfig) -> dict[str, Any]:
    """SHDT constructor arguments: the init_weights folder's config.json (+ :data:`GROWABLE` overrides), or the
    preset + overrides."""
    if cfg.model.init_weights:
        bad = sorted(set(cfg.model.config) - set(GROWABLE))
        if bad:
            raise ConfigError([f"model.config: {', '.join(bad)} cannot change the model of init_weights "
                               f"{cfg.model.init_weights} (allowed on top of it: {', '.join(GROWABLE)})"])
        stored = SHDT.load_config(cfg.model.init_weights).model_dump()
        new = cfg.model.config.get("patch_size", stored["patch_size"])
        if new % stored["patch_size"]:
            raise ConfigError([f"model.config: patch_size {new} must be a multiple of init_weights' patch_size "
                               f"{stored['patch_size']} ({cfg.model.init_weights})"])
        return {**stored, **cfg.model.config}
    return {**PRESETS[cfg.model.preset], **cfg.model.config}


def load_converters(cfg: SHDTTrainConfig) -> dict | None:
    """:func:`load_shards_`'s ``convert`` for ``init_weights`` under ``model.config``'s patch size, if it changes."""
    if not cfg.model.init_weights or "patch_size" not in cfg.model.config:
        return None
    stored = SHDT.load_config(cfg.model.init_weights)
    return patch_converters(stored.patch_size, cfg.model.config["patch_size"], stored.in_channels)


def token_pixels(cfg: SHDTTrainConfig) -> int:
    """Pixels along one side of a token: the autoencoder's x8 times the model's patch size."""
    return SPATIAL * model_config(cfg)["patch_size"]


def grown_prefixes(cfg: SHDTTrainConfig) -> tuple[str, ...]:
    """Parameter-name prefixes the ``model.config`` overrides add to ``init_weights``' model."""
    return tuple(p for k in cfg.model.config for p in GROWABLE.get(k, ()))


def _distributed() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def build_model(cfg: SHDTTrainConfig) -> SHDT:
    """Random init: on the meta device (no memory); the trainer shards it, then :meth:`SHDTTask.init_weights`
    fills each rank's rows. From ``init_weights``: the same under torchrun (each rank then reads its rows);
    in one process the folder is loaded as it is (verified, its dtype kept), and modules that ``model.config``
    adds to it (:data:`GROWABLE`) are drawn as :meth:`SHDTTask.init_weights` draws them."""
    folder = cfg.model.init_weights
    if folder and not _distributed() and not cfg.model.config:
        return _with_lora(cfg, SHDT.from_pretrained(folder))
    if folder and not _distributed():
        model = SHDT(**model_config(cfg))
        missing = load_shards_(model, folder, missing_ok=grown_prefixes(cfg), convert=load_converters(cfg))
        init_parameters_(model, cfg.train.seed, names=set(missing))
    else:
        with torch.device("meta"):
            model = SHDT(**model_config(cfg))
    if folder:  # the stored dtype is kept (LoRA's frozen base; trainable weights become fp32 masters)
        from aiprod_core.weights import read_config

        stored = str((read_config(folder).get("_aiprod") or {}).get("dtype", "float32"))
        model.to(getattr(torch, stored, torch.float32))
    return _with_lora(cfg, model)


def _with_lora(cfg: SHDTTrainConfig, model: SHDT) -> SHDT:
    """``model`` with peft LoRA adapters, only they trainable, in mode ``lora``; ``model`` as it is otherwise."""
    if cfg.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lcfg = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules)
        import contextlib

        with torch.device("meta") if next(model.parameters()).is_meta else contextlib.nullcontext():
            model = inject_adapter_in_model(lcfg, model, adapter_name=ADAPTER)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    return model


def merge_lora(state: dict[str, torch.Tensor], scale: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """peft state dict → (plain SHDT state with ``W += scale * B @ A``, adapter tensors alone)."""
    merged, adapters = {}, {}
    for k, v in state.items():
        if ".lora_" in k:
            adapters[k] = v
        elif k.endswith(".base_layer.weight"):
            prefix = k[: -len(".base_layer.weight")]
            a, b = state[f"{prefix}.lora_A.{ADAPTER}.weight"], state[f"{prefix}.lora_B.{ADAPTER}.weight"]
            merged[f"{prefix}.weight"] = (v.float() + scale * (b.float() @ a.float())).to(v.dtype)
        elif ".base_layer." in k:
            merged[k.replace(".base_layer.", ".")] = v
        else:
            merged[k] = v
    return merged, adapters


class SHDTTask(TrainTask):
    def __init__(self, cfg: SHDTTrainConfig):
        self.cfg = cfg
        self.model = build_model(cfg)  # on meta: filled by init_weights once sharded
        pixel = token_pixels(cfg)
        bad = [f"curriculum[{i}]: bucket {w}x{h} is not a multiple of {pixel} px (autoencoder x{SPATIAL} x patch_size "
               f"{pixel // SPATIAL})" for i, st in enumerate(cfg.curriculum)
               for h, w in bucket_sizes(st.resolution, st.aspect_ratios or cfg.data.aspect_ratios) if h % pixel or w % pixel]
        if bad:
            raise ConfigError(bad)
        self.cp_group, self._cp_ready = None, cfg.train.context_parallel == 1
        if cfg.train.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        m = self.model
        if cfg.data.source == "synthetic":
            self.data = SyntheticClips(cfg.data.num_clips, m.in_channels, m.text_dim, cfg.data.text_tokens, cfg.data.seed)
        else:  # epochs without replacement, disjoint across ranks, every rank on the step's bucket
            self.data = CachedClips(cfg.data.cache_dir, cfg.curriculum, seed=cfg.data.seed,
                                    grad_accum=cfg.train.grad_accum_steps, num_workers=cfg.data.num_workers,
                                    prefetch=cfg.data.prefetch, group_size=cfg.train.context_parallel)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def shard(self, name: str, module: nn.Module, fully_shard: Any) -> None:
        # fully_shard carries the trainer's policy: bf16 all-gather (half the traffic), fp32 reduce-scatter
        shard_model(module, fully_shard)

    def init_weights(self, name: str, module: nn.Module, ctx: StepContext) -> None:
        """Each rank fills its own rows: read from ``init_weights`` (LoRA adapters drawn), or drawn from
        ``(train.seed, parameter name, row block)`` — the same model whatever the world size."""
        if self.cfg.model.init_weights:
            missing = load_shards_(module, self.cfg.model.init_weights, missing_ok=("lora_", *grown_prefixes(self.cfg)),
                                   convert=load_converters(self.cfg))
            init_parameters_(module, self.cfg.train.seed, names=set(missing))
        else:
            init_parameters_(module, self.cfg.train.seed)

    def _context_parallel(self, ctx: StepContext) -> None:
        """On first use (the trainer's process group exists by then): groups of K neighbouring ranks."""
        if self._cp_ready:
            return
        k = self.cfg.train.context_parallel
        if ctx.world_size % k:
            raise ConfigError([f"train.context_parallel {k} must divide the number of processes ({ctx.world_size}): "
                               f"torchrun --nproc_per_node {k} or a multiple"])
        mesh = context_parallel_mesh(k, ctx.device.type)
        self.cp_group = mesh.get_group("cp")
        try:
            apply_context_parallel(ctx.raw["model"], self.cp_group)
        except ValueError as err:
            raise ConfigError([f"train.context_parallel: {err}"]) from None
        self._cp_ready = True

    def image_step(self, step: int) -> bool:
        """Whether ``step`` trains on images (T = 1): drawn from (seed, step), the same on every rank."""
        f = self.cfg.images.fraction
        return f > 0 and float(torch.rand(1, generator=shared_generator(self.cfg.train.seed + 17, step))) < f

    def make_batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        _, stage = stage_at(self.cfg.curriculum, step)
        if self.image_step(step):  # one latent frame of the stage's resolution, a larger batch
            stage = stage.model_copy(update={"frames": 1, "batch_size": self.cfg.images.batch_size})
            ratios = stage.aspect_ratios or self.cfg.data.aspect_ratios
            pick = int(torch.randint(len(ratios), (1,), generator=shared_generator(self.cfg.train.seed, step)))
            one = stage.model_copy(update={"aspect_ratios": [ratios[pick]]})
            return self._noised(self.data.batch(one, ratios, generator), generator)
        if isinstance(self.data, CachedClips):
            batch = self.data.batch(stage, self.cfg.data.aspect_ratios, generator, step=step)
        else:  # the bucket is drawn from (seed, step) alone: every rank trains the same token count
            ratios = stage.aspect_ratios or self.cfg.data.aspect_ratios
            pick = int(torch.randint(len(ratios), (1,), generator=shared_generator(self.cfg.train.seed, step)))
            batch = self.data.batch(stage.model_copy(update={"aspect_ratios": [ratios[pick]]}), ratios, generator)
        return self._noised(batch, generator)

    def _noised(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = batch["latents"]
        b = x0.shape[0]
        drop = torch.rand(b, generator=generator) < self.cfg.text_dropout
        batch["text_mask"] = batch["text_mask"] & ~drop[:, None]
        batch["text"] = batch["text"] * (~drop)[:, None, None]
        batch["noise"] = torch.randn(x0.shape, generator=generator)
        batch["sigma"] = training_sigmas(b, self.model.num_tokens(x0.shape), generator, self.cfg.flow)
        p = self.cfg.first_frame.probability if x0.shape[2] > 1 else 0.0
        batch["clean_first"] = torch.rand(b, generator=generator) < p
        return batch

    def _same_batch_in_group(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Context parallelism: the ranks of a group train on one batch, the group's first rank's (shapes
        first: the other ranks' prompts may be padded to another length)."""
        import torch.distributed as dist

        src = dist.get_global_rank(self.cp_group, 0)
        shapes = [{k: (tuple(v.shape), v.dtype) for k, v in batch.items()}]
        dist.broadcast_object_list(shapes, src=src, group=self.cp_group)
        out = {}
        for k, (shape, dtype) in shapes[0].items():
            mine = batch[k] if dist.get_rank() == src else torch.empty(shape, dtype=dtype, device=batch[k].device)
            t = mine.to(torch.uint8) if dtype == torch.bool else mine.contiguous()
            dist.broadcast(t, src=src, group=self.cp_group)
            out[k] = t.bool() if dtype == torch.bool else t
        return out

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Velocity MSE; clips with ``clean_first`` see their first latent frame clean (sigma 0) and are
        not scored on it."""
        clean = batch.get("clean_first")
        if clean is None or not bool(clean.any()):
            return flow_loss(model, batch["latents"], batch["text"], batch["text_mask"], batch["noise"], batch["sigma"])
        x0, noise = batch["latents"], batch["noise"]
        s = batch["sigma"].to(x0.dtype).view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        keep = clean.view(-1, 1, 1, 1).to(x0.dtype)
        xt[:, :, 0] = keep * x0[:, :, 0] + (1 - keep) * xt[:, :, 0]
        v = model(xt, batch["sigma"], batch["text"], batch["text_mask"])
        err = (v.float() - (noise - x0).float()).square()
        weight = torch.ones_like(err[:, :1])
        weight[:, :, 0] = 1 - keep.float()
        return (err * weight).sum() / (weight.sum() * err.shape[1])

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        self._context_parallel(ctx)
        if self.cp_group is not None:
            batch = self._same_batch_in_group(batch)
        with ctx.autocast():
            loss = self.loss(ctx.modules["model"], batch)
        grad_norm = ctx.backward_step("model", loss)
        stage, _ = stage_at(self.cfg.curriculum, ctx.step)
        return {"loss": loss.item(), "grad_norm": grad_norm, "stage": float(stage),
                "shift": token_shift(self.model.num_tokens(batch["latents"].shape), self.cfg.flow),
                "image_step": float(batch["latents"].shape[2] == 1)}

    def eval_batch(self, device: torch.device, step: int | None = None) -> dict[str, torch.Tensor]:
        """A fixed batch (independent of the training draws) at the curriculum stage of ``step`` (None: the
        last stage): its resolution and frames, its first bucket, the empty-prompt rate off, and sigmas
        spread over (0, 1)."""
        current = self.cfg.curriculum[-1] if step is None else stage_at(self.cfg.curriculum, step)[1]
        first_bucket = (current.aspect_ratios or self.cfg.data.aspect_ratios)[:1]
        stage = current.model_copy(update={"batch_size": self.cfg.eval_clips, "aspect_ratios": first_bucket})
        g = torch.Generator().manual_seed(self.cfg.data.seed + 987_654_321)
        batch = self.data.batch(stage, first_bucket, g)
        batch["noise"] = torch.randn(batch["latents"].shape, generator=g)
        n = batch["latents"].shape[0]
        batch["sigma"] = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        return {k: v.to(device) for k, v in batch.items()}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        self._context_parallel(ctx)  # the fixed batch is the same on every rank already
        b = self.eval_batch(ctx.device, min(ctx.step, self.cfg.train.max_steps - 1))
        with ctx.autocast():
            loss = flow_loss(ctx.modules["model"], b["latents"], b["text"], b["text_mask"], b["noise"], b["sigma"])
        return {"loss": float(loss)}

    def export(self, out_dir: Path, ctx: StepContext) -> None:
        if self.cfg.mode == "full":
            ctx.trainer.save_component("model", out_dir / "model")
            return
        from safetensors.torch import save_file

        module = ctx.raw["model"]
        full = ctx.trainer.full_state("model")  # EMA weights when enabled
        if ctx.rank == 0:
            merged, adapters = merge_lora(full, self.cfg.lora.alpha / self.cfg.lora.rank)
            with torch.device("meta"):
                fresh = SHDT.from_config(module.config)
            fresh.load_state_dict(merged, assign=True)
            fresh.save_pretrained(out_dir / "model", dtype=ctx.trainer.export_dtype)
            (out_dir / "lora").mkdir(parents=True, exist_ok=True)
            save_file({k: v.to(ctx.trainer.export_dtype).contiguous() for k, v in adapters.items()},
                      str(out_dir / "lora" / "adapter_model.safetensors"))
            (out_dir / "lora" / "adapter_config.json").write_text(json.dumps(
                {"peft_type": "LORA", "r": self.cfg.lora.rank, "lora_alpha": self.cfg.lora.alpha,
                 "target_modules": self.cfg.lora.target_modules, "base_model": self.cfg.model.init_weights}, indent=2))
            from aiprod_core.store import write_manifest

            write_manifest(out_dir / "lora")  # verified like weights when a pipeline loads it (load_lora)
        if ctx.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def describe(cfg: SHDTTrainConfig) -> list[str]:
    """One line per stage: buckets and token counts (printed at the start of a run)."""
    lines, start = [], 0
    pixel = token_pixels(cfg)
    for i, s in enumerate(cfg.curriculum):
        sizes = bucket_sizes(s.resolution, s.aspect_ratios or cfg.data.aspect_ratios)
        toks = [s.latent_frames * (h // pixel) * (w // pixel) for h, w in sizes]
        lines.append(f"stage {i}: steps {start}-{start + s.steps}, {s.frames} frames, batch {s.batch_size}, "
                     f"buckets {', '.join(f'{w}x{h}' for h, w in sizes)} ({min(toks)}-{max(toks)} tokens)")
        start += s.steps
    return lines


def train(config: SHDTTrainConfig, ctx: Any = None) -> dict[str, Any]:
    """Recipe entry point (``aiprod train``)."""
    train_cfg = config.train
    if ctx is not None and train_cfg.device == "auto":
        train_cfg = train_cfg.model_copy(update={"device": str(ctx.device)})
    task = SHDTTask(config)
    quiet = bool(getattr(ctx, "quiet", False))
    if not quiet:
        n, k = task.model.num_parameters(), task.model.num_parameters(trainable_only=True)
        print(f"shdt {config.mode}: {n:,} parameters, {k:,} trainable")
        for line in describe(config):
            print(line)
    return Trainer(train_cfg, task).fit()
