"""Config of the SHDT, without torch: what ``aiprod validate`` reads (the model is in
:mod:`aiprod_shdt.model`), and :func:`state_dict_shapes`, what that config builds."""

from __future__ import annotations

from pydantic import Field, model_validator

from aiprod_core.config import StrictModel
from aiprod_core.shapes import Shapes


class SHDTConfig(StrictModel):
    """Constructor arguments of :class:`SHDT` (saved as ``config.json``)."""

    in_channels: int = Field(16, ge=1, description="latent channels of the video autoencoder (HW-VAE: 16)")
    patch_size: int = Field(2, ge=1, description="spatial patch side in latent pixels (tokens = T*H*W/p^2)")
    hidden_size: int = Field(3840, ge=8, description="transformer width")
    num_heads: int = Field(30, ge=1, description="attention heads; head_dim = hidden_size / num_heads")
    depth_double: int = Field(20, ge=0, description="dual-stream (video/text own weights) blocks")
    depth_single: int = Field(38, ge=0, description="single-stream (shared weights) blocks")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / hidden_size")
    text_dim: int = Field(4096, ge=1, description="width of the text encoder embeddings")
    rope_axes_dim: tuple[int, int, int] = Field((16, 56, 56), description="head_dim split over (t, h, w)")
    rope_theta: float = Field(10_000.0, gt=0, description="RoPE base frequency")
    abs_pos_theta: float = Field(0.0, ge=0, description="0: positions by RoPE only (the default). > 0: also add a "
                                 "fixed sinusoid of each video token's (t, h, w) index, with this base, to the "
                                 "token: an absolute position, no parameters (see SHDT.__init__)")
    guidance_embed: bool = Field(False, description="embed a guidance strength (guidance-distilled model)")
    timestep_scale: float = Field(1000.0, gt=0, description="sigma in [0,1] is scaled by this before the sinusoid")
    norm_eps: float = Field(1e-6, gt=0, description="epsilon of LayerNorm and QK RMSNorm")
    compile: bool = Field(False, description="torch.compile every transformer block (the first call compiles; "
                                            "for inference; a run-time choice, no weight changes)")
    out_conv: int = Field(0, ge=0, description="0: none (the presets). > 0: channels of a residual convolution "
                          "head over [velocity, noisy latents, sigma] after unpatchify; starts as the identity, so "
                          "it may be added to trained weights (see SHDT's docstring)")

    @model_validator(mode="after")
    def _check(self) -> SHDTConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if sum(self.rope_axes_dim) != head_dim or any(d % 2 for d in self.rope_axes_dim):
            raise ValueError(f"rope_axes_dim {tuple(self.rope_axes_dim)} must be even and sum to head_dim {head_dim}")
        return self



def _stream(s: Shapes, name: str, d: int, head_dim: int, hidden: int) -> None:
    s.linear(f"{name}.mod.lin", d, 6 * d).linear(f"{name}.qkv", d, 3 * d)
    s.param(f"{name}.q_norm.weight", head_dim).param(f"{name}.k_norm.weight", head_dim)
    s.linear(f"{name}.proj", d, d).linear(f"{name}.mlp.0", d, hidden).linear(f"{name}.mlp.2", hidden, d)


def state_dict_shapes(cfg: SHDTConfig) -> Shapes:
    """State-dict key -> shape of ``SHDT(**cfg.model_dump())`` (no torch)."""
    s, d = Shapes(), cfg.hidden_size
    head_dim, hidden = d // cfg.num_heads, int(d * cfg.mlp_ratio)
    patch_dim = cfg.in_channels * cfg.patch_size * cfg.patch_size
    s.linear("video_in", patch_dim, d)
    s.linear("text_in.0", cfg.text_dim, d).linear("text_in.2", d, d)
    s.linear("time_in.in_layer", 256, d).linear("time_in.out_layer", d, d)
    if cfg.guidance_embed:
        s.linear("guidance_in.in_layer", 256, d).linear("guidance_in.out_layer", d, d)
    s.linear("pooled_text_in.in_layer", cfg.text_dim, d).linear("pooled_text_in.out_layer", d, d)
    for i in range(cfg.depth_double):
        _stream(s, f"double_blocks.{i}.video", d, head_dim, hidden)
        _stream(s, f"double_blocks.{i}.text", d, head_dim, hidden)
    for i in range(cfg.depth_single):
        b = f"single_blocks.{i}"
        s.linear(f"{b}.mod.lin", d, 3 * d).linear(f"{b}.linear1", d, 3 * d + hidden)
        s.param(f"{b}.q_norm.weight", head_dim).param(f"{b}.k_norm.weight", head_dim)
        s.linear(f"{b}.linear2", d + hidden, d)
    s.linear("final.mod.lin", d, 2 * d).linear("final.linear", d, patch_dim)
    if cfg.out_conv:
        s.conv("out_conv.conv1", 2 * cfg.in_channels + 1, cfg.out_conv, (1, 3, 3))
        s.conv("out_conv.conv2", cfg.out_conv, cfg.in_channels, (1, 3, 3))
    return s
