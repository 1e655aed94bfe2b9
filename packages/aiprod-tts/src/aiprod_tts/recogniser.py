"""A small CTC phoneme recogniser: the offline intelligibility measure of the voices.

What it hears is scored in phonemes of the voices' own frontend: the normalised text goes through the
pronouncing lexicon (CMUdict + the project's G2P model, :class:`aiprod_tts.lexicon.LexiconPhonemizer`),
whose IPA is cut into the lexicon's phones (stress marks, punctuation and word breaks dropped), so the
phoneme error rate (PER: edits / reference phones) of synthesized speech is measured against the
phonemes the voice was asked to say, and read beside the same rate on the reference recordings.

Model: log-mel (the features of :mod:`aiprod_tts.audio`, floored 60 dB under the clip's peak and
normalised per clip and channel) → a strided convolution → residual convolution blocks → a linear CTC
head, greedy decoding. No recurrent layer: its context is about half a second, so it recognises the
sounds rather than guessing the sentence from the few phrases of the training grammar.

Component: ``phoneme-recogniser`` / ``ctc-conv``. Recipe ``phoneme_recogniser``
(``aiprod train configs/train/tiny/phoneme_recogniser_demo.yaml``) on the core Trainer; its held-out
PER: ``aiprod tts per FOLDER DATA``; ``aiprod eval VOICE DATA`` reports it beside the voice's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from aiprod_core.config import StrictModel
from aiprod_core.errors import AiprodError
from aiprod_core.training import StepContext, TrainConfig, Trainer, TrainTask
from aiprod_core.weights import PretrainedMixin
from aiprod_tts.audio import AudioConfig, mel_spectrogram
from aiprod_tts.g2p import edit_distance
from aiprod_tts.lexicon import _CONSONANT_IPA, _UNSTRESSED_IPA, _VOWEL_IPA

#: the phones the lexicon frontend writes (IPA): 15 vowels, 3 reduced vowels, 24 consonants
PHONE_SET = sorted({*_VOWEL_IPA.values(), *_UNSTRESSED_IPA.values(), *_CONSONANT_IPA.values()})
BLANK = 0  # the CTC blank; phone i is output i + 1


def ipa_to_phones(ipa: str, phones: Sequence[str] = PHONE_SET) -> list[str]:
    """Cut an IPA string into phones, longest match first; other symbols (stress, spaces, punctuation) drop."""
    by_length = sorted(phones, key=len, reverse=True)
    out, i = [], 0
    while i < len(ipa):
        p = next((p for p in by_length if ipa.startswith(p, i)), None)
        if p is None:
            i += 1
        else:
            out.append(p)
            i += len(p)
    return out


def text_phones(texts: Sequence[str], g2p_weights: str | Path | None = None) -> list[list[str]]:
    """The phones a lexicon-frontend voice is asked to say for each text (normalised first)."""
    from aiprod_tts.frontend import normalize_text
    from aiprod_tts.lexicon import LexiconPhonemizer

    ipa = LexiconPhonemizer(g2p_weights).phonemize([normalize_text(t) for t in texts])
    return [ipa_to_phones(s) for s in ipa]


def phoneme_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> tuple[int, int]:
    """(edits, reference phones): Levenshtein distance in phones and the reference's length."""
    return edit_distance(reference, hypothesis), len(reference)


def phoneme_error_rate(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Corpus PER: all edits over all reference phones."""
    edits = phones = 0
    for r, h in zip(references, hypotheses, strict=True):
        e, n = phoneme_errors(r, h)
        edits, phones = edits + e, phones + n
    return edits / max(phones, 1)


def ctc_greedy(ids: Sequence[int], blank: int = BLANK) -> list[int]:
    """Best-path CTC decoding of frame ids: merge repeats, then drop blanks."""
    out, prev = [], None
    for i in ids:
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


_DB_PER_NEPER = 20 / 2.302585  # a natural-log magnitude step in dB


def normalise(mel: torch.Tensor, floor: float) -> torch.Tensor:
    """Log-mel [n_mels, T] floored ``floor`` (natural log) under its peak, then zero mean and unit variance
    per channel over the clip (a fixed colouring of the voice or the channel cancels out)."""
    mel = mel.clamp_min(mel.max() - floor)
    return (mel - mel.mean(-1, keepdim=True)) / mel.std(-1, keepdim=True).clamp_min(1e-3)


def _gaussian_blur(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    """Blur [F, T] along ``dim`` with a Gaussian of ``sigma`` bins (edges replicated)."""
    if sigma < 0.05:
        return x
    r = max(1, int(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    rows = x if dim == 1 else x.T  # [rows, length]: blur along the last axis
    out = F.conv1d(F.pad(rows[:, None], (r, r), mode="replicate"), (k / k.sum())[None, None])[:, 0]
    return out if dim == 1 else out.T


def _warp_frequency(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Stretch [F, T] along the mel axis by ``alpha`` (a vocal tract length change), linear interpolation."""
    pos = (torch.arange(x.shape[0], dtype=x.dtype) / alpha).clamp(0, x.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(x.shape[0] - 1)
    w = (pos - lo)[:, None]
    return x[lo] * (1 - w) + x[hi] * w


class RecogniserConfig(StrictModel):
    channels: int = 128
    blocks: int = 5  # residual convolution blocks after the strided input convolution
    kernel: int = 5
    stride: int = 2  # time reduction of the input convolution (93.75 -> 46.9 frames/s at 24 kHz, hop 256)
    dropout: float = 0.1
    floor_db: float = 60.0  # log-mels are floored this far under the clip's peak (silence looks alike)
    audio: AudioConfig = AudioConfig()
    phones: list[str] = Field(default_factory=lambda: list(PHONE_SET))


class _Block(nn.Module):
    """x + dropout(GELU(conv(layernorm(x)))), on [B, C, T]."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return x + self.drop(F.gelu(self.conv(h)))


class PhonemeRecogniser(PretrainedMixin, nn.Module):
    """Log-mel → phone posteriors (CTC, blank = 0), greedy decoding."""

    config_class = RecogniserConfig
    component_kind = "phoneme-recogniser"
    component_name = "ctc-conv"

    def __init__(self, *, channels: int = 128, blocks: int = 5, kernel: int = 5, stride: int = 2,
                 dropout: float = 0.1, floor_db: float = 60.0, audio: AudioConfig | dict | None = None,
                 phones: list[str] | None = None):
        super().__init__()
        self.audio = AudioConfig.model_validate(audio or {})
        self.phones = list(phones or PHONE_SET)
        self.stride, self.floor = stride, floor_db / _DB_PER_NEPER
        self.inp = nn.Conv1d(self.audio.n_mels, channels, kernel, stride=stride, padding=kernel // 2)
        self.blocks = nn.ModuleList(_Block(channels, kernel, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, len(self.phones) + 1)

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    # -- features ------------------------------------------------------------------------------
    def features(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Mono wav [N] → normalised log-mel [n_mels, frames] (resampled to the model's rate first)."""
        return normalise(self.log_mel(wav, sample_rate), self.floor)

    def log_mel(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Mono wav [N] → natural-log mel [n_mels, frames] of :mod:`aiprod_tts.audio`, at the model's rate."""
        wav = torch.as_tensor(wav, dtype=torch.float32).reshape(-1)
        if sample_rate is not None and sample_rate != self.sample_rate:
            import torchaudio.functional as AF

            wav = AF.resample(wav, sample_rate, self.sample_rate)
        if wav.numel() <= self.audio.n_fft // 2:  # shorter than the STFT's reflect padding (a near-silent voice)
            wav = F.pad(wav, (0, self.audio.n_fft // 2 + 1 - wav.numel()))
        return mel_spectrogram(wav.clamp(-1, 1), self.audio)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths - 1) // self.stride + 1

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, T] → log-probabilities [B, T', n_phones + 1]."""
        x = F.gelu(self.inp(mel.to(self.inp.weight.dtype)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x.transpose(1, 2))).float().log_softmax(-1)

    @torch.no_grad()
    def recognise(self, wavs: Sequence[torch.Tensor], sample_rate: int | None = None) -> list[list[str]]:
        """The phones heard in each mono wav (greedy CTC decoding), one clip at a time."""
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for wav in wavs:
            logp = self(self.features(wav, sample_rate)[None].to(dev))[0]
            out.append([self.phones[i - 1] for i in ctc_greedy(logp.argmax(-1).tolist())])
        self.train(was_training)
        return out


def default_recogniser() -> Path | None:
    """The demo recogniser that ships with the repository, found as the demo voice is
    (``AIPROD_PHONEME_RECOGNISER`` names another folder); None in a wheel install."""
    from aiprod_tts.cli import shipped_weights

    return shipped_weights("phoneme_recogniser", "AIPROD_PHONEME_RECOGNISER")


def evaluate_recogniser(folder: str | Path, data: str | Path, limit: int = 64, g2p_weights: str | Path | None = None,
                        device: str = "cpu") -> dict:
    """PER of a recogniser folder on an LJSpeech-layout folder (``DATA/heldout`` when there is one)."""
    from aiprod_tts.data import load_ljspeech, read_wav

    model = PhonemeRecogniser.from_pretrained(folder, device=device, dtype=torch.float32)
    data = Path(data)
    utts = load_ljspeech(data / "heldout" if (data / "heldout").is_dir() else data)[:limit]
    refs = text_phones([u.text for u in utts], g2p_weights)
    hyps = model.recognise([read_wav(u.wav, model.sample_rate) for u in utts])
    return {"per": phoneme_error_rate(refs, hyps), "utterances": len(utts)}


# ---------------------------------------------------------------------------------------
# Recipe ``phoneme_recogniser``
# ---------------------------------------------------------------------------------------
class RecogniserData(StrictModel):
    root: str  # LJSpeech-layout training folder (metadata.csv + wavs/)
    heldout: str | None = None  # LJSpeech-layout folder scored at each evaluation (eval/per)
    g2p_weights: str | None = None  # the G2P folder of the voices' frontend, for words outside CMUdict


class Augment(StrictModel):
    """Applied to each training clip's log-mel, drawn from the step's generator: what a voice other than the
    recordings' (a synthesizer's smoothed mels, another vocal tract, a noise floor) changes, so the recogniser
    hears phones rather than the one voice it was trained on."""

    floor_db: float = Field(0.0, ge=0)  # the floor under the peak is drawn in [model floor - floor_db, model floor]
    blur_time: float = Field(0.0, ge=0)  # Gaussian blur along time, sigma drawn in [0, blur_time] frames
    blur_freq: float = Field(0.0, ge=0)  # ... and along the mel axis, in [0, blur_freq] channels
    warp: float = Field(0.0, ge=0, lt=1)  # mel axis stretched by a factor in [1 - warp, 1 + warp]
    stretch: float = Field(0.15, ge=0, lt=1)  # time stretch by a factor in [1 - s, 1 + s]
    time_masks: int = Field(2, ge=0)
    time_mask: int = Field(8, ge=0)  # frames, at most
    freq_masks: int = Field(2, ge=0)
    freq_mask: int = Field(10, ge=0)  # mel channels, at most
    noise: float = Field(0.1, ge=0)  # std of the Gaussian noise added (drawn in [0, noise] with random_noise)
    random_noise: bool = False


class RecogniserTrainConfig(StrictModel):
    model: RecogniserConfig = RecogniserConfig()
    data: RecogniserData
    augment: Augment = Augment()
    train: TrainConfig


def _load_split(model: PhonemeRecogniser, root: str, g2p_weights: str | None) -> tuple[list, list]:
    from aiprod_tts.data import load_ljspeech, read_wav

    utts = load_ljspeech(root)
    phones = text_phones([u.text for u in utts], g2p_weights)
    index = {p: i + 1 for i, p in enumerate(model.phones)}
    mels = [model.log_mel(read_wav(u.wav, model.sample_rate)) for u in utts]
    return mels, [torch.tensor([index[p] for p in ps], dtype=torch.long) for ps in phones]


class RecogniserTask(TrainTask):
    def __init__(self, cfg: RecogniserTrainConfig):
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on train.seed only
            torch.manual_seed(cfg.train.seed)
            self.model = PhonemeRecogniser(**cfg.model.model_dump())
        self.mels, self.targets = _load_split(self.model, cfg.data.root, cfg.data.g2p_weights)
        self.heldout = None
        if cfg.data.heldout:
            mels, targets = _load_split(self.model, cfg.data.heldout, cfg.data.g2p_weights)
            self.heldout = (mels, [[self.model.phones[i - 1] for i in t.tolist()] for t in targets])

    def modules(self):
        return {"recogniser": self.model}

    def _augment(self, mel: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Log-mel [F, T] → the normalised, augmented input of one training clip."""
        a = self.cfg.augment
        u = lambda: float(torch.rand((), generator=g))  # noqa: E731
        floor = self.model.floor - u() * a.floor_db / _DB_PER_NEPER
        if a.blur_time:
            mel = _gaussian_blur(mel, u() * a.blur_time, dim=1)
        if a.blur_freq:
            mel = _gaussian_blur(mel, u() * a.blur_freq, dim=0)
        if a.warp:
            mel = _warp_frequency(mel, 1 - a.warp + 2 * a.warp * u())
        mel = normalise(mel, floor)
        if a.stretch:
            frames = max(1, round(mel.shape[-1] * (1 - a.stretch + 2 * a.stretch * u())))
            mel = F.interpolate(mel[None], size=frames, mode="linear", align_corners=False)[0]
        mel = mel.clone()
        for _ in range(a.time_masks):
            w = int(u() * (a.time_mask + 1))
            t0 = int(u() * max(1, mel.shape[-1] - w))
            mel[:, t0: t0 + w] = 0
        for _ in range(a.freq_masks):
            w = int(u() * (a.freq_mask + 1))
            f0 = int(u() * max(1, mel.shape[0] - w))
            mel[f0: f0 + w] = 0
        if a.noise:
            mel = mel + a.noise * (u() if a.random_noise else 1.0) * torch.randn(mel.shape, generator=g)
        return mel

    def make_batch(self, step, generator):
        idx = torch.randint(len(self.mels), (self.cfg.train.batch_size,), generator=generator).tolist()
        mels = [self._augment(self.mels[i], generator) for i in idx]
        lengths = torch.tensor([m.shape[-1] for m in mels])
        batch = torch.zeros(len(mels), mels[0].shape[0], int(lengths.max()))
        for b, m in enumerate(mels):
            batch[b, :, : m.shape[-1]] = m
        targets = [self.targets[i] for i in idx]
        return {"mel": batch, "lengths": lengths, "targets": torch.cat(targets),
                "target_lengths": torch.tensor([t.numel() for t in targets])}

    def train_step(self, batch, ctx: StepContext):
        with ctx.autocast():
            logp = ctx.modules["recogniser"](batch["mel"])  # [B, T', C] float32
        out_lengths = self.model.output_lengths(batch["lengths"])
        loss = F.ctc_loss(logp.transpose(0, 1), batch["targets"], out_lengths, batch["target_lengths"],
                          blank=BLANK, zero_infinity=True)
        ctx.backward_step("recogniser", loss)
        return {"loss": float(loss.detach())}

    def evaluate(self, ctx: StepContext):
        if self.heldout is None:
            return {}
        model, raw = ctx.modules["recogniser"], ctx.raw["recogniser"]  # the call goes through DDP / FSDP2
        was_training = raw.training
        raw.eval()
        hyps = []
        with torch.no_grad():
            for mel in self.heldout[0]:
                ids = model(normalise(mel, raw.floor)[None].to(ctx.device))[0].argmax(-1).tolist()
                hyps.append([raw.phones[i - 1] for i in ctc_greedy(ids)])
        raw.train(was_training)
        return {"per": phoneme_error_rate(self.heldout[1], hyps)}


def train(config: RecogniserTrainConfig, ctx=None, stop_after: int | None = None) -> dict:
    """Recipe entry point (``aiprod train``): fit, export ``<output_dir>/final/recogniser``."""
    if ctx is not None and getattr(ctx, "device", None) is not None and config.train.device == "auto":
        config = config.model_copy(update={"train": config.train.model_copy(update={"device": str(ctx.device)})})
    for path in (config.data.root, config.data.heldout):
        if path is not None and not (Path(path) / "metadata.csv").is_file():
            raise AiprodError(f"data: {path}/metadata.csv not found (an LJSpeech-layout folder: "
                              "python tools/make_tts_corpus.py OUT -n N --heldout M)")
    return Trainer(config.train, RecogniserTask(config)).fit(stop_after=stop_after)
