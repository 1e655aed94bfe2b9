import json

import pytest
import torch

from aiprod_core import ComponentSpec
from aiprod_core.config import StrictModel, load_yaml
from aiprod_core.errors import ConfigError
from aiprod_core.pipeline import RunContext, load_document
from aiprod_core.training import Trainer
from aiprod_core.weights import load_state_dict
from aiprod_upsampler.train import UpsamplerTask, UpsamplerTrainConfig, make_task


@pytest.mark.parametrize("name", ["upsampler.yaml", "tiny/upsampler.yaml"])
def test_shipped_configs_validate(repo, name):
    """Every shipped YAML validates against the recipe model (without loading any component)."""
    path = repo / "configs" / "train" / name
    assert path.read_text().startswith(f"# aiprod train configs/train/{name}\n")
    data = load_yaml(path)
    assert data.pop("recipe") == "upsampler"
    UpsamplerTrainConfig.model_validate(data)


def test_tiny_config_validates_as_a_whole(repo):
    what, spec, cfg = load_document(repo / "configs/train/tiny/upsampler.yaml")
    assert what == "recipe" and spec.name == "upsampler" and cfg.model.preset == "tiny"


def test_config_errors_name_the_key(repo):
    with pytest.raises(ConfigError) as exc:
        load_document(
            repo / "configs/train/tiny/upsampler.yaml", ["data.source=encode", "data.height=100", "model.preset=huge"]
        )
    text = str(exc.value)
    assert "height must be a multiple of 32 (got 100)" in text
    assert "preset 'huge' unknown" in text
    with pytest.raises(ConfigError, match="config.mid_channels: Input should be greater than or equal to 8"):
        load_document(repo / "configs/train/tiny/upsampler.yaml", ["model.config.mid_channels=4"])


def test_encode_without_autoencoder_is_refused(repo):
    with pytest.raises(ConfigError, match="needs an 'autoencoder'"):
        load_document(repo / "configs/train/tiny/upsampler.yaml", ["data.source=encode"])


def tiny_cfg(repo, out, **train) -> UpsamplerTrainConfig:
    _, _, cfg = load_document(repo / "configs/train/tiny/upsampler.yaml")
    data = cfg.model_dump()
    data["train"].update(
        {"output_dir": str(out), "max_steps": 6, "checkpoint_every": 3, "log_every": 1, "batch_size": 2, **train}
    )
    data["data"].update(eval_size=4)
    return UpsamplerTrainConfig.model_validate(data)


def test_resume_equals_uninterrupted(repo, tmp_path):
    cfg_a = tiny_cfg(repo, tmp_path / "a")
    full = Trainer(cfg_a.train, UpsamplerTask(cfg_a)).fit()
    cfg_b = tiny_cfg(repo, tmp_path / "b")
    stopped = Trainer(cfg_b.train, UpsamplerTask(cfg_b)).fit(stop_after=5)  # "killed" after step 5
    assert stopped["stopped"] and not (tmp_path / "b" / "final").exists()
    torch.manual_seed(999)  # a fresh process: global RNG state differs
    resumed = Trainer(cfg_b.train, UpsamplerTask(cfg_b)).fit()  # resumes from the step-3 checkpoint
    assert resumed["step"] == full["step"] == 6
    a = load_state_dict(tmp_path / "a" / "final" / "model")
    b = load_state_dict(tmp_path / "b" / "final" / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [
        [
            json.loads(line)["loss"]
            for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)
        ]
        for d in ("a", "b")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_tiny_data_overfits(repo, tmp_path):
    """One fixed batch, repeated: the latent loss must fall well below its start."""
    cfg = tiny_cfg(repo, tmp_path, max_steps=70, lr=3e-3, warmup_steps=0, lr_schedule="constant")
    task = UpsamplerTask(cfg)
    fixed = task.make_batch(0, torch.Generator().manual_seed(0))
    task.make_batch = lambda step, g: fixed
    Trainer(cfg.train, task).fit()
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    print(f"overfit: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.7 * losses[0]


# -- pairs from an autoencoder + pixel loss, with a stand-in video-autoencoder ----------------
class BoxAEConfig(StrictModel):
    latent_channels: int = 16


class BoxAE(torch.nn.Module):
    """A linear stand-in video-autoencoder (8×8 box pooling, every 4th frame, 1×1 projections)."""

    spatial_compression, temporal_compression = 8, 4

    def __init__(self, *, latent_channels=16):
        super().__init__()
        self.latent_channels = latent_channels
        g = torch.Generator().manual_seed(0)
        self.enc = torch.nn.Parameter(torch.randn(latent_channels, 3, generator=g))
        self.dec = torch.nn.Parameter(torch.linalg.pinv(self.enc.detach()))

    def encode(self, video, sample=False):
        pooled = torch.nn.functional.avg_pool3d(video[:, :, ::4], (1, 8, 8))
        return torch.einsum("lc,bcthw->blthw", self.enc, pooled)

    def decode(self, latents):
        rgb = torch.einsum("cl,blthw->bcthw", self.dec, latents)
        rgb = rgb.repeat_interleave(8, -1).repeat_interleave(8, -2)
        return torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(4, 2)], dim=2)


def test_encode_source_with_pixel_loss(repo, tmp_path, temp_components):
    temp_components(
        ComponentSpec(
            kind="video-autoencoder", name="test-box-ae", factory=BoxAE, config_model=BoxAEConfig, presets={"tiny": {}}
        )
    )
    overrides = [
        f"train.output_dir={tmp_path}",
        "train.max_steps=4",
        "train.batch_size=2",
        "train.log_every=1",
        "data.source=encode",
        "data.frames=5",
        "data.height=64",
        "data.width=64",
        "data.pool_size=4",
        "data.eval_size=2",
        "loss.pixel_weight=0.5",
        "autoencoder={name: test-box-ae, preset: tiny}",
    ]
    _, _, cfg = load_document(repo / "configs/train/tiny/upsampler.yaml", overrides)
    ctx = RunContext(source=tmp_path / "t.yaml", device=torch.device("cpu"), dtype=torch.float32, quiet=True)
    task = make_task(cfg, ctx)
    assert task.pool["low"].shape == (4, 16, 2, 4, 4) and task.pool["high"].shape == (4, 16, 2, 8, 8)
    assert task.pool["video"].shape == (4, 3, 5, 64, 64)
    Trainer(cfg.train, task).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert len(losses) == 4 and all(r["loss"] > r["loss_latent"] > 0 and r["loss_pixel"] > 0 for r in losses)
    assert rows[-1]["eval/l1"] > 0 and not any(p.requires_grad for p in task.autoencoder.parameters())
