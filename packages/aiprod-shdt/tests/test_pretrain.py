"""Phase 0 (pretraining) and the card-scale code paths at toy size: joint image/video steps, first-frame
conditioning, and — under torchrun x2 (gloo) — context parallelism equal to one process, and the shipped
v1 recipes (pretrain -> LoRA phase 1 -> full phase 2) starting from each other's exports with their own
FSDP2, bf16, sharded checkpoints, EMA and context-parallel settings on the tiny preset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from aiprod_core.training import Trainer, step_generator
from aiprod_shdt.diffusion import sample
from aiprod_shdt.model import SHDT
from aiprod_shdt.train import SHDTTask, SHDTTrainConfig

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "configs" / "train" / "tiny" / "shdt_pretrain.yaml"
SHORT = {"curriculum": [{"resolution": 32, "frames": 5, "steps": 4, "batch_size": 2}],
         "train.max_steps": 4, "train.export_dtype": "fp32", "train.checkpoint_every": 2, "train.log_every": 1}


def _config(tmp_path: Path, **over) -> SHDTTrainConfig:
    data = yaml.safe_load(TINY.read_text())
    data.pop("recipe")
    data["train"]["output_dir"] = str(tmp_path / "run")
    for key, value in over.items():
        node, *path = key.split(".")
        if path:
            data[node][path[0]] = value
        else:
            data[node] = value
    return SHDTTrainConfig.model_validate(data)


def test_image_steps_are_mixed_in_and_agree_across_ranks(tmp_path):
    task = SHDTTask(_config(tmp_path))
    frames = []
    for step in range(24):
        shapes = {tuple(task.make_batch(step, step_generator(0, step, r))["latents"].shape) for r in range(2)}
        assert len(shapes) == 1, (step, shapes)  # every rank trains the same token count
        (shape,) = shapes
        assert shape[0] == (8 if shape[2] == 1 else task.cfg.curriculum[step // 12].batch_size)
        frames.append(shape[2])
    assert set(frames) == {1, 2} and 0.1 < frames.count(1) / len(frames) < 0.6  # fraction 0.3


def test_first_frame_is_kept_clean_and_out_of_the_loss(tmp_path):
    task = SHDTTask(_config(tmp_path, first_frame={"probability": 1.0}, images={"fraction": 0.0}))
    batch = task.make_batch(0, step_generator(0, 0, 0))
    assert batch["clean_first"].all() and batch["latents"].shape[2] == 2
    seen = {}

    def model(xt, sigma, text, mask):  # the exact velocity, except nonsense on the first frame
        seen["xt"] = xt
        v = batch["noise"] - batch["latents"]
        v[:, :, 0] = 1e3
        return v

    assert float(task.loss(model, batch)) == 0.0
    assert torch.equal(seen["xt"][:, :, 0], batch["latents"][:, :, 0])
    assert not torch.equal(seen["xt"][:, :, 1], batch["latents"][:, :, 1])
    batch["clean_first"][:] = False  # without the conditioning the first frame is noised and scored
    assert float(task.loss(model, batch)) > 1.0


def test_sampling_keeps_the_conditioning_frame_clean():
    torch.manual_seed(0)
    model = SHDT(in_channels=16, patch_size=2, hidden_size=64, num_heads=2, depth_double=1, depth_single=1,
                 text_dim=32, rope_axes_dim=(8, 12, 12))
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, :, :1].clone()))
    image = torch.randn(1, 16, 1, 8, 8)
    text, mask = torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool)
    out = sample(model, text, mask, (16, 2, 8, 8), steps=3, guidance_scale=1.0, progress=False,
                 first_frame=image, first_frame_mode="clean")
    assert len(seen) == 3 and all(torch.equal(s, image) for s in seen)
    assert torch.equal(out[:, :, :1], image)
    with pytest.raises(ValueError, match="first_frame_mode"):
        sample(model, text, mask, (16, 2, 8, 8), steps=1, progress=False, first_frame=image, first_frame_mode="x")


def _torchrun(args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AIPROD_QUIET": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "aiprod_core.cli", "train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _sets(over: dict) -> list[str]:
    return [arg for k, v in over.items() for arg in ("--set", f"{k}={json.dumps(v)}")]


@pytest.mark.slow
def test_context_parallel_training_equals_one_process(tmp_path):
    """2 ranks sharing every clip (context parallel 2, FSDP2 over both) train the same model as one process."""
    _torchrun([str(TINY), *_sets({**SHORT, "train.output_dir": str(tmp_path / "cp2"), "train.context_parallel": 2,
                                  "train.strategy": "fsdp2"})])
    over = {k: v for k, v in SHORT.items() if "." not in k}
    cfg = _config(tmp_path, **over, train={**yaml.safe_load(TINY.read_text())["train"],
                                           **{k.split(".")[1]: v for k, v in SHORT.items() if "." in k},
                                           "output_dir": str(tmp_path / "one")})
    trainer = Trainer(cfg.train, SHDTTask(cfg))
    trainer.fit()
    cp = load_file(str(tmp_path / "cp2" / "final" / "model" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "final" / "model" / "model.safetensors"))
    assert cp.keys() == one.keys()
    assert max(float((cp[k] - one[k]).abs().max()) for k in one) < 1e-5
    logged = [json.loads(line) for line in (tmp_path / "cp2" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if "loss" in r]
    assert losses == pytest.approx([r["loss"] for r in trainer.history], abs=1e-5)
    assert {r["image_step"] for r in trainer.history} == {0.0, 1.0}


@pytest.mark.slow
def test_v1_recipes_start_from_each_other_under_torchrun(tmp_path):
    """configs/train/pretrain.yaml, lora_phase1.yaml and full_finetune.yaml as shipped (FSDP2, bf16,
    context parallel 2, sharded checkpoints, EMA, meta-device start) on the tiny preset and synthetic clips."""
    toy = {"data.source": "synthetic", "data.text_tokens": 8, "data.aspect_ratios": ["1:1"], "train.device": "cpu",
           "train.checkpoint_every": 1, "train.eval_every": 2, "train.log_every": 1, "train.warmup_steps": 1,
           "train.context_parallel": 2}
    pre = tmp_path / "pre"
    _torchrun([str(ROOT / "configs/train/pretrain.yaml"), *_sets({
        **toy, "model.preset": "tiny", "train.output_dir": str(pre), "train.max_steps": 2, "images.batch_size": 4,
        "curriculum": [{"resolution": 32, "frames": 5, "steps": 1, "batch_size": 2},
                       {"resolution": 64, "frames": 5, "steps": 1, "batch_size": 1}]})])
    assert (pre / "final" / "model" / "MANIFEST.json").is_file()
    assert sorted(p.name for p in (pre / "checkpoints").iterdir()) == ["step-00000001.dcp", "step-00000002.dcp"]
    lora_cfg = yaml.safe_load((ROOT / "configs/train/lora_phase1.yaml").read_text())
    assert lora_cfg["model"]["init_weights"] == "runs/shdt-pretrain/final/model"  # phase 1 starts from phase 0
    for name, steps in (("lora_phase1", 1), ("full_finetune", 2)):
        out = tmp_path / name
        _torchrun([str(ROOT / f"configs/train/{name}.yaml"), *_sets({
            **toy, "model.init_weights": str(pre / "final" / "model"), "train.output_dir": str(out),
            "train.max_steps": steps, "curriculum": [{"resolution": 32, "frames": 5, "steps": steps, "batch_size": 2,
                                                      "aspect_ratios": ["1:1"]}]})])
        assert (out / "final" / "model" / "MANIFEST.json").is_file(), name
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)


def test_context_parallel_degree_is_checked_against_heads_and_buckets(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="between 1 and the number of heads") as err:
        _config(tmp_path, **{"train.context_parallel": 3})
    assert "bucket 32x32, 1 latent frames has 4 video tokens, not a multiple of train.context_parallel 3" in str(err.value)
    assert _config(tmp_path, **{"train.context_parallel": 2}).train.context_parallel == 2


def test_cached_clips_are_shared_by_a_context_parallel_group(tmp_path, monkeypatch):
    """With train.context_parallel K the K ranks of a group draw the same clips (one data-parallel rank),
    so an epoch still covers every clip once."""
    from aiprod_shdt.data import CachedClips, Stage, write_clip

    g = torch.Generator().manual_seed(0)
    for i in range(8):
        write_clip(tmp_path / "32" / f"{i}.safetensors", torch.randn(16, 2, 4, 4, generator=g),
                   torch.randn(5, 8, generator=g), torch.ones(5, dtype=torch.bool))
    stage = Stage(resolution=32, frames=5, steps=4, batch_size=1)
    monkeypatch.setenv("WORLD_SIZE", "4")

    def latents(rank: int, group_size: int) -> torch.Tensor:
        monkeypatch.setenv("RANK", str(rank))
        data = CachedClips(tmp_path, [stage], seed=0, group_size=group_size)
        return torch.cat([data.batch(stage, ["1:1"], torch.Generator(), step=s)["latents"] for s in range(2)])

    shared = [latents(r, 2) for r in range(4)]
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[2], shared[3])
    assert not torch.equal(shared[0], shared[2])
    alone = [latents(r, 1) for r in range(2)]
    assert not torch.equal(alone[0], alone[1])
