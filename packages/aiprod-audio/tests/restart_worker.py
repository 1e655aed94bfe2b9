"""Worker of test_quantizer_restart.py: 2 gloo processes, the codec's quantizer stages FSDP2-sharded."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def worker(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        from torch.distributed.fsdp import fully_shard

        from aiprod_audio.model import NACCodec
        from aiprod_audio.presets import PRESETS

        torch.manual_seed(0)  # the same random codebooks on both ranks
        codec = NACCodec(**{**PRESETS["tiny"], "num_codebooks": 2}).train()
        for stage in codec.quantizer.stages:
            fully_shard(stage)  # each rank keeps half the codebook rows
        fully_shard(codec)
        stage0 = codec.quantizer.stages[0]
        before = stage0.codebook.full_tensor().detach().clone()
        torch.manual_seed(10 + rank)  # each rank its own batch
        out_ = codec(torch.randn(2, 1, 3200) * 0.3)
        (out_.audio.square().mean() + out_.commitment_loss + out_.codebook_loss).backward()
        # the forward wrote nothing into the codebook: the restart comes after it
        unchanged = bool(torch.equal(stage0.codebook.full_tensor(), before))
        candidates = stage0._candidates.clone()
        dist.broadcast(candidates, src=0)  # rank 0's vectors are the ones every rank takes
        n = codec.restart_dead_codes()
        after = stage0.codebook.full_tensor().detach()
        local_rows = stage0.codebook.to_local().shape[0]
        # every code now equals one of rank 0's encoder vectors (a fresh codebook: all codes seeded)
        gap = (after[:, None].float() - candidates[None].float()).abs().amax(dim=-1)  # [codes, vectors]
        dist_to_candidates = gap.min(dim=1).values.max().item()
        n_again = codec.restart_dead_codes()  # no forward since: nothing kept, nothing to do
        Path(out, f"rank{rank}.json").write_text(json.dumps({
            "unchanged_in_forward": unchanged, "restarted": n, "restarted_again": n_again,
            "local_rows": local_rows, "rows": after.shape[0], "max_dist": dist_to_candidates,
            "changed": float((after - before).abs().max()), "codebook": after.flatten()[:64].tolist(),
            "usage_min": float(stage0.usage.min()),
        }))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(int(sys.argv[1]), 2, sys.argv[2], sys.argv[3])
