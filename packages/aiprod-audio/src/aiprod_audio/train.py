"""Training recipe ``audio-codec`` (``aiprod train configs/train/audio_vae.yaml``).

Generator loss = L1 waveform + multi-scale mel (+ optional multi-resolution STFT)
               + commitment + codebook  (+ LSGAN adversarial + feature matching after ``disc_start``).
The discriminator (multi-period + multi-scale STFT) starts training at ``disc_start``: the codec first
learns a stable reconstruction alone (generator-only warm-up), as HiFi-GAN/EnCodec-style recipes do
to keep early GAN gradients from dominating. The loop itself is :class:`aiprod_core.training.Trainer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from aiprod_audio.data import AudioFolder, find_audio_files, load_audio
from aiprod_audio.discriminators import CodecDiscriminator, DiscriminatorConfig
from aiprod_audio.losses import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from aiprod_audio.metrics import codebook_perplexity, mel_distance, si_sdr
from aiprod_audio.model import NACCodec
from aiprod_core.config import StrictModel
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask


class ModelSection(StrictModel):
    preset: str = Field("v1", description="named size from aiprod_audio.presets")
    config: dict[str, Any] = Field({}, description="overrides of the preset's NACConfig fields")
    init_from: str | None = Field(None, description="component folder to fine-tune from (overrides preset)")


class DataSection(StrictModel):
    roots: list[str] = Field(description="folders (searched recursively) or files of wav/flac; LJSpeech/LibriTTS ok")
    segment_seconds: float = Field(1.0, gt=0, description="length of the random training segments")
    sample_rate: int = Field(24000, description="audio is resampled to this rate (must equal the codec's)")


class EvalSection(StrictModel):
    roots: list[str] = Field([], description="held-out wav/flac (default: the first training files)")
    max_files: int = Field(4, ge=1, description="evaluate on at most this many files")
    max_seconds: float = Field(5.0, gt=0, description="evaluate on the first seconds of each file")


class LossWeights(StrictModel):
    waveform: float = Field(1.0, description="L1 on the waveform")
    mel: float = Field(15.0, description="multi-scale mel L1 (DAC's weight)")
    stft: float = Field(0.0, description="multi-resolution STFT (spectral convergence + log magnitude)")
    si_sdr: float = Field(0.0, ge=0, description="negative SI-SDR in dB (the codec floor's metric) of each item "
                          "whose segment is not silent")
    commitment: float = Field(0.25, description="encoder -> code commitment")
    codebook: float = Field(1.0, description="code -> encoder (codebook learning)")
    adversarial: float = Field(1.0, description="LSGAN generator loss")
    feature_matching: float = Field(2.0, description="relative feature matching")


class AudioCodecTrainConfig(StrictModel):
    """``recipe: audio-codec``."""

    model: ModelSection = ModelSection()
    data: DataSection
    eval: EvalSection = EvalSection()
    loss: LossWeights = LossWeights()
    mel_windows: list[int] = Field([32, 64, 128, 256, 512, 1024, 2048], description="mel loss window sizes")
    mel_bins: list[int] = Field([5, 10, 20, 40, 80, 160, 320], description="mel bands per window size")
    stft_ffts: list[int] = Field([512, 1024, 2048], description="STFT loss sizes (used when loss.stft > 0)")
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    disc_start: int = Field(0, ge=0, description="generator-only warm-up: steps before the adversarial losses start")
    disc_lr_scale: float = Field(1.0, gt=0, description="discriminator LR = train.lr x this")
    train: TrainConfig


class AudioCodecTask(TrainTask):
    def __init__(self, cfg: AudioCodecTrainConfig, codec: NACCodec):
        self.cfg = cfg
        self.codec = codec
        self.disc = CodecDiscriminator(cfg.discriminator)
        seg = int(round(cfg.data.segment_seconds * cfg.data.sample_rate))
        seg -= seg % codec.hop_length
        # segment slots by epochs, disjoint across ranks, from the step alone (aiprod_core.data)
        self.data = AudioFolder(cfg.data.roots, cfg.data.sample_rate, max(seg, codec.hop_length), seed=cfg.train.seed,
                                grad_accum=cfg.train.grad_accum_steps)
        self.mel = MultiScaleMelLoss(codec.sample_rate, cfg.mel_windows, cfg.mel_bins)
        self.stft = MultiResolutionSTFTLoss(cfg.stft_ffts)
        files = find_audio_files(cfg.eval.roots or cfg.data.roots)[: cfg.eval.max_files]
        n = int(cfg.eval.max_seconds * codec.sample_rate)
        self.eval_clips = [load_audio(f, codec.sample_rate)[:n] for f in files]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"codec": self.codec, "disc": self.disc}

    def lr_scale(self) -> dict[str, float]:
        return {"disc": self.cfg.disc_lr_scale}

    def make_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return self.data.batch(self.cfg.train.batch_size, generator, step=step)

    def train_step(self, wav: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        w = self.cfg.loss
        self.mel.to(wav.device)
        self.stft.to(wav.device)
        adversarial = ctx.step >= self.cfg.disc_start
        with ctx.autocast():
            out = ctx.modules["codec"](wav)
        fake = out.audio.float()
        l1 = F.l1_loss(fake, wav)
        mel = self.mel(fake, wav)
        loss = w.waveform * l1 + w.mel * mel + w.commitment * out.commitment_loss + w.codebook * out.codebook_loss
        metrics = {
            "l1": l1.item(),
            "mel": mel.item(),
            "commitment": out.commitment_loss.item(),
            "codebook": out.codebook_loss.item(),
        }
        if w.si_sdr > 0:
            sdr = voiced_si_sdr(fake, wav)
            loss = loss - w.si_sdr * sdr
            metrics["si_sdr"] = sdr.item()
        if w.stft > 0:
            stft = self.stft(fake, wav)
            loss = loss + w.stft * stft
            metrics["stft"] = stft.item()
        if adversarial:
            # discriminator: real and (detached) fake in one forward, so DDP sees one pass per backward
            with ctx.autocast():
                logits, _ = ctx.modules["disc"](torch.cat([wav, fake.detach()]))
            d_loss = discriminator_loss(*zip(*[lg.chunk(2) for lg in logits]))
            ctx.backward_step("disc", d_loss)
            with ctx.autocast():  # the discriminator inside the generator's loss: its gradients are discarded
                logits, feats = ctx.raw["disc"](torch.cat([wav, fake]))
            fake_logits = [lg.chunk(2)[1] for lg in logits]
            real_feats = [[f.chunk(2)[0] for f in fs] for fs in feats]
            fake_feats = [[f.chunk(2)[1] for f in fs] for fs in feats]
            g_adv = generator_loss(fake_logits)
            fm = feature_matching_loss(real_feats, fake_feats)
            loss = loss + w.adversarial * g_adv + w.feature_matching * fm
            metrics.update({"d_loss": d_loss.item(), "g_adv": g_adv.item(), "feature_matching": fm.item()})
        ctx.backward_step("codec", loss)
        if ctx.micro == ctx.accum - 1:
            # codebook seeding and dead-code restarts after the optimizer step, outside the forward: under
            # FSDP2 a write inside the forward would land on the gathered copy of the codebook and be lost
            # (the trainer averages metrics over micro-batches: x accum gives the step's count)
            metrics["codes_restarted"] = float(ctx.raw["codec"].restart_dead_codes() * ctx.accum)
        metrics["loss"] = loss.item()
        return metrics

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return evaluate_codec(ctx.modules["codec"], self.eval_clips)  # through DDP / FSDP2


def voiced_si_sdr(estimate: torch.Tensor, reference: torch.Tensor, min_power: float = 1e-6) -> torch.Tensor:
    """Mean SI-SDR (dB, differentiable) over the items ``[B, 1, N]`` whose reference is not silent (mean square
    above ``min_power``): a silent segment (espeak-ng pads with digital silence) has no SI-SDR, and its log
    would blow up. 0 when every item is silent."""
    voiced = reference.pow(2).mean(dim=-1).flatten() > min_power
    sdr = si_sdr(estimate, reference).flatten()
    return torch.where(voiced, sdr, torch.zeros_like(sdr)).sum() / voiced.sum().clamp_min(1)


@torch.no_grad()
def evaluate_codec(codec: NACCodec, clips: list[torch.Tensor], num_codebooks: int | None = None) -> dict[str, float]:
    """Mean SI-SDR (dB), multi-scale mel distance, bitrate and per-codebook perplexity over ``clips``."""
    was_training = codec.training
    codec.eval()
    device = next(codec.parameters()).device
    sdrs, mels, all_codes = [], [], []
    for clip in clips:
        wav = clip.to(device)[None, None]
        codes = codec.encode(wav, num_codebooks)
        rec = codec.decode(codes)[..., : wav.shape[-1]]
        sdrs.append(float(si_sdr(rec.float(), wav)[0, 0]))
        mels.append(mel_distance(rec.float(), wav, codec.sample_rate))
        all_codes.append(codes.cpu())
    codec.train(was_training)
    codes = torch.cat(all_codes, dim=-1)
    ppl = codebook_perplexity(codes, codec.codebook_size)
    out = {
        "si_sdr": sum(sdrs) / len(sdrs),
        "mel_distance": sum(mels) / len(mels),
        "bitrate_kbps": codec.bandwidth_kbps(codes.shape[1]),
        "perplexity_min": min(ppl),
    }
    out.update({f"perplexity_q{i}": p for i, p in enumerate(ppl)})
    return out


def build_codec(cfg: AudioCodecTrainConfig) -> NACCodec:
    if cfg.model.init_from:
        codec = NACCodec.from_pretrained(cfg.model.init_from)
    else:
        codec = NACCodec.from_preset(cfg.model.preset, **cfg.model.config)
    if codec.sample_rate != cfg.data.sample_rate:
        from aiprod_core.errors import ConfigError

        raise ConfigError([f"data.sample_rate: {cfg.data.sample_rate} differs from the codec's {codec.sample_rate}"])
    return codec.train()


def train(config: AudioCodecTrainConfig, ctx: Any = None, stop_after: int | None = None) -> dict[str, Any]:
    """Recipe entry point: ``run(config, ctx)``. Returns the trainer's final metrics."""
    from aiprod_core.device import seed_everything

    seed_everything(config.train.seed)
    codec = build_codec(config)
    task = AudioCodecTask(config, codec)
    metrics = Trainer(config.train, task).fit(stop_after=stop_after)
    if ctx is None or not getattr(ctx, "quiet", False):
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("eval/") and isinstance(v, float)}
        print(f"audio-codec: step {metrics.get('step')} -> {Path(config.train.output_dir) / 'final' / 'codec'} {shown}")
    return metrics
