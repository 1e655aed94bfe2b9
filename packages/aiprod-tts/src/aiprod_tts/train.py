"""Recipe ``tts``: the acoustic stage (FastSpeech 2 + ProsodyModeler + aligner) or the vocoder stage
(HiFi-GAN against MPD + MSD), both on the core Trainer (exact resume, checkpoints, metrics.jsonl).

Acoustic loss (FastSpeech 2 + Badlani et al. 2022): mel L1 (decoder and post-net) + duration MSE on
log(d + 1) + token pitch/energy MSE + forward-sum (CTC) alignment loss + binarisation loss (KL between
hard and soft attention, switched on after ``bin_loss_start`` steps and ramped over ``bin_loss_warmup``).
Vocoder loss (HiFi-GAN): LSGAN + 2 × feature matching + 45 × mel L1; ``finetune_on_predicted`` feeds the
acoustic model's teacher-forced mels instead of ground truth (the paper's fine-tuning, §4.4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator

from aiprod_core.config import StrictModel, validate
from aiprod_core.errors import AiprodError
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask
from aiprod_tts.audio import mel_spectrogram
from aiprod_tts.config import VocoderConfig
from aiprod_tts.corpora import CorpusRoot, StepItems, load_corpora
from aiprod_tts.data import FeatureSet, collate_acoustic
from aiprod_tts.model import forward_sum_loss, lengths_to_mask
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN
from aiprod_tts.vocoder import HiFiGANDiscriminator, discriminator_loss, feature_matching_loss, generator_adv_loss


class ModelSection(StrictModel):
    """Where the synthesizer starts from: a preset (+ overrides) or a trained component folder."""

    preset: str | None = "tiny"
    config: dict = {}  # overrides of the preset (top-level sections replace the preset's)
    # component folder (e.g. the acoustic stage's final/tts) — wins over preset; of `config`, only a
    # `frontend` section (its keys update the folder's: e.g. another G2P, same inventory) and a `vocoder`
    # section apply to it: a vocoder config other than the folder's replaces its vocoder by a new one
    # (initialised from train.seed; stage vocoder only), to retrain the vocoder of a voice in another layout
    init_from: str | None = None


class DataSection(StrictModel):
    format: Literal["ljspeech", "libritts"] = "ljspeech"
    root: str | None = None  # corpus folder (or several in `roots`)
    roots: list[CorpusRoot] | None = None  # several corpora, LJSpeech and LibriTTS layouts mixed; speakers kept
    cache_dir: str | None = None  # feature cache; default <output_dir>/features
    max_utterances: int | None = None  # use the first N (quick runs)
    durations_dir: str | None = None  # external durations <id>.txt (e.g. converted from MFA); default: aligner

    @model_validator(mode="after")
    def _one_source(self):
        if (self.root is None) == (self.roots is None):
            raise ValueError("give root (one corpus) or roots (a list of {format, root}), not both")
        return self

    def corpora(self) -> list[CorpusRoot]:
        if self.roots is not None:
            return self.roots
        return [CorpusRoot(format=self.format, root=self.root, max_utterances=self.max_utterances)]


class AcousticLoss(StrictModel):
    mel: float = 1.0
    duration: float = 0.1
    pitch: float = 0.1
    energy: float = 0.1
    align_ctc: float = 1.0
    align_bin: float = 1.0
    bin_loss_start: int = 0  # step at which the binarisation loss switches on
    bin_loss_warmup: int = 100  # steps to ramp it to full weight


class VocoderStage(StrictModel):
    segment_frames: int = 32  # mel frames per training segment (× hop samples of audio)
    disc_width: float = 1.0  # channel multiplier of MPD/MSD (1.0 = paper; tiny configs use 1/16)
    mel_weight: float = 45.0
    finetune_on_predicted: bool = False  # train on teacher-forced acoustic-model mels


class TTSTrainConfig(StrictModel):
    # acoustic | vocoder | both (acoustic into <output_dir>/acoustic, then the vocoder, initialised
    # from the acoustic result, into <output_dir>/vocoder with `vocoder_train`; the voice is vocoder/final/tts)
    stage: Literal["acoustic", "vocoder", "both"]
    model: ModelSection = ModelSection()
    data: DataSection
    acoustic_loss: AcousticLoss = AcousticLoss()
    vocoder: VocoderStage = VocoderStage()
    train: TrainConfig  # the stage's trainer settings (stage both: the acoustic stage's)
    vocoder_train: TrainConfig | None = None  # stage both: the vocoder stage's trainer settings

    @model_validator(mode="after")
    def _both(self):
        if self.stage == "both" and self.vocoder_train is None:
            raise ValueError("stage 'both' needs a vocoder_train section")
        return self


def build_model(cfg: TTSTrainConfig, stats: dict[str, float] | None) -> FastSpeech2HiFiGAN:
    if cfg.model.init_from:
        model = FastSpeech2HiFiGAN.from_pretrained(cfg.model.init_from)
        front = cfg.model.config.get("frontend") or {}
        vocoder = cfg.model.config.get("vocoder")
        if vocoder is not None:
            vocoder = validate(VocoderConfig, vocoder, "model.config.vocoder")  # one line per bad key
        new_vocoder = vocoder is not None and vocoder != model.cfg.vocoder
        if new_vocoder and cfg.stage != "vocoder":
            raise AiprodError(f"model.config.vocoder: differs from the vocoder of {cfg.model.init_from}; a new "
                              "vocoder is trained by stage vocoder (this stage would save it untrained)")
        if (stats and cfg.stage == "acoustic") or front or new_vocoder:  # new statistics / frontend / vocoder
            conf = model.config.model_dump()
            conf["audio"].update(stats if stats and cfg.stage == "acoustic" else {})
            conf["frontend"].update(front)
            state = model.state_dict()
            if new_vocoder:
                conf["vocoder"] = vocoder.model_dump()
                state = {k: v for k, v in state.items() if not k.startswith("vocoder.")}
            model = FastSpeech2HiFiGAN(**conf)
            missing, _ = model.load_state_dict(state, strict=not new_vocoder)
            assert all(k.startswith("vocoder.") for k in missing), missing
        return model.train()
    if cfg.model.preset is None:
        raise AiprodError("model: give preset or init_from")
    from aiprod_tts.presets import PRESETS

    if cfg.model.preset not in PRESETS:
        raise AiprodError(f"model.preset: unknown preset {cfg.model.preset!r} (known: {', '.join(PRESETS)})")
    conf = {**PRESETS[cfg.model.preset], **cfg.model.config}
    conf["audio"] = {**conf.get("audio", {}), **(stats or {})}
    return FastSpeech2HiFiGAN(**conf)


class _CorpusTask(TrainTask):
    def __init__(self, cfg: TTSTrainConfig):
        self.cfg = cfg
        utts, self.speakers = load_corpora(cfg.data.corpora())
        probe = build_model(cfg, None)  # the frontend that encodes the corpus (init_from: with `frontend` overrides)
        cache = Path(cfg.data.cache_dir or Path(cfg.train.output_dir) / "features")
        self.data = FeatureSet(utts, probe.frontend, probe.cfg.audio, cache,
                               Path(cfg.data.durations_dir) if cfg.data.durations_dir else None)
        stats = self.data.statistics() if cfg.stage == "acoustic" else None
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on train.seed only
            torch.manual_seed(cfg.train.seed)
            self.model = build_model(cfg, stats)
            self.disc = HiFiGANDiscriminator(width=cfg.vocoder.disc_width) if cfg.stage == "vocoder" else None
        n_spk = self.model.cfg.acoustic.n_speakers
        if any(u.speaker >= n_spk for u in self.data.utterances):
            raise AiprodError(f"{cfg.data.root or 'data.roots'}: the corpora have {len(self.speakers)} speakers, "
                              f"more than model acoustic.n_speakers = {n_spk}")
        # epochs without replacement, disjoint across ranks, from the step alone (aiprod_core.data)
        self.step_items = StepItems(len(self.data), cfg.train.batch_size, cfg.train.seed, cfg.train.grad_accum_steps)

    def items(self, step: int) -> list[dict[str, torch.Tensor]]:
        return [self.data.item(i) for i in self.step_items(step)]


class AcousticTask(_CorpusTask):
    def __init__(self, cfg: TTSTrainConfig):
        super().__init__(cfg)
        self.model.vocoder.requires_grad_(False)

    def modules(self):
        return {"tts": self.model}

    def make_batch(self, step, generator):
        return collate_acoustic(self.items(step), self.model.cfg.audio)

    def losses(self, model: FastSpeech2HiFiGAN, batch, step: int) -> dict[str, torch.Tensor]:
        w = self.cfg.acoustic_loss
        out = model.acoustic(batch["tokens"], batch["token_lens"], batch["mels"], batch["mel_lens"], batch["pitch"],
                             batch["voiced"], batch["energy"], batch["speaker"], durations=batch.get("durations"))
        fmask = lengths_to_mask(batch["mel_lens"], batch["mels"].shape[2])[:, None].float()
        tmask = lengths_to_mask(batch["token_lens"], batch["tokens"].shape[1]).float()
        n_mel = fmask.sum() * batch["mels"].shape[1]
        mel_l1 = (F.l1_loss(out.mel, batch["mels"], reduction="none") * fmask).sum() / n_mel
        coarse_l1 = (F.l1_loss(out.mel_coarse, batch["mels"], reduction="none") * fmask).sum() / n_mel
        msk = lambda a, b: ((a.float() - b.float()) ** 2 * tmask).sum() / tmask.sum()  # noqa: E731
        dur = msk(out.log_duration_pred, torch.log1p(out.durations.float()))
        pitch, energy = msk(out.pitch_pred, out.pitch_target), msk(out.energy_pred, out.energy_target)
        ctc = forward_sum_loss(out.attn_log_scores, batch["token_lens"], batch["mel_lens"])
        ramp = min(1.0, max(0.0, (step - w.bin_loss_start + 1) / max(1, w.bin_loss_warmup)))
        hard = out.attn_hard
        binl = -(hard * out.attn_soft.clamp_min(1e-12).log()).sum() / hard.sum().clamp_min(1)
        total = (w.mel * (mel_l1 + coarse_l1) + w.duration * dur + w.pitch * pitch + w.energy * energy
                 + w.align_ctc * ctc + w.align_bin * ramp * binl)
        return {"loss": total, "mel_loss": mel_l1, "duration_loss": dur, "pitch_loss": pitch,
                "energy_loss": energy, "align_ctc": ctc, "align_bin": binl,
                "durations_match": (out.durations.sum(-1) == batch["mel_lens"]).all().float()}

    def train_step(self, batch, ctx: StepContext):
        with ctx.autocast():
            losses = self.losses(ctx.modules["tts"], batch, ctx.step)
        ctx.backward_step("tts", losses["loss"])
        return {k: float(v.detach()) for k, v in losses.items()}


class VocoderTask(_CorpusTask):
    def __init__(self, cfg: TTSTrainConfig):
        if cfg.vocoder.finetune_on_predicted and cfg.train.strategy == "fsdp2":
            raise AiprodError("vocoder.finetune_on_predicted: the teacher-forced mels are made outside the "
                              "sharded model; use train.strategy ddp")
        super().__init__(cfg)
        self.model.acoustic.requires_grad_(False)

    def modules(self):
        return {"tts": self.model, "disc": self.disc}

    def make_batch(self, step, generator):
        seg, hop = self.cfg.vocoder.segment_frames, self.model.hop_length
        items = self.items(step)
        mels, wavs = [], []
        predicted = None
        if self.cfg.vocoder.finetune_on_predicted:
            with torch.no_grad():  # teacher-forced mels: same frames as the audio (durations sum to them)
                self.model.acoustic.eval()
                dev = next(self.model.parameters()).device
                b = {k: v.to(dev) for k, v in collate_acoustic(items, self.model.cfg.audio).items()}
                out = self.model.acoustic(b["tokens"], b["token_lens"], b["mels"], b["mel_lens"], b["pitch"],
                                          b["voiced"], b["energy"], b["speaker"], durations=b.get("durations"))
                predicted = out.mel.float().cpu()
        for i, it in enumerate(items):
            mel = it["mel"] if predicted is None else predicted[i, :, : it["mel"].shape[-1]]
            n = mel.shape[-1]
            wav = F.pad(it["wav"], (0, max(0, n * hop - it["wav"].numel())))
            if n < seg:  # short clip: pad with silence
                mel = F.pad(mel, (0, seg - n), value=float(torch.log(torch.tensor(1e-5))))
                wav = F.pad(wav, (0, (seg - n) * hop))
                start = 0
            else:
                start = int(torch.randint(n - seg + 1, (1,), generator=generator))
            mels.append(mel[:, start : start + seg])
            wavs.append(wav[start * hop : (start + seg) * hop])
        return {"mel": torch.stack(mels), "wav": torch.stack(wavs)[:, None]}

    def train_step(self, batch, ctx: StepContext):
        audio = self.model.cfg.audio
        with ctx.autocast():
            fake = ctx.modules["tts"].vocoder(batch["mel"])
            # real and (detached) fake in one forward: one DDP pass per backward
            outs, _ = ctx.modules["disc"](torch.cat([batch["wav"], fake.detach()]))
            d_loss = discriminator_loss(*zip(*[o.chunk(2) for o in outs]))
        ctx.backward_step("disc", d_loss)
        with ctx.autocast():  # the discriminator inside the generator's loss: its gradients are discarded
            outs, feats = ctx.raw["disc"](torch.cat([batch["wav"], fake]))
            fake_outs = [o.chunk(2)[1] for o in outs]
            real_feats = [[f.chunk(2)[0] for f in fs] for fs in feats]
            fake_feats = [[f.chunk(2)[1] for f in fs] for fs in feats]
            mel_l1 = F.l1_loss(mel_spectrogram(fake[:, 0].float(), audio), mel_spectrogram(batch["wav"][:, 0], audio))
            adv, fm = generator_adv_loss(fake_outs), feature_matching_loss(real_feats, fake_feats)
            g_loss = adv + fm + self.cfg.vocoder.mel_weight * mel_l1
        ctx.backward_step("tts", g_loss)
        return {k: float(v.detach()) for k, v in
                {"loss": g_loss, "mel_loss": mel_l1, "adv_loss": adv, "fm_loss": fm, "disc_loss": d_loss}.items()}

    def export(self, out_dir: Path, ctx: StepContext) -> None:
        ctx.trainer.save_component("tts", out_dir / "tts")  # the discriminators are training-only


def make_task(cfg: TTSTrainConfig) -> TrainTask:
    if cfg.stage == "both":
        raise AiprodError("make_task: stage 'both' runs two tasks; use train()")
    return AcousticTask(cfg) if cfg.stage == "acoustic" else VocoderTask(cfg)


def train(config: TTSTrainConfig, ctx=None, stop_after: int | None = None) -> dict:
    """Recipe entry point (``aiprod train``): fit, export ``<output_dir>/final/tts``, return final metrics."""
    if ctx is not None and getattr(ctx, "device", None) is not None:
        config = config.model_copy(update={
            "train": _on_device(config.train, ctx.device),
            "vocoder_train": config.vocoder_train and _on_device(config.vocoder_train, ctx.device)})
    if config.stage != "both":
        return Trainer(config.train, make_task(config)).fit(stop_after=stop_after)
    out = Path(config.train.output_dir)
    acoustic = config.model_copy(update={
        "stage": "acoustic", "train": config.train.model_copy(update={"output_dir": str(out / "acoustic")})})
    m1 = Trainer(acoustic.train, make_task(acoustic)).fit()
    vocoder = config.model_copy(update={
        "stage": "vocoder", "model": config.model.model_copy(update={"init_from": str(out / "acoustic/final/tts")}),
        "data": config.data.model_copy(update={"cache_dir": config.data.cache_dir or str(out / "acoustic/features")}),
        "train": config.vocoder_train.model_copy(update={"output_dir": str(out / "vocoder")})})
    m2 = Trainer(vocoder.train, make_task(vocoder)).fit(stop_after=stop_after)
    return {**{f"acoustic/{k}": v for k, v in m1.items()}, **{f"vocoder/{k}": v for k, v in m2.items()}}


def _on_device(train_cfg: TrainConfig, device) -> TrainConfig:
    if train_cfg.device != "auto":
        return train_cfg
    return train_cfg.model_copy(update={"device": str(device)})
