"""The registered component: ``speech-synthesizer`` / ``fastspeech2-hifigan``.

One module holds the text frontend's symbol inventory (in its config), the acoustic model
(FastSpeech 2 + ProsodyModeler + aligner) and the HiFi-GAN generator, so one folder is one voice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from aiprod_core.errors import AiprodError
from aiprod_core.weights import PretrainedMixin
from aiprod_tts.config import (  # noqa: F401 - re-exported (the configs were defined or imported here)
    AcousticConfig,
    AudioConfig,
    FrontendConfig,
    SynthesizerConfig,
    VocoderConfig,
)
from aiprod_tts.frontend import TextFrontend, split_sentences
from aiprod_tts.model import FastSpeech2
from aiprod_tts.vocoder import HiFiGANGenerator


class FastSpeech2HiFiGAN(PretrainedMixin, nn.Module):
    """Text → 24 kHz speech: TextFrontend → FastSpeech 2 (+ prosody controls) → HiFi-GAN."""

    config_class = SynthesizerConfig
    component_kind = "speech-synthesizer"
    component_name = "fastspeech2-hifigan"

    def __init__(self, *, frontend: dict | None = None, audio: dict | None = None, acoustic: dict | None = None,
                 vocoder: dict | None = None, sentence_pause: float = 0.35, clause_pause: float = 0.2):
        super().__init__()
        cfg = SynthesizerConfig.model_validate(dict(frontend=frontend or {}, audio=audio or {},
                                                    acoustic=acoustic or {}, vocoder=vocoder or {},
                                                    sentence_pause=sentence_pause, clause_pause=clause_pause))
        self.cfg = cfg
        f = cfg.frontend
        self.frontend = TextFrontend(f.symbols, f.mode, f.language, f.on_unknown, f.g2p, f.g2p_weights)
        self.acoustic = FastSpeech2(cfg.acoustic, len(f.symbols), cfg.audio.n_mels)
        self.vocoder = HiFiGANGenerator(cfg.vocoder, cfg.audio.n_mels)

    def _vocode(self, mel: torch.Tensor, chunk_seconds: float | None, context: int,
                first_chunk_seconds: float | None = None) -> Iterator[torch.Tensor]:
        """float32 CPU wav of ``mel [1, n_mels, T]``: whole; chunk by chunk (``chunk_seconds``); or in growing
        chunks (``first_chunk_seconds``, then twice the previous chunk each time, so the first audio waits for
        a short chunk and the context overhead stays small); each chunk vocoded with ``context`` frames each
        side (the generator's receptive field), so the pieces join to the whole-signal result."""
        n = mel.shape[-1]
        frames = lambda sec: max(1, round(sec * self.sample_rate / self.hop_length))  # noqa: E731
        step = frames(chunk_seconds) if chunk_seconds else frames(first_chunk_seconds) if first_chunk_seconds else n
        a = 0
        while a < n:
            b, lo = min(n, a + step), max(0, a - context)
            if not chunk_seconds and n - b <= context:  # growing chunks: a remainder shorter than the context
                b = n  # is part of this chunk
            hi = min(n, b + context)
            wav = self.vocoder(mel[..., lo:hi])[0, 0]
            yield wav[(a - lo) * self.hop_length : (b - lo) * self.hop_length].float().cpu()
            a = b
            if not chunk_seconds:
                step *= 2

    # -- the G2P model travels inside the voice folder (<voice>/g2p), covered by the voice's manifest --------
    G2P_SUBFOLDER: ClassVar[str] = "g2p"

    @classmethod
    def from_pretrained(cls, folder, **kw):
        """Load a voice; its relative ``frontend.g2p_weights`` is resolved against the voice folder (and kept
        absolute in memory, so a copy of the module saved elsewhere still finds it)."""
        module = super().from_pretrained(folder, **kw)
        g2p = module.cfg.frontend.g2p_weights
        if g2p is not None and not Path(g2p).is_absolute():
            module._set_g2p_weights(str((Path(folder) / g2p).resolve()))
        return module

    def _set_g2p_weights(self, path: str | None) -> None:
        front = self.cfg.frontend.model_copy(update={"g2p_weights": path})
        self.cfg = self.cfg.model_copy(update={"frontend": front})
        self.config = self.cfg
        f = self.cfg.frontend
        self.frontend = TextFrontend(f.symbols, f.mode, f.language, f.on_unknown, f.g2p, f.g2p_weights)

    def save_pretrained(self, folder, **kw):
        """Save the voice; its G2P model (config.json + weights) is copied into ``<folder>/g2p`` and the saved
        config names it relative to the voice, so one folder is one voice wherever it goes."""
        g2p = self.cfg.frontend.g2p_weights
        if g2p is None or self.cfg.frontend.mode != "phoneme" or self.cfg.frontend.g2p != "lexicon":
            return super().save_pretrained(folder, **kw)
        src = Path(g2p)
        names = [n for n in ("config.json", "model.safetensors") if (src / n).is_file()]
        if len(names) != 2:
            raise AiprodError(f"frontend.g2p_weights: {src} is not a G2P component folder "
                              "(config.json + model.safetensors)")
        from aiprod_tts.g2p import G2PModel

        G2PModel.load_config(src)  # a G2P component, not another kind
        extra = {**(kw.pop("extra_files", None) or {}),
                 **{f"{self.G2P_SUBFOLDER}/{n}": (src / n).read_bytes() for n in names}}
        saved = self.cfg
        self.cfg = self.config = saved.model_copy(update={"frontend": saved.frontend.model_copy(
            update={"g2p_weights": self.G2P_SUBFOLDER})})
        try:
            return super().save_pretrained(folder, extra_files=extra, **kw)
        finally:
            self.cfg = self.config = saved

    @property
    def sample_rate(self) -> int:
        return self.cfg.audio.sample_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.audio.hop_length

    def _controls(self) -> dict:
        return {"pitch_std": self.cfg.audio.pitch_std, "energy_std": self.cfg.audio.energy_std}

    def forward(self, tokens: torch.Tensor, durations: torch.Tensor | None = None,
                token_lens: torch.Tensor | None = None, speaker: torch.Tensor | None = None,
                **controls) -> dict[str, torch.Tensor]:
        """tokens [B, L] (0 = pad), optional durations [B, L] → {"mel": [B, n_mels, T], "wav": [B, 1, T * hop]}."""
        if token_lens is None:
            token_lens = (tokens != 0).sum(-1).clamp_min(1)
        out = self.acoustic.infer(tokens, token_lens, speaker, durations=durations, **controls, **self._controls())
        return {"mel": out.mel, "wav": self.vocoder(out.mel)}

    def tokenize(self, text: str) -> torch.Tensor:
        enc = self.frontend.encode(text)
        if not enc.ids:
            raise AiprodError(f"text {text[:40]!r}: nothing to say after normalisation")
        return torch.tensor(enc.ids, dtype=torch.long)

    def synthesize(self, text: str, *, speed: float = 1.0, pitch_shift: float = 0.0, pitch_scale: float = 1.0,
                   energy_scale: float = 1.0, speaker: int | None = None) -> torch.Tensor:
        """Speak ``text`` (any length): sentences synthesised one by one and joined with pauses.

        speed > 1 is faster; pitch_shift in semitones; pitch_scale widens (>1) or flattens (<1) the
        intonation; energy_scale multiplies loudness. Returns float32 CPU wav [N] in [-1, 1].
        """
        return torch.cat(list(self.synthesize_stream(text, speed=speed, pitch_shift=pitch_shift,
                                                     pitch_scale=pitch_scale, energy_scale=energy_scale,
                                                     speaker=speaker, first_chunk_seconds=None))).contiguous()

    @torch.no_grad()
    def synthesize_stream(self, text: str, *, speed: float = 1.0, pitch_shift: float = 0.0,
                          pitch_scale: float = 1.0, energy_scale: float = 1.0, speaker: int | None = None,
                          chunk_seconds: float | None = None, context_frames: int | None = None,
                          first_chunk_seconds: float | None = None,
                          first_clause_words: int | None = None) -> Iterator[torch.Tensor]:
        """:meth:`synthesize` as a stream: yields float32 CPU wav pieces (each sentence's audio, then its
        pause) as soon as they are computed, so the first audio is out while the rest of a long text is still
        being synthesised. The concatenation of the pieces equals :meth:`synthesize` (exactly with
        ``first_chunk_seconds=None``, otherwise to float rounding).

        * ``first_chunk_seconds`` (default 0.1 s): the first sentence is vocoded in growing chunks (that
          long, then doubling), so the first audio waits for the acoustic model of the first sentence and one
          short chunk, not for the whole sentence's vocoding; later sentences are vocoded whole (they are
          computed while the first one plays).
        * ``chunk_seconds``: cut every sentence's vocoding into chunks of about that length instead.
        * chunks are vocoded with ``context_frames`` mel frames of context on both sides (default: the
          generator's receptive field, :meth:`HiFiGANGenerator.context_frames`), so the joins match the
          whole-sentence result to float rounding.
        * ``first_clause_words``: a first sentence of more words than this is cut at its first clause
          mark (``,`` ``:`` ``—``) after at least 3 words and synthesised as two (with the clause pause
          between them), so the acoustic model's wait before the first audio is one clause, not a long
          sentence. This changes the audio of such a sentence (its prosody is planned per part); off by
          default (None)."""
        if speed <= 0 or pitch_scale < 0 or energy_scale <= 0:
            raise AiprodError(f"speed and energy_scale must be > 0 and pitch_scale >= 0 "
                              f"(got speed={speed}, pitch_scale={pitch_scale}, energy_scale={energy_scale})")
        sentences = split_sentences(text)
        if not sentences:
            raise AiprodError("text is empty: nothing to say")
        if first_clause_words is not None:
            sentences[:1] = split_first_clause(sentences[0], first_clause_words)
        p = next(self.parameters())
        spk = None if speaker is None else torch.tensor([speaker], device=p.device)
        if spk is not None and not 0 <= speaker < self.cfg.acoustic.n_speakers:
            raise AiprodError(f"speaker {speaker}: this voice has speakers 0..{self.cfg.acoustic.n_speakers - 1}")
        context = self.vocoder.context_frames() if context_frames is None else context_frames
        fade = int(0.005 * self.sample_rate)
        said = False
        for i, enc in enumerate(self._encodings(sentences)):
            if not enc.ids:
                continue
            tokens = torch.tensor([enc.ids], device=p.device)
            out = self.acoustic.infer(tokens, torch.tensor([len(enc.ids)], device=p.device), spk, speed=speed,
                                      pitch_shift=pitch_shift, pitch_scale=pitch_scale, energy_scale=energy_scale,
                                      **self._controls())
            mel = out.mel.to(p.dtype)
            total = mel.shape[-1] * self.hop_length
            ramp = torch.linspace(0, 1, min(fade, total // 2))  # 5 ms fades: no clicks at the joins
            done = 0
            first = None if said or chunk_seconds else first_chunk_seconds
            for wav in self._vocode(mel, chunk_seconds, context, first):
                if done < ramp.numel():  # the fade-in (chunks are longer than the 5 ms ramp)
                    n = min(ramp.numel() - done, wav.numel())
                    wav[:n] *= ramp[done : done + n]
                tail = total - ramp.numel()  # where the fade-out starts
                if done + wav.numel() > tail:
                    a = max(tail - done, 0)
                    wav[a:] *= ramp.flip(0)[done + a - tail : done + wav.numel() - tail]
                done += wav.numel()
                said = True
                yield wav.clamp_(-1, 1)
            if i < len(sentences) - 1:
                pause = self.cfg.sentence_pause if sentences[i].rstrip()[-1:] in ".!?" else self.cfg.clause_pause
                yield torch.zeros(int(pause / speed * self.sample_rate))
        if not said:
            raise AiprodError(f"text {text[:40]!r}: no symbol of the model's inventory to say")

    def _encodings(self, sentences: list[str]):
        """The frontend's encodings: the first sentence alone (its audio does not wait for the G2P of the whole
        text), then the rest in one batch."""
        yield self.frontend.encode(sentences[0])
        if len(sentences) > 1:
            yield from self.frontend.encode_batch(sentences[1:])


_CLAUSE_MARKS = (",", ":", "\u2014")


def split_first_clause(sentence: str, max_words: int, min_words: int = 3) -> list[str]:
    """``[sentence]``, or ``[first clause, rest]`` when the sentence has more than ``max_words`` words and a
    clause mark (``,`` ``:`` ``—``) ends a word after at least ``min_words`` words with at least
    ``min_words`` words after it."""
    words = sentence.split()
    if len(words) <= max_words:
        return [sentence]
    for i in range(min_words - 1, len(words) - min_words):
        if words[i].endswith(_CLAUSE_MARKS):
            return [" ".join(words[: i + 1]), " ".join(words[i + 1 :])]
    return [sentence]
