"""Worker of test_parallel.py (a module of its own so that torch.multiprocessing can import it):
rank ``rank`` of ``world`` runs a tiny SHDT without, then with context parallelism and writes the largest
differences to ``out_dir/rank<r>.json``."""

import json
from pathlib import Path

import torch
import torch.distributed as dist

from aiprod_shdt.model import SHDT
from aiprod_shdt.parallel import apply_context_parallel

# 3 heads over 2 ranks: one rank attends over 2 heads, the other over 1 (the v1 case of 30 heads on 4 or 8)
CONFIG = dict(in_channels=16, patch_size=2, hidden_size=96, num_heads=3, depth_double=2, depth_single=2,
              text_dim=32, rope_axes_dim=(8, 12, 12), abs_pos_theta=16.0,  # every position path, sharded
              out_conv=8)  # and the convolution head after the gather


def _inputs(b: int = 2, t: int = 2, hw: int = 8):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(b, 16, t, hw, hw, generator=g)
    text = torch.randn(b, 6, 32, generator=g)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[0, 4:] = False  # sample 0: 4 tokens; sample 1: 6; and column 5 padded in one sample only
    mask[1, 2] = False
    sigma = torch.tensor([0.3, 0.8])[:b]
    return latents, sigma, text, mask


def _model() -> SHDT:
    torch.manual_seed(0)
    model = SHDT(**CONFIG)
    with torch.no_grad():  # AdaLN-zero starts every block as the identity: perturb so attention matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _fwd_bwd(model: SHDT, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    latents = inputs[0].clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    out = model(latents, *inputs[1:])
    weight = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["<latents>"] = latents.grad.clone()
    return out.detach(), grads


def _diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in b)


def worker(rank: int, world: int, init: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = _model()
        inputs = _inputs()
        ref_out, ref_grads = _fwd_bwd(model, inputs)
        seen = []
        model.video_in.register_forward_hook(lambda m, a, o: seen.append(o.shape[1]))
        apply_context_parallel(model, dist.group.WORLD)
        report = {"tokens": model.num_tokens(inputs[0].shape), "out_scale": float(ref_out.abs().max()),
                  "grad_scale": max(float(g.abs().max()) for g in ref_grads.values())}
        for checkpointing in (False, True):  # recomputation in backward repeats the all-to-alls
            model.set_activation_checkpointing(checkpointing)
            out, grads = _fwd_bwd(model, inputs)
            report["grad_local"] = _diff(grads, ref_grads)  # one rank's gradients alone are not the result
            for g in grads.values():  # what FSDP2 / DDP do: average gradients over the ranks
                dist.all_reduce(g)
                g /= world
            report[f"out_ckpt{int(checkpointing)}"] = float((out - ref_out).abs().max())
            report[f"grad_ckpt{int(checkpointing)}"] = _diff(grads, ref_grads)
        report["tokens_per_rank"] = seen[0]
        model.set_activation_checkpointing(False)

        # sampling: CFG batch of 2, Heun, padded prompt; every rank ends with the whole clip
        import os

        from aiprod_shdt.diffusion import sample
        from aiprod_shdt.parallel import context_parallel_from_env, remove_context_parallel

        remove_context_parallel(model)
        os.environ["WORLD_SIZE"] = str(world)  # what torchrun sets: inference joins the existing group
        assert context_parallel_from_env(model, torch.device("cpu")) is not None

        text, mask = inputs[2], inputs[3]
        kw = dict(latent_shape=(16, 2, 8, 8), steps=3, guidance_scale=4.0, seed=5, progress=False, method="heun")
        got = sample(model, text, mask, **kw)
        remove_context_parallel(model)
        ref = sample(model, text, mask, **kw)
        report.update(sample=float((got - ref).abs().max()), sample_scale=float(ref.abs().max()))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()
