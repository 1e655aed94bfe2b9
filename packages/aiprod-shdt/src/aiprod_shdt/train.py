"""Training recipe ``shdt``: phase 1 (LoRA through peft) and phase 2 (full fine-tune), one trainer.

``aiprod train configs/train/lora_phase1.yaml`` / ``configs/train/full_finetune.yaml``.

- Objective: rectified-flow velocity MSE (:mod:`aiprod_shdt.diffusion`) with shifted logit-normal noise
  levels (the shift follows the stage's token count), and text dropout for classifier-free guidance.
- Curriculum: ``curriculum`` is a list of stages (resolution, frames, steps, batch size) switched at
  step boundaries; each batch comes from one aspect-ratio bucket (:mod:`aiprod_shdt.data`).
- Data: cached latents + text embeddings (safetensors), or synthetic clips for tests.
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
from aiprod_shdt.data import CachedClips, Stage, SyntheticClips, bucket_sizes, parse_ratio, stage_at
from aiprod_shdt.diffusion import FlowConfig, flow_loss, token_shift, training_sigmas
from aiprod_shdt.model import SHDT
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


class SHDTTrainConfig(StrictModel):
    model: ModelSection = ModelSection()
    mode: Literal["full", "lora"] = "full"
    lora: LoraSection = LoraSection()
    curriculum: list[Stage] = Field(min_length=1)
    data: DataSection = DataSection()
    flow: FlowConfig = FlowConfig()
    text_dropout: float = Field(0.1, ge=0, le=1, description="probability of training on the empty prompt (CFG)")
    eval_clips: int = Field(4, ge=1, description="clips in the fixed evaluation batch (the current stage's "
                            "resolution and frames, its first bucket)")
    train: TrainConfig

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
        if problems:
            raise ValueError("; ".join(problems))
        return self


def build_model(cfg: SHDTTrainConfig) -> SHDT:
    if cfg.model.init_weights:
        if cfg.model.config:
            raise ConfigError([f"model.config: overrides do not apply to init_weights {cfg.model.init_weights}"])
        model = SHDT.from_pretrained(cfg.model.init_weights)
    else:
        model = SHDT(**{**PRESETS[cfg.model.preset], **cfg.model.config})
    if cfg.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lcfg = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules)
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
        with torch.random.fork_rng(devices=[]):  # initial weights are a function of train.seed alone
            torch.manual_seed(cfg.train.seed)
            self.model = build_model(cfg)
        if cfg.train.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        m = self.model
        if cfg.data.source == "synthetic":
            self.data = SyntheticClips(cfg.data.num_clips, m.in_channels, m.text_dim, cfg.data.text_tokens, cfg.data.seed)
        else:  # epochs without replacement, disjoint across ranks, every rank on the step's bucket
            self.data = CachedClips(cfg.data.cache_dir, cfg.curriculum, seed=cfg.data.seed,
                                    grad_accum=cfg.train.grad_accum_steps, num_workers=cfg.data.num_workers,
                                    prefetch=cfg.data.prefetch)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def shard(self, name: str, module: nn.Module, fully_shard: Any) -> None:
        # fully_shard carries the trainer's policy: bf16 all-gather (half the traffic), fp32 reduce-scatter
        shard_model(module, fully_shard)

    def make_batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        _, stage = stage_at(self.cfg.curriculum, step)
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
        return batch

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            loss = flow_loss(ctx.modules["model"], batch["latents"], batch["text"], batch["text_mask"],
                             batch["noise"], batch["sigma"])
        grad_norm = ctx.backward_step("model", loss)
        stage, _ = stage_at(self.cfg.curriculum, ctx.step)
        return {"loss": loss.item(), "grad_norm": grad_norm, "stage": float(stage),
                "shift": token_shift(self.model.num_tokens(batch["latents"].shape), self.cfg.flow)}

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
    for i, s in enumerate(cfg.curriculum):
        sizes = bucket_sizes(s.resolution, s.aspect_ratios or cfg.data.aspect_ratios)
        toks = [s.latent_frames * (h // 16) * (w // 16) for h, w in sizes]
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
