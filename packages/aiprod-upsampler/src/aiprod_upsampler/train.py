"""Training recipe ``upsampler``: learn latent(half-res video) → latent(full-res video).

``aiprod train configs/train/upsampler.yaml``. Pairs come from :mod:`aiprod_upsampler.data`:
encoded by a video-autoencoder from the registry (``data.source: encode``, the real task) or
synthetic smooth latents (``data.source: synthetic``, no autoencoder, for tests and debugging).
Loss: L1 or MSE on the normalised latents, plus an optional pixel loss through the frozen
decoder (``loss.pixel_weight``). The loop, checkpoints and exact resume are
:mod:`aiprod_core.training`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError, model_validator
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.device import pick_device
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.pipeline import ComponentRef
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask
from aiprod_upsampler import data as D
from aiprod_upsampler.model import LatentUpsampler, LatentUpsamplerConfig, upsample_base
from aiprod_upsampler.presets import PRESETS

NOMINAL_COMPRESSION = 8  # latent pixels per video pixel for the synthetic source (HW-VAE: 8)


class ModelSection(StrictModel):
    """The upsampler to train: a preset (+ overrides), or a component folder to fine-tune (then preset is unused)."""

    preset: str = "v1"
    config: dict[str, Any] = {}
    init_weights: str | None = None

    @model_validator(mode="after")
    def _known(self) -> ModelSection:
        if self.init_weights is not None:
            if self.config:
                raise ValueError("'config' overrides apply to a preset, not to init_weights")
            return self
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} unknown (known: {', '.join(PRESETS)})")
        try:  # every override checked now, before any data is made or weight is read
            LatentUpsamplerConfig.model_validate({**PRESETS[self.preset], **self.config})
        except ValidationError as err:
            bad = "; ".join(f"config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ValueError(bad) from None
        return self


class DataSection(StrictModel):
    """Where the (low, high) latent pairs come from."""

    source: Literal["synthetic", "encode"] = "synthetic"
    video_dir: str | None = Field(None, description="encode: read clips here (PyAV); None = procedural videos")
    frames: int = Field(9, ge=1, description="video frames per clip, 1 + 4k (latent frames: 1 + k)")
    height: int = Field(256, ge=32, description="full-resolution video height in pixels, a multiple of 32")
    width: int = Field(256, ge=32, description="full-resolution video width in pixels, a multiple of 32")
    pool_size: int = Field(256, ge=1, description="encode: training pairs encoded once at start")
    eval_size: int = Field(16, ge=1, description="held-out pairs for evaluation")
    eval_seed: int = Field(1_000_003, description="seed of the held-out pairs (distinct from training draws)")

    @model_validator(mode="after")
    def _shapes(self) -> DataSection:
        problems = []
        if (self.frames - 1) % 4:
            problems.append(f"frames must be 1 + 4k (got {self.frames})")
        for key in ("height", "width"):
            if getattr(self, key) % 32:
                problems.append(f"{key} must be a multiple of 32 (got {getattr(self, key)})")
        if self.video_dir is not None and self.source != "encode":
            problems.append("video_dir needs source: encode")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // 4


class LossSection(StrictModel):
    latent: Literal["l1", "mse"] = Field("l1", description="loss on the normalised latents")
    pixel_weight: float = Field(0.0, ge=0, description="weight of L1(decode(prediction), full-res video)")


class UpsamplerTrainConfig(StrictModel):
    """``recipe: upsampler``."""

    model: ModelSection = ModelSection()
    autoencoder: ComponentRef | None = None
    data: DataSection = DataSection()
    loss: LossSection = LossSection()
    train: TrainConfig

    @model_validator(mode="after")
    def _needs_autoencoder(self) -> UpsamplerTrainConfig:
        if self.autoencoder is None and self.data.source == "encode":
            raise ValueError("data.source 'encode' needs an 'autoencoder' (e.g. name: hwvae, weights: ...)")
        if self.autoencoder is None and self.loss.pixel_weight > 0:
            raise ValueError("loss.pixel_weight > 0 needs an 'autoencoder' to decode the prediction")
        return self


def latent_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


def build_model(section: ModelSection, seed: int) -> LatentUpsampler:
    if section.init_weights is not None:
        return LatentUpsampler.from_pretrained(section.init_weights)
    with torch.random.fork_rng():  # a seeded, side-effect free initialisation
        torch.manual_seed(seed)
        return LatentUpsampler(**{**PRESETS[section.preset], **section.config})


class UpsamplerTask(TrainTask):
    """Pairs in, ``model`` out. ``autoencoder`` (frozen) is needed for ``encode`` and the pixel loss."""

    def __init__(self, cfg: UpsamplerTrainConfig, autoencoder: nn.Module | None = None) -> None:
        self.cfg = cfg
        self.model = build_model(cfg.model, cfg.train.seed)
        self.autoencoder = autoencoder
        channels = self.model.latent_channels
        if autoencoder is not None:
            autoencoder.requires_grad_(False).eval()
            if getattr(autoencoder, "latent_channels", channels) != channels:
                raise AiprodError(
                    f"autoencoder has {autoencoder.latent_channels} latent channels, the upsampler "
                    f"{channels} (set model.config.latent_channels)"
                )
        d = cfg.data
        if d.source == "encode":
            self.pool, self.eval_set = self._encode_pools(autoencoder)
        else:
            self.pool = None
            h, w = d.height // NOMINAL_COMPRESSION, d.width // NOMINAL_COMPRESSION
            self.eval_set = D.synthetic_pairs(
                torch.Generator().manual_seed(d.eval_seed), d.eval_size, channels, d.latent_frames, h, w
            )

    def _encode_pools(self, ae: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        d = self.cfg.data
        if d.video_dir is not None:
            videos = D.read_video_clips(d.video_dir, d.frames, d.height, d.width, d.pool_size + d.eval_size)
            if videos.shape[0] <= d.eval_size:
                raise AiprodError(f"data.video_dir: {videos.shape[0]} clips, need more than eval_size={d.eval_size}")
            train_v, eval_v = videos[: -d.eval_size], videos[-d.eval_size :]
        else:
            train_v = D.procedural_clips(self.cfg.train.seed, d.pool_size, d.frames, d.height, d.width)
            eval_v = D.procedural_clips(d.eval_seed, d.eval_size, d.frames, d.height, d.width)
        pool, eval_set = D.encode_pairs(ae, train_v), D.encode_pairs(ae, eval_v)
        if self.cfg.loss.pixel_weight == 0:  # keep memory for what is used
            pool.pop("video")
        return pool, eval_set

    # -- TrainTask ------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def make_batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = self.cfg.train.batch_size
        if self.pool is not None:  # epochs over the pool, disjoint across ranks, from the step (aiprod_core.data)
            if getattr(self, "_pool_indices", None) is None:
                from aiprod_core.data import StepIndices

                self._pool_indices = StepIndices(self.pool["low"].shape[0], n, self.cfg.train.seed,
                                                 self.cfg.train.grad_accum_steps)
            idx = torch.tensor(self._pool_indices(step))
            return {k: v[idx] for k, v in self.pool.items()}
        d = self.cfg.data
        h, w = d.height // NOMINAL_COMPRESSION, d.width // NOMINAL_COMPRESSION
        return D.synthetic_pairs(generator, n, self.model.latent_channels, d.latent_frames, h, w)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            pred = ctx.modules["model"](batch["low"])
        loss = latent_loss(pred.float(), batch["high"], self.cfg.loss.latent)
        metrics = {"loss_latent": loss.item()}
        if self.cfg.loss.pixel_weight > 0:
            ae = self.autoencoder.to(ctx.device)
            with ctx.autocast():
                video = ae.decode(pred.to(next(ae.parameters()).dtype))
            pixel = F.l1_loss(video.float(), D.to_float(batch["video"]))
            metrics["loss_pixel"] = pixel.item()
            loss = loss + self.cfg.loss.pixel_weight * pixel
        metrics["loss"] = loss.item()
        metrics["grad_norm"] = ctx.backward_step("model", loss)
        return metrics

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        """Held-out L1/MSE of the model and of the nearest/bilinear baselines (lower is better)."""
        return evaluate_upsampler(ctx.raw["model"], self.eval_set, device=ctx.device)


@torch.no_grad()
def evaluate_upsampler(
    model: nn.Module, pairs: dict[str, torch.Tensor], device: torch.device | str = "cpu", batch: int = 8
) -> dict[str, float]:
    """``{l1, mse}`` for the model and ``{l1,mse}_{nearest,bilinear}`` on ``pairs`` (means over elements)."""
    sums: dict[str, float] = {}
    n = pairs["low"].shape[0]
    total = 0
    for i in range(0, n, batch):
        low = pairs["low"][i : i + batch].to(device)
        high = pairs["high"][i : i + batch].to(device).float()
        dtype = next(model.parameters()).dtype
        preds = {
            "": model(low.to(dtype)).float(),
            "_nearest": upsample_base(low, "nearest").float(),
            "_bilinear": upsample_base(low, "bilinear").float(),
        }
        for suffix, p in preds.items():
            sums[f"l1{suffix}"] = sums.get(f"l1{suffix}", 0.0) + (p - high).abs().sum().item()
            sums[f"mse{suffix}"] = sums.get(f"mse{suffix}", 0.0) + (p - high).pow(2).sum().item()
        total += high.numel()
    return {k: v / total for k, v in sums.items()}


def make_task(cfg: UpsamplerTrainConfig, ctx: Any | None = None) -> UpsamplerTask:
    """Load the autoencoder (when named) on the training device in float32 and build the task."""
    ae = None
    if cfg.autoencoder is not None:
        if ctx is None:
            raise ConfigError(["make_task: a RunContext is needed to load 'autoencoder'"])
        from dataclasses import replace

        ae_ctx = replace(ctx, device=pick_device(cfg.train.device), dtype=torch.float32)
        ae = cfg.autoencoder.load(ae_ctx)
    return UpsamplerTask(cfg, ae)


def train(config: UpsamplerTrainConfig, ctx: Any) -> dict[str, Any]:
    """Recipe entry point (``aiprod train``)."""
    result = Trainer(config.train, make_task(config, ctx)).fit()
    out = Path(config.train.output_dir) / "final" / "model"
    print(f"upsampler: step {result['step']}, weights in {out}")
    return result
