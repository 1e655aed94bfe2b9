"""Config of the nac-rvq codec, without torch: what ``aiprod validate`` reads (the model is in
:mod:`aiprod_audio.model`), and :func:`state_dict_shapes`, what that config builds."""

from __future__ import annotations

from pydantic import Field, field_validator

from aiprod_core.config import StrictModel
from aiprod_core.shapes import Shapes


class NACConfig(StrictModel):
    """Every constructor argument of :class:`NACCodec` (saved as config.json)."""

    sample_rate: int = Field(24000, description="waveform sample rate in Hz")
    strides: list[int] = Field([2, 4, 5, 8], description="encoder downsampling factors; their product is the hop")
    encoder_dim: int = Field(64, description="channels after the first encoder conv; doubled at each stride")
    decoder_dim: int = Field(1024, description="channels at the decoder input; halved at each upsampling")
    latent_dim: int = Field(512, description="D of the continuous latents [B, D, F] fed to the quantizer")
    lstm_layers: int = Field(2, description="LSTM layers at the bottleneck of encoder and decoder (0: none)")
    dilations: list[int] = Field([1, 3, 9], description="dilations of the residual units in each block")
    kernel_size: int = Field(7, description="kernel of the first/last convs and of the residual units")
    depthwise_residual: bool = Field(
        False, description="depthwise dilated convs in the residual units (~8x cheaper units; other weights)"
    )
    num_codebooks: int = Field(8, description="RVQ stages (Q)")
    codebook_size: int = Field(1024, description="codes per codebook (K); 10 bits per code for 1024")
    codebook_dim: int = Field(8, description="dimension of the factorized look-up space (DAC uses 8)")
    quantizer_dropout: float = Field(
        0.5, description="probability that an item trains with a random prefix of codebooks"
    )
    usage_decay: float = Field(0.99, description="EMA decay of the per-code usage counts")
    dead_code_threshold: float = Field(
        0.01, description="a code is restarted when its usage EMA < threshold x mean usage (0: never)"
    )

    @field_validator("strides", "dilations")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(s < 1 for s in v):
            raise ValueError("expected a non-empty list of positive integers")
        return v



def _conv(s: Shapes, name: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
    """``layers.CausalConv1d``: weight-normalised (``weight_v``, ``weight_g``), bias."""
    s.param(f"{name}.weight_v", cout, cin // groups, k).param(f"{name}.weight_g", cout, 1, 1).param(f"{name}.bias", cout)


def _units(s: Shapes, prefix: str, i: int, ch: int, cfg: NACConfig) -> int:
    """The residual units of one block from index ``i`` of a Sequential; returns the next index."""
    for _ in cfg.dilations:
        b = f"{prefix}.{i}.block"
        s.param(f"{b}.0.alpha", 1, ch, 1).param(f"{b}.2.alpha", 1, ch, 1)
        _conv(s, f"{b}.1", ch, ch, cfg.kernel_size, groups=ch if cfg.depthwise_residual else 1)
        _conv(s, f"{b}.3", ch, ch, 1)
        i += 1
    return i


def state_dict_shapes(cfg: NACConfig) -> Shapes:
    """State-dict key -> shape of ``NACCodec(**cfg.model_dump())`` (no torch)."""
    s, k = Shapes(), cfg.kernel_size
    # encoder
    p, ch = "encoder.layers", cfg.encoder_dim
    _conv(s, f"{p}.0", 1, ch, k)
    i = 1
    for stride in cfg.strides:
        i = _units(s, p, i, ch, cfg)
        s.param(f"{p}.{i}.alpha", 1, ch, 1)
        _conv(s, f"{p}.{i + 1}", ch, 2 * ch, 2 * stride)
        i, ch = i + 2, 2 * ch
    if cfg.lstm_layers:
        s.lstm(f"{p}.{i}.lstm", ch, ch, cfg.lstm_layers)
        i += 1
    s.param(f"{p}.{i}.alpha", 1, ch, 1)
    _conv(s, f"{p}.{i + 1}", ch, cfg.latent_dim, 3)
    # quantizer
    for q in range(cfg.num_codebooks):
        st = f"quantizer.stages.{q}"
        _conv(s, f"{st}.in_proj", cfg.latent_dim, cfg.codebook_dim, 1)
        _conv(s, f"{st}.out_proj", cfg.codebook_dim, cfg.latent_dim, 1)
        s.param(f"{st}.codebook", cfg.codebook_size, cfg.codebook_dim).param(f"{st}.usage", cfg.codebook_size)
    # decoder
    p, ch, i = "decoder.layers", cfg.decoder_dim, 0
    if cfg.lstm_layers:
        s.lstm(f"{p}.0.lstm", cfg.latent_dim, cfg.latent_dim, cfg.lstm_layers)
        i = 1
    _conv(s, f"{p}.{i}", cfg.latent_dim, ch, k)
    i += 1
    for stride in reversed(cfg.strides):
        s.param(f"{p}.{i}.alpha", 1, ch, 1)
        t = f"{p}.{i + 1}"  # layers.CausalConvTranspose1d, kernel 2 * stride
        s.param(f"{t}.weight_v", ch, ch // 2, 2 * stride).param(f"{t}.weight_g", ch, 1, 1).param(f"{t}.bias", ch // 2)
        i, ch = i + 2, ch // 2
        i = _units(s, p, i, ch, cfg)
    s.param(f"{p}.{i}.alpha", 1, ch, 1)
    _conv(s, f"{p}.{i + 1}", ch, 1, k)
    return s
