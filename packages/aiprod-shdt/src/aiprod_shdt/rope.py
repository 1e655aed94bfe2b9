"""3D rotary position embedding over (t, h, w) video token grids.

RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864) rotates channel pairs of q and k by
an angle proportional to the position, so attention scores depend on relative offsets only.
For video the head dimension is split into three groups, one per axis (t, h, w), each
rotated by its own coordinate — the layout of HunyuanVideo (https://arxiv.org/abs/2412.03603,
axes 16/56/56 of a 128-dim head) and Flux. Angles are computed in forward (never stored) so
the module loads from the meta device without buffers, and in float32 for accuracy at long
sequence lengths (57,600 tokens at 1024x576x97).
"""

from __future__ import annotations

import torch


def rope_angles(grid: tuple[int, int, int], axes_dim: tuple[int, ...], theta: float,
                device: torch.device | None = None) -> torch.Tensor:
    """Rotation angles ``[t*h*w, sum(axes_dim) // 2]`` (float32) for a ``(t, h, w)`` token grid.

    Tokens are ordered t-major then h then w, as produced by :func:`aiprod_shdt.model.patchify`.
    """
    if len(axes_dim) != 3 or any(d % 2 for d in axes_dim):
        raise ValueError(f"rope axes_dim must be three even numbers, got {tuple(axes_dim)}")
    coords = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float32) for n in grid), indexing="ij")
    parts = []
    for pos, dim in zip(coords, axes_dim):
        inv_freq = theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
        parts.append(pos.reshape(-1, 1) * inv_freq)  # [N, dim/2]
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x [B, heads, N, head_dim]`` by ``cos/sin [N, head_dim/2]``
    (into ``out``, a tensor shaped like ``x``, when given and autograd is off)."""
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)  # [B, H, N, D/2] each
    if (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling():
        # autograd: plain ops (out= is not differentiable); torch.compile fuses the plain ops itself
        if x.dtype != cos.dtype:
            x0, x1 = x0.float(), x1.float()
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).to(x.dtype)
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    o0, o1 = out.unflatten(-1, (-1, 2)).unbind(-1)
    # written straight into the output in x's dtype: the products are formed in float32 element by element
    # (cos/sin are float32), with no float32 copy of q and k and no stack
    torch.mul(x0, cos, out=o0).addcmul_(x1, sin, value=-1)
    torch.mul(x0, sin, out=o1).addcmul_(x1, cos)
    return out
