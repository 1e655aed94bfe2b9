"""SHDT — the Sovereign Hybrid Diffusion Transformer (video denoiser, rectified-flow velocity).

Architecture, top to bottom (sizes in :mod:`aiprod_shdt.presets`):

1. **Patchify** the normalised VAE latents ``[B, 16, T, H, W]`` into 2x2 spatial patches, one token
   per patch per latent frame (``T * H/2 * W/2`` tokens; 57,600 at 1024x576x97), then a linear embed.
2. **Conditioning vector** from the diffusion time (sinusoidal + MLP, DiT https://arxiv.org/abs/2212.09748),
   an optional guidance-strength embedding (guidance distillation, Flux / HunyuanVideo) and the
   masked mean of the text embeddings (the pooled-text vector of SD3/Flux, here from the same encoder).
3. **Dual-stream blocks** (MM-DiT, SD3 https://arxiv.org/abs/2403.03206): video and text tokens keep
   their own weights (modulation, norms, projections, MLP) but attend jointly over the concatenation.
4. **Single-stream blocks** (Flux / HunyuanVideo): one concatenated sequence, parallel attention + MLP
   (ViT-22B https://arxiv.org/abs/2302.05442) with shared weights — cheaper per parameter.
5. **Final layer**: AdaLN (shift, scale) + linear back to patches, **unpatchify**.
6. Optional **convolution head** (``out_conv`` > 0 channels; off in the presets): two (1, 3, 3)
   convolutions over [velocity, noisy latents, sigma] add a residual correction per latent pixel, across
   patch borders (U-ViT https://arxiv.org/abs/2209.12152 adds a 3x3 convolution after its linear patch
   decoder). Its last convolution starts at zero, so adding it to a trained model changes nothing until
   it is trained.

Every residual branch is gated by AdaLN-zero modulation from the conditioning vector; gates and
the output projection start at zero so every block starts as the identity (DiT). Queries and keys
are RMS-normalised per head (QK-norm, https://arxiv.org/abs/2302.05442) which keeps bf16 attention
logits bounded at long sequence lengths. Video tokens get 3D RoPE over (t, h, w); text tokens get no
position (order is carried by the text encoder). Attention is ``F.scaled_dot_product_attention``
(flash / memory-efficient kernels on GPU); text columns padded in the whole batch are dropped first,
and the remaining padding (at the end of each prompt) is handled by cutting the padded keys, per group of
items with the same prompt length, so attention never needs a dense mask and keeps the fast kernels; a
mask with holes falls back to a dense boolean mask. At inference (autograd off) all AdaLN modulations
come from one matmul, RoPE writes into one buffer in the activations' dtype (no float32 copy of q and k)
and the single-stream output projection runs without concatenating [attention; MLP].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from aiprod_core.weights import PretrainedMixin
from aiprod_shdt.config import SHDTConfig  # noqa: F401 - re-exported (was defined here)
from aiprod_shdt.rope import apply_rope, rope_angles


# -- patches ---------------------------------------------------------------------------------------
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, T, H, W]`` → ``[B, T*(H/p)*(W/p), C*p*p]`` tokens, t-major then h then w."""
    return rearrange(x, "b c t (h p) (w q) -> b (t h w) (c p q)", p=p, q=p)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], p: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a ``(t, h, w)`` token grid."""
    t, h, w = grid
    return rearrange(tokens, "b (t h w) (c p q) -> b c t (h p) (w q)", t=t, h=h, w=w, p=p, q=p)


# -- small pieces ------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a ``[B]`` float tensor (DiT / ADM), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    """Linear → SiLU → Linear (timestep, guidance and pooled-text embedders)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, dim)
        self.out_layer = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """AdaLN-zero: ``n`` vectors (shift/scale/gate...) of width ``dim`` from the conditioning vector."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.lin = nn.Linear(dim, n * dim)

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        pre = None if torch.compiler.is_compiling() else self.__dict__.get("_fused")  # set by SHDT.forward
        out = pre[1] if pre is not None and pre[0] is vec else self.lin(F.silu(vec))
        return list(out[:, None, :].chunk(self.n, dim=-1))  # n x [B, 1, D]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
              num_video: int = 0) -> torch.Tensor:
    """SDPA over ``[B, heads, S, head_dim]``; ``key_mask [B, S]`` bool (True = attend) or None.
    ``num_video`` (how many leading tokens are video) is unused here; the context-parallel attention
    that :mod:`aiprod_shdt.parallel` swaps in for this function needs it."""
    if key_mask is None:
        out = F.scaled_dot_product_attention(q, k, v)
    elif torch.compiler.is_compiling() or (groups := _prefix_groups(key_mask)) is None:  # dense boolean mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    elif len(groups) == 1:  # one key length for the whole batch: cut the padded keys, no mask
        length, _ = groups[0]
        out = F.scaled_dot_product_attention(q, k[:, :, :length], v[:, :, :length])
    else:  # items grouped by key length, each group mask-free (the fast kernels stay in use)
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        for length, idx in groups:
            out[idx] = F.scaled_dot_product_attention(q[idx], k[idx, :, :length], v[idx, :, :length])
    return rearrange(out, "b h s d -> b s (h d)")


def _prefix_groups(key_mask: torch.Tensor) -> list[tuple[int, torch.Tensor]] | None:
    """``[(key length, item indices), ...]`` when every row of ``key_mask [B, S]`` is a run of True then
    False (padding at the end), else None. Computed once per mask and kept on it: every block reuses it."""
    cached = key_mask.__dict__.get("_aiprod_groups", False)
    if cached is not False:
        return cached
    groups = None
    if not key_mask.is_meta:
        lengths = key_mask.sum(1)
        prefix = torch.arange(key_mask.shape[1], device=key_mask.device)[None] < lengths[:, None]
        if bool((prefix == key_mask).all()):
            groups = [(int(n), (lengths == n).nonzero().flatten()) for n in lengths.unique().tolist()]
    key_mask.__dict__["_aiprod_groups"] = groups
    return groups


_GELU_C = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (the activation of every MLP here). Without autograd, on float32 CPU
    tensors, as ``x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))`` (``0.5 (1 + tanh z) = sigmoid(2 z)``) in one
    buffer: 2.3x faster than ``F.gelu(approximate="tanh")`` on an AVX2 CPU (13 % of the forward at 1,024
    tokens), equal within 5e-7. Elsewhere (autograd, GPU's fused kernel, other dtypes) torch's own."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return F.gelu(x, approximate="tanh")
    y = x * x
    y.mul_(0.044715 * _GELU_C).add_(_GELU_C).mul_(x)
    return y.sigmoid_().mul_(x)


class GELUTanh(nn.Module):
    """:func:`gelu_tanh` as a module (no parameters: state-dict keys as with ``nn.GELU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(x)


def _norm(dim: int, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(dim, elementwise_affine=False, eps=eps)  # affine comes from AdaLN


class Rope:
    """cos/sin of the video tokens, applied to the first ``n`` tokens of a sequence."""

    def __init__(self, angles: torch.Tensor):
        self.cos, self.sin = angles.cos(), angles.sin()
        self.n = angles.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x [B, H, S, D], video tokens first
        if x.shape[2] == self.n:
            return apply_rope(x, self.cos, self.sin)
        if not torch.is_grad_enabled() and not torch.compiler.is_compiling():  # one output buffer, no concatenation
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
            out[:, :, self.n :] = x[:, :, self.n :]
            apply_rope(x[:, :, : self.n], self.cos, self.sin, out=out[:, :, : self.n])
            return out
        return torch.cat([apply_rope(x[:, :, : self.n], self.cos, self.sin), x[:, :, self.n :]], dim=2)

    def joint(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``[rotated video; text]`` along the sequence (dim 2); without autograd written into one buffer
        (no rotated copy of the video part concatenated again)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or video.shape[2] != self.n:
            return torch.cat([self(video), text], dim=2)
        b, h, n, d = video.shape
        out = video.new_empty(b, h, n + text.shape[2], d)
        apply_rope(video, self.cos, self.sin, out=out[:, :, :n])
        out[:, :, n:] = text
        return out


# -- blocks ----------------------------------------------------------------------------------------------
class StreamWeights(nn.Module):
    """One stream's weights inside a dual-stream block (video or text)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        head_dim = dim // heads
        hidden = int(dim * mlp_ratio)
        self.mod = Modulation(dim, 6)  # shift1, scale1, gate1, shift2, scale2, gate2
        self.norm1 = _norm(dim, eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(head_dim, eps=eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=eps)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = _norm(dim, eps)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), GELUTanh(), nn.Linear(hidden, dim))

    def qkv_heads(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, heads: int):
        qkv = self.qkv(modulate(self.norm1(x), shift, scale))
        q, k, v = rearrange(qkv, "b s (k h d) -> k b h s d", k=3, h=heads)
        return self.q_norm(q), self.k_norm(k), v


class DualStreamBlock(nn.Module):
    """MM-DiT block: separate weights per stream, one joint attention over [video; text]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.heads = heads
        self.video = StreamWeights(dim, heads, mlp_ratio, eps)
        self.text = StreamWeights(dim, heads, mlp_ratio, eps)
        self.checkpointing = False
        self.attention = attention  # core attention; aiprod_shdt.parallel swaps in Ulysses all-to-all

    def forward(self, x, c, vec, rope: Rope, key_mask):
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, x, c, vec, rope, key_mask, use_reentrant=False)
        return self._forward(x, c, vec, rope, key_mask)

    def _forward(self, x, c, vec, rope: Rope, key_mask):
        n = x.shape[1]
        vm, tm = self.video.mod(vec), self.text.mod(vec)
        qx, kx, vx = self.video.qkv_heads(x, vm[0], vm[1], self.heads)
        qc, kc, vc = self.text.qkv_heads(c, tm[0], tm[1], self.heads)
        q = rope.joint(qx, qc)  # video tokens get positions, text none
        k = rope.joint(kx, kc)
        out = self.attention(q, k, torch.cat([vx, vc], dim=2), key_mask, n)
        ax, ac = out[:, :n], out[:, n:]
        x = x + vm[2] * self.video.proj(ax)
        x = x + vm[5] * self.video.mlp(modulate(self.video.norm2(x), vm[3], vm[4]))
        c = c + tm[2] * self.text.proj(ac)
        c = c + tm[5] * self.text.mlp(modulate(self.text.norm2(c), tm[3], tm[4]))
        return x, c


class SingleStreamBlock(nn.Module):
    """Flux-style block over [video; text]: fused qkv + MLP-in, attention ‖ MLP, fused output."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.hidden = int(dim * mlp_ratio)
        head_dim = dim // heads
        self.mod = Modulation(dim, 3)  # shift, scale, gate
        self.norm = _norm(dim, eps)
        self.linear1 = nn.Linear(dim, 3 * dim + self.hidden)
        self.q_norm = nn.RMSNorm(head_dim, eps=eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=eps)
        self.linear2 = nn.Linear(dim + self.hidden, dim)
        self.checkpointing = False
        self.attention = attention  # core attention; aiprod_shdt.parallel swaps in Ulysses all-to-all

    def forward(self, h, vec, rope: Rope, key_mask):
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, h, vec, rope, key_mask, use_reentrant=False)
        return self._forward(h, vec, rope, key_mask)

    def _forward(self, h, vec, rope: Rope, key_mask):
        shift, scale, gate = self.mod(vec)
        qkv, mlp = self.linear1(modulate(self.norm(h), shift, scale)).split([3 * self.dim, self.hidden], dim=-1)
        q, k, v = rearrange(qkv, "b s (k h d) -> k b h s d", k=3, h=self.heads)
        attn = self.attention(rope(self.q_norm(q)), rope(self.k_norm(k)), v, key_mask, rope.n)
        if torch.is_grad_enabled():
            return h + gate * self.linear2(torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=-1))
        # inference: linear2 of the concatenation as two matmuls into one buffer (no [attn; mlp] copy)
        w = self.linear2.weight
        if type(self.linear2) is nn.Linear and w.dtype == attn.dtype:
            out = F.linear(attn, w[:, : self.dim], self.linear2.bias)
            out += F.linear(gelu_tanh(mlp), w[:, self.dim :])
        else:  # a quantized linear2 keeps its own kernel
            out = self.linear2(torch.cat([attn, gelu_tanh(mlp)], dim=-1))
        return torch.addcmul(h, gate, out)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = _norm(dim, eps)
        self.mod = Modulation(dim, 2)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mod(vec)
        return self.linear(modulate(self.norm(x), shift, scale))


class OutConv(nn.Module):
    """Residual head at latent-pixel resolution: ``conv(gelu(conv([v, latents, sigma])))``, (1, 3, 3) kernels
    (per frame), the second one zero at init."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv3d(2 * channels + 1, hidden, (1, 3, 3), padding=(0, 1, 1))
        self.conv2 = nn.Conv3d(hidden, channels, (1, 3, 3), padding=(0, 1, 1))

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.conv1.weight)
        for t in (self.conv1.bias, self.conv2.weight, self.conv2.bias):
            nn.init.zeros_(t)

    def forward(self, v: torch.Tensor, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = v.shape
        s = sigma.to(v.dtype).view(b, 1, 1, 1, 1).expand(b, 1, t, h, w)
        return self.conv2(gelu_tanh(self.conv1(torch.cat([v, latents.to(v.dtype), s], dim=1))))


# -- the model ------------------------------------------------------------------------------------------
class SHDT(PretrainedMixin, nn.Module):
    """Video denoiser: ``forward(latents, sigma, text, text_mask, guidance=None) -> velocity``."""

    config_class = SHDTConfig
    component_kind = "video-denoiser"
    component_name = "shdt"
    #: kept in high precision by `aiprod quantize`: input embedders and the final layer. The AdaLN
    #: modulation Linears are ~1/3 of every block's weights; keeping them in bf16 (`--exclude '*.mod.lin'`)
    #: makes the FP8 folder 0.67x instead of 0.51x the bf16 one for a 2.8% -> 2.7% sample error change.
    quantization_exclude = ["video_in", "text_in.*", "time_in.*", "pooled_text_in.*", "guidance_in.*", "final.*"]
    #: context parallelism (:func:`aiprod_shdt.parallel.apply_context_parallel`): when set, each rank of
    #: its group keeps a 1/K slice of the video tokens through the blocks and the output is gathered
    context_parallel = None

    def __init__(self, *, in_channels: int = 16, patch_size: int = 2, hidden_size: int = 3840, num_heads: int = 30,
                 depth_double: int = 20, depth_single: int = 38, mlp_ratio: float = 4.0, text_dim: int = 4096,
                 rope_axes_dim: tuple[int, int, int] = (16, 56, 56), rope_theta: float = 10_000.0,
                 abs_pos_theta: float = 0.0, guidance_embed: bool = False, timestep_scale: float = 1000.0, norm_eps: float = 1e-6,
                 compile: bool = False, out_conv: int = 0):
        super().__init__()
        self.in_channels = in_channels
        self.text_dim = text_dim
        self.patch_size = patch_size
        self.rope_axes_dim = tuple(rope_axes_dim)
        self.rope_theta = rope_theta
        # RoPE makes video-video attention depend on offsets only: from pure noise (sigma = 1) a token can hardly
        # tell where it is (only through its rotated query against the unrotated text keys), so the mean a text
        # implies (an object that starts right and ends left) is hard to draw there.
        # Large models learn to place content anyway; the tiny demo model did not (direction of motion at
        # chance after 2,000 steps; 0.34 with this at 1,000). abs_pos_theta > 0 adds sin/cos of the token's
        # integer (t, h, w) index, the width split over the axes as the head is by rope_axes_dim.
        self.abs_pos_theta = abs_pos_theta
        self.timestep_scale = timestep_scale
        d = hidden_size
        patch_dim = in_channels * patch_size * patch_size
        self.video_in = nn.Linear(patch_dim, d)
        # text projection: the encoder's space → the transformer width (PixArt-α caption projection)
        self.text_in = nn.Sequential(nn.Linear(text_dim, d), GELUTanh(), nn.Linear(d, d))
        self.time_in = MLPEmbedder(256, d)
        self.guidance_in = MLPEmbedder(256, d) if guidance_embed else None
        self.pooled_text_in = MLPEmbedder(text_dim, d)
        self.double_blocks = nn.ModuleList(DualStreamBlock(d, num_heads, mlp_ratio, norm_eps) for _ in range(depth_double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(d, num_heads, mlp_ratio, norm_eps) for _ in range(depth_single))
        self.final = FinalLayer(d, patch_dim, norm_eps)
        self.out_conv = OutConv(in_channels, out_conv) if out_conv else None
        self.reset_parameters()
        if compile:  # per block: one graph per block type and shape, reused by every block of that type
            for block in [*self.double_blocks, *self.single_blocks]:
                block.compile()

    # -- init ---------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Xavier for linears, AdaLN-zero: every modulation, the output projection and the convolution head's
        last convolution start at zero."""
        if next(self.parameters()).is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Modulation):
                nn.init.zeros_(m.lin.weight)
                nn.init.zeros_(m.lin.bias)
        nn.init.normal_(self.time_in.in_layer.weight, std=0.02)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
        if self.out_conv is not None:
            self.out_conv.reset_parameters()

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward (per block, non-reentrant)."""
        for block in [*self.double_blocks, *self.single_blocks]:
            block.checkpointing = enabled

    # -- helpers ------------------------------------------------------------------------------
    def num_tokens(self, latent_shape: tuple[int, ...]) -> int:
        """Video tokens for latents ``[..., T, H, W]``."""
        t, h, w = latent_shape[-3:]
        return t * (h // self.patch_size) * (w // self.patch_size)

    def conditioning(self, sigma: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                     guidance: torch.Tensor | None) -> torch.Tensor:
        # compute dtype from the parameters (an FP8-quantized Linear stores its weight as a float8 buffer)
        dtype = next(p.dtype for p in self.parameters() if p.is_floating_point())
        vec = self.time_in(timestep_embedding(sigma * self.timestep_scale, 256).to(dtype))
        if self.guidance_in is not None:
            g = guidance if guidance is not None else torch.ones_like(sigma)
            vec = vec + self.guidance_in(timestep_embedding(g * self.timestep_scale, 256).to(dtype))
        m = text_mask.to(text.dtype)[..., None]
        pooled = (text * m).sum(1) / m.sum(1).clamp(min=1.0)  # masked mean; zeros for an empty prompt
        return vec + self.pooled_text_in(pooled.to(dtype))

    def _fuse_modulations(self, vec: torch.Tensor) -> list[Modulation]:
        """Inference: every AdaLN modulation of the model (2 per dual block, 1 per single block and the
        final layer's) from one matmul over the concatenated weights, built once and cached until a
        weight changes (key: identity and version counter). Quantized modulations keep their own path."""
        mods = [m for m in self.modules() if isinstance(m, Modulation)]
        if not mods or any(type(m.lin) is not nn.Linear or m.lin.weight.dtype != vec.dtype for m in mods):
            return []
        if any(hasattr(m.lin.weight, "device_mesh") for m in mods):  # FSDP2 shards: gathered per block only
            return []
        key = tuple((t.data_ptr(), t._version, t.device) for m in mods for t in (m.lin.weight, m.lin.bias))
        cache = self.__dict__.get("_mod_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                w = torch.cat([m.lin.weight for m in mods]).contiguous()
                b = torch.cat([m.lin.bias for m in mods])
            self.__dict__["_mod_cache"] = cache = (key, w, b)
        out = F.linear(F.silu(vec), cache[1], cache[2])
        for m, o in zip(mods, out.split([m.lin.out_features for m in mods], dim=-1)):
            m.__dict__["_fused"] = (vec, o)
        return mods

    def _abs_pos(self, grid: tuple[int, int, int], device, dtype, cp) -> torch.Tensor:
        """``[N, hidden]`` sin/cos of the (t, h, w) token indices (this rank's slice under context parallelism)."""
        d, total = self.video_in.out_features, sum(self.rope_axes_dim)
        axes = tuple(2 * (d * a // (2 * total)) for a in self.rope_axes_dim)
        ang = rope_angles(grid, axes, self.abs_pos_theta, device=device)
        if cp is not None:
            ang = cp.shard(ang, dim=0)
        pe = torch.cat([ang.sin(), ang.cos()], dim=-1)
        return F.pad(pe, (0, d - pe.shape[-1])).to(dtype)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        """``latents [B, C, T, H, W]``, ``sigma [B]`` in [0, 1], ``text [B, L, text_dim]``,
        ``text_mask [B, L]`` bool → velocity ``[B, C, T, H, W]`` (target ``noise - x0``)."""
        b, ch, t, h, w = latents.shape
        p = self.patch_size
        if ch != self.in_channels or h % p or w % p:
            raise ValueError(f"SHDT: latents {tuple(latents.shape)} need {self.in_channels} channels and H, W "
                             f"multiples of patch_size {p}")
        if text.shape[-1] != self.text_dim or text_mask.shape != text.shape[:2]:
            raise ValueError(f"SHDT: text {tuple(text.shape)} / mask {tuple(text_mask.shape)} need "
                             f"[B, L, {self.text_dim}] and [B, L]")
        text_mask = text_mask.bool()
        sigma = sigma.reshape(-1).expand(b) if sigma.numel() in (1, b) else sigma
        vec = self.conditioning(sigma, text, text_mask, guidance)
        # drop text columns padded in the whole batch; no mask at all when nothing is padded
        # (data-dependent, so skipped when tracing on the meta device, e.g. to count FLOPs)
        traced = text_mask.is_meta
        keep = text_mask.any(0)
        if not traced and not keep.all():
            last = int(keep.nonzero().max()) + 1 if keep.any() else 1
            text, text_mask = text[:, :last], text_mask[:, :last]
        grid = (t, h // p, w // p)
        tokens, angles = patchify(latents, p), rope_angles(grid, self.rope_axes_dim, self.rope_theta, device=latents.device)
        cp = self.context_parallel
        if cp is not None:  # this rank's slice of the video tokens and of their positions
            tokens, angles = cp.shard(tokens, dim=1), cp.shard(angles, dim=0)
        x = self.video_in(tokens)
        if self.abs_pos_theta:
            x = x + self._abs_pos(grid, x.device, x.dtype, cp)
        c = self.text_in(text)
        n = x.shape[1]
        key_mask = None
        if traced or not text_mask.all():
            key_mask = torch.cat([text_mask.new_ones(b, n), text_mask], dim=1)
        rope = Rope(angles)
        fused = self._fuse_modulations(vec) if not torch.is_grad_enabled() else []
        for block in self.double_blocks:
            x, c = block(x, c, vec, rope, key_mask)
        hcat = torch.cat([x, c], dim=1)
        for block in self.single_blocks:
            hcat = block(hcat, vec, rope, key_mask)
        out = self.final(hcat[:, :n], vec)
        for mod in fused:
            del mod.__dict__["_fused"]
        if cp is not None:
            out = cp.gather(out, dim=1)
        v = unpatchify(out, grid, p)
        if self.out_conv is not None:  # whole latents on every rank (after the context-parallel gather)
            v = v + self.out_conv(v, latents, sigma)
        return v
