"""Worker of test_init.py: ``torchrun --nproc_per_node 2 init_worker.py OUT FOLDER``.

1. A ~1B-parameter SHDT (v1 width, 1 dual + 2 single blocks) built on the meta device, FSDP2-sharded,
   materialised shard by shard: writes this rank's peak RSS and parameter count.
2. The tiny preset, initialised the same way: rank 0 writes the gathered full weights (to compare with
   a one-process initialisation).
3. The tiny component in FOLDER loaded shard by shard (each rank reading only its rows): rank 0 writes
   the gathered full weights.
4. The same with a convolution head added (``out_conv``, not in FOLDER): read FOLDER, draw the head (seed 0,
   the tiny recipe's ``train.seed``), as ``SHDTTask.init_weights`` does: rank 0 writes the gathered weights.
5. FOLDER read into a patch-4 model (``patch_size`` grown on top of it: patch embedding and output layer
   converted, then cut to each rank's rows): rank 0 writes the gathered weights.
"""

import json
import resource
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

from aiprod_shdt.init import init_parameters_, load_shards_, patch_converters
from aiprod_shdt.model import SHDT
from aiprod_shdt.parallelize import shard_model
from aiprod_shdt.presets import PRESETS

BIG = {**PRESETS["v1"], "depth_double": 1, "depth_single": 2}


def sharded(config: dict) -> SHDT:
    with torch.device("meta"):
        model = SHDT(**config)
    shard_model(model, fully_shard)
    fully_shard(model)
    model.to_empty(device="cpu")
    return model


def full_state(model: SHDT) -> dict[str, torch.Tensor]:
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.contiguous() for k, v in state.items()}


def main(out: Path, folder: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = sharded(BIG)
    init_parameters_(model, seed=0)
    local = sum(p.to_local().numel() for p in model.parameters())
    report = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "parameters": sum(p.numel() for p in model.parameters()), "local_parameters": local,
              "nonzero_fraction": float(sum((p.to_local() != 0).sum() for p in model.parameters())) / max(local, 1)}
    del model
    (out / f"rank{rank}.json").write_text(json.dumps(report))

    tiny = sharded(PRESETS["tiny"])
    init_parameters_(tiny, seed=3)
    state = full_state(tiny)
    if rank == 0:
        save_file(state, str(out / "init_ws2.safetensors"))
    loaded = sharded(PRESETS["tiny"])
    load_shards_(loaded, folder)
    state = full_state(loaded)
    if rank == 0:
        save_file(state, str(out / "loaded_ws2.safetensors"))
    grown = sharded({**PRESETS["tiny"], "out_conv": 8})
    missing = load_shards_(grown, folder, missing_ok=("out_conv.",))
    init_parameters_(grown, seed=0, names=set(missing))
    state = full_state(grown)
    if rank == 0:
        save_file(state, str(out / "grown_ws2.safetensors"))
    repatched = sharded({**PRESETS["tiny"], "patch_size": 4})
    load_shards_(repatched, folder, convert=patch_converters(2, 4, PRESETS["tiny"]["in_channels"]))
    state = full_state(repatched)
    if rank == 0:
        save_file(state, str(out / "repatched_ws2.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
