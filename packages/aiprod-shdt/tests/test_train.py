"""The `shdt` recipe: overfitting, exact resume across a curriculum switch, LoRA, configs."""

from pathlib import Path

import pytest
import torch
import yaml

from aiprod_core.errors import ConfigError
from aiprod_core.pipeline import load_document
from aiprod_core.training import Trainer
from aiprod_shdt.model import SHDT
from aiprod_shdt.presets import PRESETS
from aiprod_shdt.train import SHDTTask, SHDTTrainConfig, describe, merge_lora

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "configs" / "train" / "tiny" / "shdt.yaml"


def test_tiny_model_overfits_clips(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path)
    task = SHDTTask(cfg)
    trainer = Trainer(cfg.train, task)
    with torch.no_grad():
        before = task.evaluate(trainer.ctx)["loss"]
    metrics = trainer.fit()
    after = metrics["eval/loss"]
    assert before / after >= 5.0, (before, after)
    assert {r["stage"] for r in trainer.history} == {0.0, 1.0}  # the curriculum switched
    model = SHDT.from_pretrained(tmp_path / "run" / "final" / "model")
    for k, v in model.state_dict().items():  # the tiny config exports fp32 (the card's default is bf16)
        assert torch.equal(v, task.model.state_dict()[k])


def short(tiny_config, tmp_path, name, **over):
    return tiny_config(
        tmp_path / name,
        curriculum=[{"resolution": 32, "frames": 5, "steps": 3, "batch_size": 2},
                    {"resolution": 48, "frames": 1, "steps": 4, "batch_size": 3}],
        data={"aspect_ratios": ["1:1", "2:1"]}, text_dropout=0.3,
        train={**yaml.safe_load(TINY.read_text())["train"], "output_dir": str(tmp_path / name),
               "checkpoint_every": 2, "ema_decay": 0.9, "log_every": 1}, **over)


def test_resume_equals_uninterrupted(tmp_path, tiny_config):
    ref_cfg = short(tiny_config, tmp_path, "ref")
    ref = Trainer(ref_cfg.train, SHDTTask(ref_cfg))
    ref.fit()
    cfg = short(tiny_config, tmp_path, "killed")
    torch.manual_seed(123)  # a fresh process: unrelated global RNG state
    first = Trainer(cfg.train, SHDTTask(cfg))
    assert first.fit(stop_after=5)["stopped"]  # killed after the checkpoint of step 4, inside stage 1
    task = SHDTTask(cfg)
    Trainer(cfg.train, task).fit()
    for k, v in ref.ctx.raw["model"].state_dict().items():
        assert torch.equal(v, task.model.state_dict()[k]), k
    a = [r["loss"] for r in ref.history]
    records = [yaml.safe_load(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert a == [r["loss"] for r in records if "loss" in r]  # one record per step, none duplicated
    assert {r["stage"] for r in ref.history} == {0.0, 1.0}
    assert not torch.equal(ref.ctx.raw["model"].final.linear.weight, torch.zeros(1))


def _trained_base(folder: Path) -> SHDT:
    """The tiny preset with its zero-initialised weights moved (as after training), saved to ``folder``."""
    torch.manual_seed(0)
    base = SHDT(**PRESETS["tiny"])
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    base.save_pretrained(folder)
    return base


def test_lora_phase_trains_adapters_and_exports_merged(tmp_path, tiny_config):
    base = _trained_base(tmp_path / "base")
    cfg = tiny_config(tmp_path, mode="lora", model={"preset": "tiny", "init_weights": str(tmp_path / "base")},
                      lora={"rank": 4, "alpha": 8},
                      curriculum=[{"resolution": 32, "frames": 5, "steps": 30, "batch_size": 4}])
    task = SHDTTask(cfg)
    trainable = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer = Trainer(cfg.train, task)
    with torch.no_grad():
        before = task.evaluate(trainer.ctx)["loss"]
    after = trainer.fit()["eval/loss"]
    assert after < before
    merged = SHDT.from_pretrained(tmp_path / "run" / "final" / "model")
    batch = task.eval_batch(torch.device("cpu"))
    task.model.eval()
    with torch.no_grad():
        args = (batch["latents"], batch["sigma"], batch["text"], batch["text_mask"])
        assert torch.allclose(merged(*args), task.model(*args), atol=1e-5)
        assert not torch.allclose(merged(*args), base.eval()(*args), atol=1e-4)
    frozen = {k: v for k, v in task.model.state_dict().items() if "base_layer" in k or "lora_" not in k}
    base_state = base.state_dict()
    assert all(torch.equal(v, base_state[k.replace(".base_layer", "")]) for k, v in frozen.items())
    assert (tmp_path / "run" / "final" / "lora" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_bf16_folder_trains_in_fp32(tmp_path, tiny_config, mode):
    """The card stores every model in bf16: trainable weights, AdamW moments and EMA are fp32 anyway, and
    3 steps at lr 2e-5 move >= 95% of the trainable weights (bf16 masters moved about 10%)."""
    torch.manual_seed(0)
    trained = SHDT(**PRESETS["tiny"])
    with torch.no_grad():  # a trained model: no zero-initialised (adaLN-zero, output) weight left
        for p in trained.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    trained.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    cfg = tiny_config(tmp_path, mode=mode, model={"preset": "tiny", "init_weights": str(tmp_path / "bf16")},
                      lora={"rank": 4, "alpha": 4},
                      curriculum=[{"resolution": 32, "frames": 1, "steps": 3, "batch_size": 2}],
                      train={"lr": 2e-5, "warmup_steps": 0, "mixed_precision": "bf16", "ema_decay": 0.99,
                             "grad_clip": None})
    task = SHDTTask(cfg)
    if mode == "lora":  # peft's B starts at zero: move it so A's gradient is not zero either
        with torch.no_grad():
            for n, p in task.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    before = {n: p.detach().float().clone() for n, p in task.model.named_parameters() if p.requires_grad}
    trainer = Trainer(cfg.train, task)
    trainer.fit()
    params = dict(task.model.named_parameters())
    assert all(params[n].dtype == torch.float32 for n in before)
    if mode == "lora":  # the frozen base keeps its stored bf16
        assert {p.dtype for p in task.model.parameters() if not p.requires_grad} == {torch.bfloat16}
    moments = [v for s in trainer.optimizers["model"].state.values() for v in s.values() if v.numel() > 1]
    assert moments and all(v.dtype == torch.float32 for v in moments)
    assert all(s.dtype == torch.float32 for s in trainer.emas["model"].shadow)
    changed = sum(int((params[n].detach() != b).sum()) for n, b in before.items())
    total = sum(b.numel() for b in before.values())
    assert changed / total >= 0.95, changed / total


def test_convolution_head_grown_on_trained_weights(tmp_path, tiny_config):
    """``model.config: {out_conv: K}`` on top of ``init_weights``: the folder's weights read as they are, the head
    drawn (its last convolution zero), so training starts from the trained model's loss, and the exported
    model has the head. Other overrides of a folder's model, and a head LoRA would keep frozen, are refused."""
    base = _trained_base(tmp_path / "base")
    model = {"preset": "tiny", "init_weights": str(tmp_path / "base"), "config": {"out_conv": 8}}
    cfg = tiny_config(tmp_path, model=model, curriculum=[{"resolution": 32, "frames": 5, "steps": 20, "batch_size": 4}])
    task = SHDTTask(cfg)
    trainer = Trainer(cfg.train, task)
    batch = task.eval_batch(torch.device("cpu"))
    args = (batch["latents"], batch["sigma"], batch["text"], batch["text_mask"])
    with torch.no_grad():
        assert torch.equal(task.model.eval()(*args), base.eval()(*args))
        before = task.evaluate(trainer.ctx)["loss"]
    after = trainer.fit()["eval/loss"]
    assert after < before
    final = SHDT.from_pretrained(tmp_path / "run" / "final" / "model")
    assert final.config.out_conv == 8 and final.out_conv.conv2.weight.abs().sum() > 0

    with pytest.raises(ConfigError, match="hidden_size cannot change the model of init_weights"):
        SHDTTask(tiny_config(tmp_path, model={**model, "config": {"hidden_size": 32}}))
    with pytest.raises(ValueError, match="out_conv adds or reshapes modules of init_weights that mode 'lora'"):
        tiny_config(tmp_path, mode="lora", model=model)


def test_patch_size_grown_on_trained_weights(tmp_path, tiny_config):
    """``model.config: {patch_size: 4}`` on a patch-2 ``init_weights``: the same token grid at twice the pixels.
    The converted model on a latent upsampled x2 (nearest) computes the folder's model on the latent, upsampled;
    it trains on 64-px clips with the 8 tokens a patch-2 model has on 32-px ones, and exports with patch 4. A patch size that is not a
    multiple of the folder's, and mode 'lora', are refused."""
    base = _trained_base(tmp_path / "base").eval()
    model = {"preset": "tiny", "init_weights": str(tmp_path / "base"), "config": {"patch_size": 4}}
    cfg = tiny_config(tmp_path, model=model, curriculum=[{"resolution": 64, "frames": 5, "steps": 20, "batch_size": 4}])
    task = SHDTTask(cfg)
    assert task.model.patch_size == 4 and any("buckets 64x64 (8-8 tokens)" in line for line in describe(cfg))
    torch.manual_seed(1)
    x, sigma = torch.randn(2, 16, 2, 4, 4), torch.tensor([0.3, 0.9])
    text, mask = torch.randn(2, 6, 32), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    up = lambda z: z.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731
    with torch.no_grad():
        want, got = up(base(x, sigma, text, mask)), task.model.eval()(up(x), sigma, text, mask)
    assert got.shape == (2, 16, 2, 8, 8) and torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    trainer = Trainer(cfg.train, task)
    with torch.no_grad():
        before = task.evaluate(trainer.ctx)["loss"]
    assert trainer.fit()["eval/loss"] < before
    final = SHDT.from_pretrained(tmp_path / "run" / "final" / "model")
    assert final.config.patch_size == 4 and final.video_in.weight.shape == (64, 16 * 4 * 4)

    with pytest.raises(ConfigError, match=r"curriculum\[0\]: bucket 64x48 is not a multiple of 32 px"):
        SHDTTask(tiny_config(tmp_path, model=model, curriculum=[{**cfg.curriculum[0].model_dump(), "aspect_ratios": ["4:3"]}]))
    with pytest.raises(ConfigError, match="patch_size 3 must be a multiple of init_weights' patch_size 2"):
        SHDTTask(tiny_config(tmp_path, model={**model, "config": {"patch_size": 3}}))
    with pytest.raises(ValueError, match="patch_size adds or reshapes modules of init_weights that mode 'lora'"):
        tiny_config(tmp_path, mode="lora", model=model)


def test_merge_lora_math():
    a, b, w = torch.randn(2, 5), torch.randn(3, 2), torch.randn(3, 5)
    merged, adapters = merge_lora({"x.base_layer.weight": w, "x.base_layer.bias": torch.zeros(3),
                                   "x.lora_A.default.weight": a, "x.lora_B.default.weight": b}, 0.5)
    assert torch.allclose(merged["x.weight"], w + 0.5 * b @ a) and set(merged) == {"x.weight", "x.bias"}
    assert len(adapters) == 2


def test_shipped_configs_validate():
    for name in ("lora_phase1.yaml", "full_finetune.yaml", "tiny/shdt.yaml"):
        what, spec, cfg = load_document(ROOT / "configs" / "train" / name)
        assert what == "recipe" and spec.name == "shdt"
    _, _, full = load_document(ROOT / "configs" / "train" / "full_finetune.yaml")
    assert [s.resolution for s in full.curriculum] == [256, 512, 768, 1024]
    assert full.train.max_steps == 100_000 and full.train.strategy == "fsdp2"
    _, _, lora = load_document(ROOT / "configs" / "train" / "lora_phase1.yaml")
    assert lora.mode == "lora" and lora.lora.rank == 32 and lora.train.max_steps == 15_000


def test_config_errors_name_the_problem(tmp_path, tiny_config):
    data = tiny_config(tmp_path).model_dump()
    data["train"]["max_steps"] = 3
    with pytest.raises(ValueError, match="curriculum stages sum to 400"):
        SHDTTrainConfig.model_validate(data)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        tiny_config(tmp_path, curriculum=[{"resolution": 32, "frames": 16, "steps": 1, "batch_size": 1}])
    with pytest.raises(ValueError, match="init_weights"):
        tiny_config(tmp_path, mode="lora")
    path = tmp_path / "bad.yaml"
    data = yaml.safe_load(TINY.read_text())
    data["curriculum"][0]["resolutoin"] = 64
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="resolutoin"):
        load_document(path)


def test_recipe_runs_through_run_document(tmp_path):
    from aiprod_core.pipeline import run_document

    out = run_document(TINY, [f"train.output_dir={tmp_path / 'cli'}", "train.max_steps=2",
                              "curriculum=[{resolution: 32, frames: 5, steps: 2, batch_size: 2}]"],
                       expect="recipe", device="cpu", quiet=True)
    assert out["step"] == 2 and (tmp_path / "cli" / "final" / "model" / "config.json").is_file()


def test_ranks_share_the_bucket_and_eval_follows_the_stage(tmp_path, tiny_config):
    """Every rank draws the same aspect bucket at a step (same token count: nobody waits), and the eval
    batch is made at the current stage's resolution and frames, not the last stage's."""
    from aiprod_core.training import step_generator

    cfg = tiny_config(tmp_path, data={"aspect_ratios": ["1:1", "2:1", "1:2"]},
                      curriculum=[{"resolution": 32, "frames": 1, "steps": 20, "batch_size": 2},
                                  {"resolution": 64, "frames": 5, "steps": 1, "batch_size": 1}])
    task = SHDTTask(cfg)
    shapes = set()
    for step in range(20):
        per_rank = {tuple(task.make_batch(step, step_generator(0, step, rank))["latents"].shape) for rank in range(4)}
        assert len(per_rank) == 1, (step, per_rank)
        shapes |= per_rank
    assert len(shapes) > 1  # the buckets still vary from step to step
    first, last = task.eval_batch(torch.device("cpu"), 0), task.eval_batch(torch.device("cpu"), 20)
    assert first["latents"].shape[-3:] == (1, 4, 4) and last["latents"].shape[-3:] == (2, 8, 8)
