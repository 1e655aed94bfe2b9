"""AIPROD Audio-VAE v1 (``nac-rvq``): a causal neural audio codec with residual vector quantization.

    wav [B, 1, N] @ 24 kHz
      -> Encoder: causal conv, 4 x (3 dilated residual units + strided conv), LSTM, conv -> latents [B, D, F]
      -> ResidualVQ: 8 stages x 1024 codes (factorized 8-d codes on the unit sphere, data-driven
         init + dead-code restart, quantizer dropout)                              -> codes [B, 8, F]
      -> Decoder: LSTM, conv, 4 x (transposed conv + 3 residual units), conv, tanh -> wav [B, 1, F * hop]

Strides (2, 4, 5, 8) give a hop of 320 samples: 75 frames per second at 24 kHz, and
8 codebooks x 10 bits x 75 Hz = 6 kbps (1.5 / 3 / 6 kbps with 2 / 4 / 8 codebooks), as in
EnCodec (Défossez et al. 2022, https://arxiv.org/abs/2210.13438). The convolution stacks follow
SEANet/DAC (Snake activations, dilations 1, 3, 9, channels doubling at each downsampling);
everything is causal, so the codec streams: the algorithmic latency is one hop (320 samples,
13.3 ms) — a frame is emitted once its 320 samples have arrived, and the decoder has no look-ahead.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aiprod_audio.config import NACConfig  # noqa: F401 - re-exported (was defined here)
from aiprod_audio.layers import CausalConv1d, CausalConvTranspose1d, CausalLSTM, ResidualUnit, Snake, StreamingModule
from aiprod_audio.quantizer import ResidualVQ
from aiprod_core.errors import AiprodError
from aiprod_core.weights import PretrainedMixin


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, 1, N'] reconstruction, N' = F * hop
    codes: torch.Tensor  # [B, Q, F] int64
    latents: torch.Tensor  # [B, D, F] continuous, pre-quantization
    commitment_loss: torch.Tensor  # scalar
    codebook_loss: torch.Tensor  # scalar


class Encoder(nn.Module):
    def __init__(self, cfg: NACConfig):
        super().__init__()
        ch = cfg.encoder_dim
        layers: list[nn.Module] = [CausalConv1d(1, ch, cfg.kernel_size)]
        for s in cfg.strides:
            layers += [ResidualUnit(ch, d, cfg.kernel_size, cfg.depthwise_residual) for d in cfg.dilations]
            layers += [Snake(ch), CausalConv1d(ch, 2 * ch, 2 * s, stride=s)]
            ch *= 2
        if cfg.lstm_layers:
            layers.append(CausalLSTM(ch, cfg.lstm_layers))
        layers += [Snake(ch), CausalConv1d(ch, cfg.latent_dim, 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.layers(wav)


class Decoder(nn.Module):
    def __init__(self, cfg: NACConfig):
        super().__init__()
        ch = cfg.decoder_dim
        layers: list[nn.Module] = []
        if cfg.lstm_layers:  # at the latent width: cheaper than at decoder_dim, same receptive field
            layers.append(CausalLSTM(cfg.latent_dim, cfg.lstm_layers))
        layers.append(CausalConv1d(cfg.latent_dim, ch, cfg.kernel_size))
        for s in reversed(cfg.strides):
            layers += [Snake(ch), CausalConvTranspose1d(ch, ch // 2, s)]
            ch //= 2
            layers += [ResidualUnit(ch, d, cfg.kernel_size, cfg.depthwise_residual) for d in cfg.dilations]
        out = CausalConv1d(ch, 1, cfg.kernel_size)
        with torch.no_grad():
            out.weight_g.mul_(0.5)  # start in tanh's linear range, not saturated
        layers += [Snake(ch), out, nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class NACCodec(PretrainedMixin, nn.Module):
    """Neural audio codec, kind ``audio-codec``, name ``nac-rvq`` (see the module docstring)."""

    config_class = NACConfig
    component_kind = "audio-codec"
    component_name = "nac-rvq"

    def __init__(
        self,
        *,
        sample_rate: int = 24000,
        strides: list[int] = (2, 4, 5, 8),
        encoder_dim: int = 64,
        decoder_dim: int = 1024,
        latent_dim: int = 512,
        lstm_layers: int = 2,
        dilations: list[int] = (1, 3, 9),
        kernel_size: int = 7,
        depthwise_residual: bool = False,
        num_codebooks: int = 8,
        codebook_size: int = 1024,
        codebook_dim: int = 8,
        quantizer_dropout: float = 0.5,
        usage_decay: float = 0.99,
        dead_code_threshold: float = 0.01,
    ):
        super().__init__()
        cfg = NACConfig(**{k: v for k, v in locals().items() if k in NACConfig.model_fields})
        self.sample_rate = sample_rate
        self.hop_length = math.prod(strides)
        self.frame_rate = sample_rate / self.hop_length
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.latent_dim = latent_dim
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualVQ(
            dim=latent_dim,
            num_codebooks=num_codebooks,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            quantizer_dropout=quantizer_dropout,
            usage_decay=usage_decay,
            dead_threshold=dead_code_threshold,
        )
        self.decoder = Decoder(cfg)
        self._pending: torch.Tensor | None = None  # streaming: samples not yet forming a whole frame

    # -- rates -----------------------------------------------------------------------
    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    def bandwidth_kbps(self, num_codebooks: int | None = None) -> float:
        return (num_codebooks or self.num_codebooks) * self.bits_per_code * self.frame_rate / 1000

    def codebooks_for_bandwidth(self, kbps: float) -> int:
        """Largest number of codebooks whose bitrate does not exceed ``kbps`` (at least 1)."""
        per = self.bandwidth_kbps(1)
        n = int(math.floor(kbps / per + 1e-9))
        if n < 1:
            raise AiprodError(f"bandwidth {kbps} kbps: below one codebook ({per:g} kbps); choose >= {per:g}")
        return min(n, self.num_codebooks)

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency: one hop (the encoder must see a whole frame; no look-ahead)."""
        return self.hop_length / self.sample_rate

    # -- core passes -----------------------------------------------------------------
    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise AiprodError(f"{type(self).__name__}: expected mono wav [B, 1, N], got shape {tuple(wav.shape)}")
        pad = (-wav.shape[-1]) % self.hop_length
        return F.pad(wav, (0, pad)) if pad and not self.streaming_active else wav

    @property
    def streaming_active(self) -> bool:
        return self._pending is not None

    def _check_codebooks(self, n: int | None) -> int:
        n = self.num_codebooks if n is None else n
        if not 1 <= n <= self.num_codebooks:
            raise AiprodError(f"num_codebooks={n}: expected 1..{self.num_codebooks}")
        return n

    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, 1, N]`` -> continuous latents ``[B, D, ceil(N / hop)]`` (zero-padded at the end)."""
        return self.encoder(self._check_wav(wav))

    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """``wav [B, 1, N]`` in [-1, 1] -> ``codes [B, Q, ceil(N / hop)]`` int64."""
        n = self._check_codebooks(num_codebooks)
        if self.streaming_active:
            return self._stream_encode(wav, n)
        return self.quantizer.encode(self.encode_latents(wav), n)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, Q', F]`` (Q' <= num_codebooks) -> ``wav [B, 1, F * hop]``."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_codebooks:
            raise AiprodError(f"codes: expected [B, 1..{self.num_codebooks}, F], got shape {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise AiprodError(f"codes: values must lie in 0..{self.codebook_size - 1}")
        return self.decoder(self.quantizer.decode(codes.long()))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``[B, D, F]`` -> wav, bypassing the quantizer."""
        return self.decoder(latents)

    def forward(self, wav: torch.Tensor, num_codebooks: int | None = None) -> CodecOutput:
        """Training/reconstruction pass; in training mode quantizer dropout applies when
        ``num_codebooks`` is None."""
        latents = self.encode_latents(wav)
        q = self.quantizer(latents, num_codebooks)
        audio = self.decoder(q.quantized)
        return CodecOutput(audio, q.codes, latents, q.commitment_loss, q.codebook_loss)

    def restart_dead_codes(self) -> int:
        """Seed fresh codebooks and re-seed unused codes from the encoder vectors of the last training
        forward; the training recipe calls it after each optimizer step, outside the forward (so the write
        survives FSDP2's freeing of gathered parameters), on every rank. Returns the codes re-seeded."""
        return self.quantizer.restart_dead_codes()

    # -- streaming -------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self):
        """Inside this context ``encode(chunk)`` and ``decode(codes)`` keep state between calls:
        feed any chunk sizes; ``encode`` returns the codes of the frames completed so far
        (samples left over wait for the next chunk). The result equals the offline pass.

            with codec.streaming():
                codes = torch.cat([codec.encode(c) for c in wav.split(4800, dim=-1)], dim=-1)
        """
        mods = [m for m in self.modules() if isinstance(m, StreamingModule)]
        for m in mods:
            m.reset_state()
            m.streaming = True
        self._pending = torch.zeros(0)
        try:
            yield self
        finally:
            for m in mods:
                m.streaming = False
                m.reset_state()
            self._pending = None

    def _stream_encode(self, chunk: torch.Tensor, n: int) -> torch.Tensor:
        chunk = self._check_wav(chunk)
        if self._pending.numel():
            chunk = torch.cat([self._pending.to(chunk), chunk], dim=-1)
        usable = chunk.shape[-1] - chunk.shape[-1] % self.hop_length
        self._pending = chunk[..., usable:]
        if usable == 0:
            return torch.zeros(chunk.shape[0], n, 0, dtype=torch.long, device=chunk.device)
        return self.quantizer.encode(self.encoder(chunk[..., :usable]), n)

    def flush(self, num_codebooks: int | None = None) -> torch.Tensor:
        """Streaming: zero-pad the pending samples to a whole frame and encode it (end of stream)."""
        n = self._check_codebooks(num_codebooks)
        p = self._pending
        if p is None or p.numel() == 0:
            return torch.zeros(p.shape[0] if p is not None and p.dim() == 3 else 1, n, 0, dtype=torch.long)
        self._pending = p[..., :0]
        return self.quantizer.encode(self.encoder(F.pad(p, (0, self.hop_length - p.shape[-1]))), n)
