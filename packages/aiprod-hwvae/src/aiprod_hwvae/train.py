"""HW-VAE training recipe (``recipe: hwvae``): ``aiprod train configs/train/vae_finetune.yaml``.

Loss (model card): ``λ1·L1 + λp·perceptual(VGG16) + λs·spectral + λkl·KL`` and, behind
``disc.enabled``, ``λg·hinge-GAN`` from a per-frame PatchGAN starting at ``disc.start_step``.
The loop is :class:`aiprod_core.training.Trainer` (atomic checkpoints, exact resume, bf16
autocast, clipping, EMA, JSONL metrics); this file only says what a step is. Each step also
logs the batch PSNR; evaluation decodes fixed clips and logs their PSNR. At the end the
exported component gets its latent statistics (per-channel mean/std of μ over
``stats_clips`` clips) written into its config, so ``encode`` hands the diffusion model
unit-scale latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.pipeline import ComponentRef
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask
from aiprod_hwvae import data as data_mod
from aiprod_hwvae.losses import PatchDiscriminator, PerceptualLoss, hinge_d_loss, psnr, spectral_loss
from aiprod_hwvae.model import HWVAE


class DataConfig(StrictModel):
    source: Literal["procedural", "mp4"] = Field("procedural", description="skimage photo pans/zooms, or mp4 folder")
    path: str | None = Field(None, description="mp4 folder (source: mp4)")
    frames: int = Field(17, ge=1, description="frames per clip, 1 + 4k")
    height: int = Field(256, ge=8, description="clip height, multiple of 8")
    width: int = Field(256, ge=8, description="clip width, multiple of 8")
    stride: int = Field(1, ge=1, description="mp4: keep every stride-th frame")
    num_clips: int | None = Field(None, ge=1, description="procedural: a fixed set of this many clips")
    photos: list[str] | None = Field(None, description="procedural: skimage.data photo names (None: all)")
    num_workers: int = Field(2, ge=0, description="mp4: DataLoader worker processes decoding ahead (0: in the loop)")
    prefetch: int = Field(2, ge=1, description="mp4: batches each worker prepares ahead")
    scale: tuple[float, float] = Field((1.0, 1.25), description="mp4: each clip is resized to this random factor "
                                       "(× the least that covers the crop) before cropping; (1, 1): native pixels")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 1.0 <= v[0] <= v[1]:
            raise ValueError("scale needs 1 <= low <= high (a clip is never shrunk below the crop)")
        return v

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % 4:
            raise ValueError("HW-VAE clips need 1 + 4k frames (5, 9, 17, …)")
        return v

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError("HW-VAE needs multiples of 8")
        return v

    def build(self, seed: int, grad_accum: int = 1):
        if self.source == "mp4":
            if not self.path:
                from aiprod_core.errors import ConfigError

                raise ConfigError(["data.path: required when data.source is mp4"])
            # files by epochs without replacement, disjoint across ranks (aiprod_core.data), decoded by workers
            return data_mod.Mp4FolderSource(self.path, self.frames, self.height, self.width, self.stride, seed=seed,
                                            scale=self.scale, num_workers=self.num_workers,
                                            prefetch=self.prefetch, grad_accum=grad_accum)
        photos = tuple(self.photos) if self.photos else data_mod.PHOTOS
        return data_mod.ProceduralSource(self.frames, self.height, self.width, photos, self.num_clips, seed)


class LossConfig(StrictModel):
    l1: float = Field(1.0, ge=0, description="weight of the pixel L1")
    l2: float = Field(0.0, ge=0, description="weight of the pixel MSE (what PSNR measures; a decoder-only "
                      "fine-tune for PSNR, as Stable Diffusion's ft-MSE decoder)")
    perceptual: float = Field(0.1, ge=0, description="weight of the VGG16 perceptual distance")
    vgg16_weights: str | None = Field(None, description="local VGG16 safetensors (features.<i>.*); None: disabled")
    perceptual_frames: int | None = Field(2, ge=1, description="random frames per clip fed to VGG16 (None: all)")
    spectral: float = Field(0.1, ge=0, description="weight of the spectral L1")
    spectral_mode: Literal["wavelet", "fft"] = "wavelet"
    kl: float = Field(1e-6, ge=0, description="weight of KL(q || N(0, I)) per latent element")
    sample_posterior: bool = Field(True, description="decode a posterior sample (True) or the mean")


class DiscConfig(StrictModel):
    enabled: bool = Field(False, description="add the PatchGAN adversarial term")
    weight: float = Field(0.1, ge=0, description="weight of the generator hinge loss")
    start_step: int = Field(0, ge=0, description="first step of adversarial training")
    channels: int = Field(64, ge=8)
    layers: int = Field(3, ge=1)
    lr_scale: float = Field(1.0, gt=0, description="discriminator LR = train.lr × lr_scale")


class HWVAETrainConfig(StrictModel):
    model: ComponentRef = Field(description="name hwvae; preset (from scratch) or weights (fine-tune)")
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    disc: DiscConfig = DiscConfig()
    eval_clips: int = Field(2, ge=1, description="fixed clips decoded at evaluation (PSNR)")
    stats_clips: int = Field(8, ge=0, description="clips used for the exported latent statistics (0: skip)")
    train_encoder: bool = Field(True, description="False: decoder-only fine-tune of model.weights; the encoder "
                                "and latent statistics are kept, so latents (and a denoiser trained on them) "
                                "stay valid, as Stable Diffusion's ft-MSE decoder")
    train: TrainConfig

    @model_validator(mode="after")
    def _decoder_only_needs_weights(self) -> HWVAETrainConfig:
        if not self.train_encoder and self.model.weights is None:
            raise ValueError("train_encoder: false fine-tunes a trained decoder: set model.weights")
        return self


def build_model(ref: ComponentRef) -> HWVAE:
    """Float32 trainable model from a preset (+ config overrides) or a component folder."""
    if ref.weights is not None:
        return HWVAE.from_pretrained(ref.weights).float().train()
    from aiprod_core.registry import get_registry

    return get_registry().component(ref.kind or "video-autoencoder", ref.name).build(ref.preset, **ref.config).train()


class HWVAETask(TrainTask):
    def __init__(self, cfg: HWVAETrainConfig, model: HWVAE | None = None):
        self.cfg = cfg
        if model is None:
            with torch.random.fork_rng():  # the initial weights depend on train.seed only
                torch.manual_seed(cfg.train.seed)
                model = build_model(cfg.model)
        if not cfg.train_encoder:  # frozen parameters are neither optimised nor checkpointed by the Trainer
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("decoder."))
        self.model = model
        self.source = cfg.data.build(cfg.train.seed, cfg.train.grad_accum_steps)
        self.perceptual = PerceptualLoss(cfg.loss.vgg16_weights, cfg.loss.perceptual_frames) \
            if cfg.loss.perceptual > 0 else None
        self.disc = PatchDiscriminator(cfg.disc.channels, cfg.disc.layers) if cfg.disc.enabled else None
        self._eval_batch: torch.Tensor | None = None

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"model": self.model}
        if self.disc is not None:
            mods["disc"] = self.disc
        return mods

    def lr_scale(self) -> dict[str, float]:
        return {"disc": self.cfg.disc.lr_scale}

    def make_batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        video = data_mod.batch(self.source, self.cfg.train.batch_size, generator, step=step)
        # seed of this step's posterior noise and perceptual frame choice: part of the batch => exact resume
        seed = torch.randint(2**62, (), generator=generator)
        return {"video": video, "seed": seed}

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        cfg, video = self.cfg.loss, batch["video"]
        seed = int(batch["seed"])
        noise = torch.Generator(device=ctx.device).manual_seed(seed)
        with ctx.autocast():
            out = ctx.modules["model"](video, sample_posterior=cfg.sample_posterior, generator=noise)
            rec = out.reconstruction.float()
            l1 = (rec - video).abs().mean()
            kl = out.posterior.kl()
            loss = cfg.l1 * l1 + cfg.kl * kl
            metrics = {"l1": l1.item(), "kl": kl.item()}
            if cfg.l2 > 0:
                l2 = (rec - video).square().mean()
                loss = loss + cfg.l2 * l2
                metrics["l2"] = l2.item()
            if self.perceptual is not None and self.perceptual.enabled:
                self.perceptual.to(ctx.device)
                p = self.perceptual(rec, video, torch.Generator().manual_seed(seed))
                loss = loss + cfg.perceptual * p
                metrics["perceptual"] = p.item()
            if cfg.spectral > 0:
                s = spectral_loss(rec, video, cfg.spectral_mode)
                loss = loss + cfg.spectral * s
                metrics["spectral"] = s.item()
            adversarial = self.disc is not None and ctx.step >= self.cfg.disc.start_step
            if adversarial:  # the discriminator inside the generator's loss: its gradients are discarded
                g = -ctx.raw["disc"](rec).float().mean()
                loss = loss + self.cfg.disc.weight * g
                metrics["g_adv"] = g.item()
        metrics["grad_norm"] = ctx.backward_step("model", loss)
        if adversarial:  # real and (detached) fake in one forward: one DDP pass per backward
            with ctx.autocast():
                logits = ctx.modules["disc"](torch.cat([video, rec.detach()])).float()
            real, fake = logits.chunk(2)
            d = hinge_d_loss(real, fake)
            ctx.backward_step("disc", d)
            metrics["d_loss"] = d.item()
        metrics["loss"] = loss.item()
        metrics["psnr"] = psnr(rec.detach(), video)
        return metrics

    def _fixed_clips(self, n: int, salt: int) -> torch.Tensor:
        return data_mod.batch(self.source, n, torch.Generator().manual_seed(self.cfg.train.seed * 31 + salt))

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        if self._eval_batch is None:
            self._eval_batch = self._fixed_clips(self.cfg.eval_clips, 1_000_003)
        model = ctx.modules["model"]  # through DDP / FSDP2 (sharded weights are gathered)
        video = self._eval_batch.to(ctx.device)
        rec = model.decode(model.encode(video))
        return {"psnr": psnr(rec, video)}

    def export(self, out_dir: Path, ctx: StepContext) -> None:
        folder = out_dir / "model"
        ctx.trainer.save_component("model", folder)  # EMA weights when enabled
        if ctx.rank != 0 or self.cfg.stats_clips == 0 or not self.cfg.train_encoder:
            return  # decoder-only: the latent statistics are the encoder's, unchanged
        model = HWVAE.from_pretrained(folder, device=ctx.device, dtype=torch.float32)
        with torch.no_grad():
            means = [model.encode_posterior(clip[None].to(ctx.device)).mean
                     for clip in self._fixed_clips(self.cfg.stats_clips, 2_000_003)]
        mu = torch.cat([m.transpose(0, 1).flatten(1) for m in means], dim=1).double()  # [C, N]
        shift, scale = mu.mean(1).tolist(), mu.std(1).clamp_min(1e-4).tolist()
        model.config = model.config.model_copy(update={"latent_shift": shift, "latent_scale": scale})
        model.latent_shift, model.latent_scale = shift, scale
        model.save_pretrained(folder, dtype=ctx.trainer.export_dtype)


def fit(cfg: HWVAETrainConfig, stop_after: int | None = None, model: HWVAE | None = None) -> dict[str, Any]:
    """Train (resuming from the latest checkpoint of ``cfg.train.output_dir``)."""
    task = HWVAETask(cfg, model)
    return Trainer(cfg.train, task).fit(stop_after=stop_after)


def train(config: HWVAETrainConfig, ctx) -> dict[str, Any]:
    """Recipe entry point for ``aiprod train``."""
    metrics = fit(config)
    if not ctx.quiet:
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        print(f"hwvae: trained to step {metrics.get('step')} → {Path(config.train.output_dir) / 'final' / 'model'}  {shown}")
    return metrics
