"""Context parallelism for SHDT: Ulysses all-to-all attention over heads, applied from outside the model.

At the card's 1024x576x97 one sample is 57,600 video tokens; with per-block activation checkpointing
the saved block inputs alone are ~24 GiB per GPU (``aiprod plan``). Context parallelism splits the
*sequence* of one sample over the K ranks of a group, so every activation is divided by K.

Ulysses (DeepSpeed-Ulysses, Jacobs et al. 2023, https://arxiv.org/abs/2309.14509 — the route Wan 2.1
and HunyuanVideo/xDiT take): everything in a block except attention acts token by token, so each rank
runs its 1/K of the video tokens through the norms, projections, MLPs and modulation. Around attention
one all-to-all turns "my tokens, all heads" into "all tokens, my heads"; attention runs unchanged on a
subset of heads; a second all-to-all turns the output back. Per block and rank that moves
``4 * S/K * width`` values (q, k, v out and the output back), independent of K.

SHDT specifics:

- **Text tokens are replicated** (≤ 256 against 57,600 video tokens): every rank runs the text stream in
  full, slices its own heads of the text q/k/v locally (no communication) and receives the other heads
  of the text output back in the same all-to-all as its video tokens. The text padding mask therefore
  applies unchanged.
- **Uneven heads**: v1 has 30 heads, so K = 4 or 8 would not divide them; ranks take ``ceil`` or
  ``floor`` of ``heads / K`` heads (e.g. 4,4,4,4,4,4,3,3 for K = 8) through ``all_to_all_single``'s
  split sizes. K may be anything up to the number of heads.
- **Video tokens** must be a multiple of K (57,600 is a multiple of every K up to 30 except 7);
  :func:`check_tokens` says which bucket is not.
- The model's input and output stay whole: :class:`SHDT` slices its patch tokens and RoPE angles with
  :meth:`ContextParallel.shard` and gathers the velocity with :meth:`ContextParallel.gather`, so losses
  and samplers are untouched. Every rank of a group must get the same batch (same latents, noise,
  sigma); the trainer draws data per data-parallel rank (:func:`data_parallel_rank`).

Gradients: the gather's backward sums the output gradients over the group (then keeps this rank's
slice), so each rank's parameter gradients, *averaged over the group*, are the single-process
gradients — which is what FSDP2 and DDP do over the whole world. FSDP2 therefore shards over every
rank (dp x cp flattened, torchtitan's ``dp_shard_cp``) with no change.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def head_splits(heads: int, k: int) -> list[int]:
    """Heads per rank: ``heads`` split into ``k`` contiguous groups differing by at most one."""
    if not 1 <= k <= heads:
        raise ValueError(f"context parallel degree {k} must be between 1 and the number of heads ({heads})")
    return [heads // k + (r < heads % k) for r in range(k)]


def check_tokens(num_tokens: int, k: int, where: str = "") -> None:
    if num_tokens % k:
        raise ValueError(f"{where}{num_tokens} video tokens are not a multiple of the context parallel degree {k}")


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` along dim 0 with split sizes; its gradient is the reverse all-to-all."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        x = x.contiguous()
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x, output_split_sizes=out_splits, input_split_sizes=in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out_splits, in_splits = ctx.splits
        return _AllToAll.apply(grad, in_splits, out_splits, ctx.group), None, None, None


class _GatherTokens(torch.autograd.Function):
    """All-gather equal slices along ``dim``; the gradient is summed over the group, this rank's slice kept."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        k, r = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        n = grad.shape[ctx.dim] // k
        return grad.narrow(ctx.dim, r * n, n), None, None


class ContextParallel:
    """Sequence sharding and Ulysses attention over one process group (see the module docstring)."""

    def __init__(self, group, heads: int):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.heads = heads
        self.splits = head_splits(heads, self.size)
        self.head_offset = sum(self.splits[: self.rank])

    # -- tokens --------------------------------------------------------------------------------
    def shard(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's contiguous 1/K slice of ``x`` along ``dim`` (video tokens or their angles)."""
        check_tokens(x.shape[dim], self.size, "SHDT context parallel: ")
        n = x.shape[dim] // self.size
        return x.narrow(dim, self.rank * n, n)

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Inverse of :meth:`shard`: every rank gets the whole tensor."""
        return _GatherTokens.apply(x, dim, self.group)

    # -- attention -------------------------------------------------------------------------------
    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                  num_video: int = 0) -> torch.Tensor:
        """Drop-in for :func:`aiprod_shdt.model.attention` on this rank's ``[video slice; all text]``
        tokens ``[B, heads, n + L, head_dim]``; returns ``[B, n + L, heads * head_dim]`` like it."""
        b, heads, s, d = q.shape
        n, group, kk, hr = num_video, self.group, self.size, self.splits[self.rank]
        # 1. video q/k/v: all heads of my tokens -> my heads of all tokens (one collective for the three)
        qkv = torch.stack([q[:, :, :n], k[:, :, :n], v[:, :, :n]]).permute(2, 0, 1, 3, 4)  # [H, 3, B, n, D]
        qkv = _AllToAll.apply(qkv, [hr] * kk, self.splits, group)  # [K*hr, 3, B, n, D], source-rank major
        qkv = qkv.view(kk, hr, 3, b, n, d).permute(2, 3, 1, 0, 4, 5).reshape(3, b, hr, kk * n, d)
        # 2. text q/k/v are replicated: slice my heads locally
        heads_mine = slice(self.head_offset, self.head_offset + hr)
        q_all = torch.cat([qkv[0], q[:, heads_mine, n:]], dim=2)
        k_all = torch.cat([qkv[1], k[:, heads_mine, n:]], dim=2)
        v_all = torch.cat([qkv[2], v[:, heads_mine, n:]], dim=2)
        mask = None
        if key_mask is not None:  # all video tokens are real; the text part carries the padding
            mask = torch.cat([key_mask.new_ones(b, kk * n), key_mask[:, n:]], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q_all, k_all, v_all, attn_mask=mask)  # [B, hr, K*n + L, D]
        # 3. back: rank j gets my heads of its video slice and of the (replicated) text
        text_len = s - n
        video = out[:, :, : kk * n].unflatten(2, (kk, n))  # [B, hr, K, n, D]
        text = out[:, :, kk * n :].unsqueeze(2).expand(b, hr, kk, text_len, d)
        send = torch.cat([video, text], dim=3).permute(2, 1, 0, 3, 4)  # [K, hr, B, n + L, D]
        back = _AllToAll.apply(send.reshape(kk * hr, b, s, d), self.splits, [hr] * kk, group)  # [H, B, n+L, D]
        return back.permute(1, 2, 0, 3).reshape(b, s, heads * d)


def apply_context_parallel(model: nn.Module, group) -> ContextParallel | None:
    """Make ``model`` (an SHDT, plain or FSDP2-sharded or with LoRA) run context-parallel over ``group``.
    Every rank of the group must then call it with the same inputs. Returns None for a group of one."""
    if group is None or dist.get_world_size(group) == 1:
        return None
    blocks = [*model.double_blocks, *model.single_blocks]
    heads = blocks[0].heads if blocks else 1
    cp = ContextParallel(group, heads)
    model.context_parallel = cp
    for block in blocks:
        block.attention = cp.attention
    return cp


def remove_context_parallel(model: nn.Module) -> None:
    from aiprod_shdt.model import attention

    model.context_parallel = None
    for block in [*model.double_blocks, *model.single_blocks]:
        block.attention = attention


def context_parallel_from_env(model: nn.Module, device: torch.device) -> ContextParallel | None:
    """Inference across GPUs: under ``torchrun --nproc_per_node K`` (K ranks, one clip), join the process
    group (NCCL on CUDA, gloo on the CPU) and split ``model``'s tokens over all K ranks; every rank then
    runs the same pipeline with the same seed and ends with the whole clip. A no-op in one process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return apply_context_parallel(model, dist.group.WORLD)


# -- device mesh -------------------------------------------------------------------------------------
def context_parallel_mesh(cp: int, device_type: str):
    """The 2-D ``(dp, cp)`` device mesh over the world: ranks ``r`` with the same ``r // cp`` form one
    context-parallel group (neighbours, i.e. the same node's NVLink for K ≤ 8)."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if cp < 1 or world % cp:
        raise ValueError(f"train.context_parallel {cp} must divide the number of processes ({world})")
    return init_device_mesh(device_type, (world // cp, cp), mesh_dim_names=("dp", "cp"))


def data_parallel_rank(rank: int, cp: int) -> int:
    """The data shard of global ``rank``: ranks of one context-parallel group share it."""
    return rank // cp
