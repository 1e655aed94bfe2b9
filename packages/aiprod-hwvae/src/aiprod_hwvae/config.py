"""Config of the HW-VAE, without torch: what ``aiprod validate`` reads (the model is in
:mod:`aiprod_hwvae.model`), and :func:`state_dict_shapes`, what that config builds."""

from __future__ import annotations

from pydantic import Field, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.shapes import Shapes

# level i of the input pyramid is temporal+spatial when True (×4 time, ×8 space in all)
TIME_LEVELS = (True, True, False)


class HWVAEConfig(StrictModel):
    """Every constructor argument of :class:`HWVAE` (saved as ``config.json``)."""

    in_channels: int = Field(3, ge=1, description="video channels (RGB)")
    latent_channels: int = Field(16, ge=1, description="latent channels C")
    encoder_channels: list[int] = Field([128, 256, 512], min_length=3, max_length=3,
                                        description="encoder widths at H/2, H/4, H/8")
    decoder_channels: list[int] = Field([128, 256, 512], min_length=3, max_length=3,
                                        description="decoder widths at H/2, H/4, H/8")
    encoder_blocks: list[int] = Field([2, 2, 2], min_length=3, max_length=3,
                                      description="residual blocks per encoder stage")
    decoder_blocks: list[int] = Field([2, 2, 2], min_length=3, max_length=3,
                                      description="residual blocks per decoder stage")
    mid_blocks: int = Field(2, ge=0, description="residual blocks at the latent resolution (each side)")
    latent_shift: list[float] | None = Field(None, description="per-channel mean of μ (None: 0)")
    latent_scale: list[float] | None = Field(None, description="per-channel std of μ (None: 1)")
    logvar_clamp: tuple[float, float] = Field((-30.0, 20.0), description="clamp of the posterior log-variance")

    @model_validator(mode="after")
    def _check(self) -> HWVAEConfig:
        for name in ("latent_shift", "latent_scale"):
            v = getattr(self, name)
            if v is not None and len(v) != self.latent_channels:
                raise ValueError(f"{name} has {len(v)} values, expected latent_channels={self.latent_channels}")
        if self.latent_scale is not None and any(s <= 0 for s in self.latent_scale):
            raise ValueError("latent_scale values must be > 0")
        return self



def _bands(time: bool) -> int:  # aiprod_hwvae.haar.bands
    return 8 if time else 4


def _stage(s: Shapes, name: str, cin: int, cout: int, n: int) -> None:
    for i in range(n):
        c = cin if i == 0 else cout
        s.param(f"{name}.{i}.norm1.weight", c).conv(f"{name}.{i}.conv1.conv", c, cout, (3, 3, 3))
        s.param(f"{name}.{i}.norm2.weight", cout).conv(f"{name}.{i}.conv2.conv", cout, cout, (3, 3, 3))
        if c != cout:
            s.conv(f"{name}.{i}.skip", c, cout, (1, 1, 1))


def _head(s: Shapes, name: str, cin: int, cout: int) -> None:
    s.param(f"{name}.norm.weight", cin).conv(f"{name}.conv.conv", cin, cout, (3, 3, 3))


def state_dict_shapes(cfg: HWVAEConfig) -> Shapes:
    """State-dict key -> shape of ``HWVAE(**cfg.model_dump())`` (no torch)."""
    s, z, one = Shapes(), cfg.latent_channels, (1, 1, 1)
    n1, n2, n3 = (cfg.in_channels * _bands(t) for t in TIME_LEVELS)
    w1, w2, w3 = cfg.encoder_channels
    b1, b2, b3 = cfg.encoder_blocks
    s.conv("encoder.conv_in.conv", n1, w1, (3, 3, 3))
    _stage(s, "encoder.stage1", w1, w1, b1)
    s.conv("encoder.down1.proj", w1 * _bands(True), w2, one)
    s.conv("encoder.inject2", n2, w2, one)
    _stage(s, "encoder.stage2", w2, w2, b2)
    s.conv("encoder.down2.proj", w2 * _bands(False), w3, one)
    s.conv("encoder.inject3", n3, w3, one)
    _stage(s, "encoder.stage3", w3, w3, b3 + cfg.mid_blocks)
    _head(s, "encoder.head", w3, 2 * z)
    s.conv("encoder.shortcut", n3, 2 * z, one)
    w1, w2, w3 = cfg.decoder_channels
    b1, b2, b3 = cfg.decoder_blocks
    s.conv("decoder.conv_in.conv", z, w3, (3, 3, 3))
    _stage(s, "decoder.stage3", w3, w3, cfg.mid_blocks + b3)
    _head(s, "decoder.head3", w3, n3)
    s.conv("decoder.shortcut", z, n3, one)
    s.conv("decoder.up2.proj", w3, w2 * _bands(False), one)
    _stage(s, "decoder.stage2", w2, w2, b2)
    _head(s, "decoder.head2", w2, n2)
    s.conv("decoder.up1.proj", w2, w1 * _bands(True), one)
    _stage(s, "decoder.stage1", w1, w1, b1)
    _head(s, "decoder.head1", w1, n1)
    return s
