"""Worker for test_distributed.py: ``torchrun --nproc_per_node 2 dist_worker.py OUT``.

Trains the tiny model 4 steps with DDP, then with FSDP2 (same seed, same data), and writes per-rank
fingerprints of the full weights plus rank 0's full state dicts to OUT.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from aiprod_core.training import Trainer
from aiprod_shdt.train import SHDTTask, SHDTTrainConfig

TINY = Path(__file__).resolve().parents[3] / "configs" / "train" / "tiny" / "shdt.yaml"


def config(out: Path, strategy: str) -> SHDTTrainConfig:
    data = yaml.safe_load(TINY.read_text())
    data.pop("recipe")
    data["curriculum"] = [{"resolution": 32, "frames": 5, "steps": 2, "batch_size": 2},
                          {"resolution": 48, "frames": 1, "steps": 2, "batch_size": 2, "aspect_ratios": ["1:1", "2:1"]}]
    data["train"].update(output_dir=str(out / strategy), max_steps=4, checkpoint_every=2, log_every=1,
                         strategy=strategy, activation_checkpointing=strategy == "fsdp2")
    return SHDTTrainConfig.model_validate(data)


def fingerprint(state: dict[str, torch.Tensor]) -> list[float]:
    return [float(v.double().sum()) + float(v.double().square().sum()) for v in state.values()]


def main(out: Path) -> None:
    report = {}
    for strategy in ("ddp", "fsdp2"):
        cfg = config(out, strategy)
        task = SHDTTask(cfg)
        trainer = Trainer(cfg.train, task)
        trainer.fit()
        full = get_model_state_dict(task.model, options=StateDictOptions(full_state_dict=True))
        full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in full.items()}
        local = fingerprint({k: v.detach() for k, v in task.model.state_dict().items()}) if strategy == "ddp" else None
        mine = {"full": fingerprint(full), "local": local, "losses": [r["loss"] for r in trainer.local_history],
                "logged": [r["loss"] for r in trainer.history],
                "world_size": trainer.world_size}
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
        report[strategy] = ranks
        if dist.get_rank() == 0:
            save_file({k: v.contiguous() for k, v in full.items()}, str(out / f"{strategy}.safetensors"))
        dist.barrier()
    if dist.get_rank() == 0:
        (out / "report.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
