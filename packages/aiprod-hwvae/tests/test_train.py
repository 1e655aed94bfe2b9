import json
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from aiprod_core.pipeline import validate_document
from aiprod_core.training import Trainer
from aiprod_core.weights import load_component
from aiprod_hwvae.train import HWVAETask, fit

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "configs" / "train" / "tiny" / "hwvae.yaml"
FULL = ROOT / "configs" / "train" / "vae_finetune.yaml"


def tiny_config(tmp_path: Path, **train):
    data = yaml.safe_load(TINY.read_text())
    data["train"].update(output_dir=str(tmp_path / "run"), **train)
    return validate_document(data, str(TINY))[2]


@pytest.mark.parametrize("path", [TINY, FULL], ids=["tiny", "vae_finetune"])
def test_shipped_configs_validate(path):
    text = path.read_text()
    assert text.startswith(f"# aiprod train configs/train/{path.relative_to(ROOT / 'configs' / 'train')}")
    what, spec, cfg = validate_document(yaml.safe_load(text), str(path))
    assert what == "recipe" and spec.name == "hwvae" and cfg.model.name == "hwvae"


def test_tiny_overfits_a_few_clips(tmp_path, monkeypatch):
    """The tiny preset on 4 fixed clips: eval PSNR rises by ≥ 10 dB in 150 CPU steps."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_config(tmp_path)
    t0 = time.perf_counter()
    trainer = Trainer(cfg.train, HWVAETask(cfg))
    before = trainer._evaluate()["eval/psnr"]
    after = trainer.fit()["eval/psnr"]
    print(f"tiny overfit: eval PSNR {before:.2f} dB → {after:.2f} dB (+{after - before:.2f}) in "
          f"{cfg.train.max_steps} steps, {time.perf_counter() - t0:.1f} s")
    assert after - before >= 10.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("psnr" in r for r in records if "loss" in r)
    # the exported component carries its latent statistics and loads through the registry
    vae = load_component(tmp_path / "run" / "final" / "model")
    assert len(vae.config.latent_shift) == 16 and len(vae.config.latent_scale) == 16
    clips = trainer.task._fixed_clips(4, 2_000_003)
    with torch.no_grad():
        z = vae.encode(clips)
    assert abs(z.mean().item()) < 0.5 and 0.5 < z.std().item() < 1.5


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    ckpt = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    return torch.load(ckpt, map_location="cpu", weights_only=True)


def test_resume_equals_uninterrupted(tmp_path):
    kw = dict(max_steps=6, checkpoint_every=3, log_every=1)
    a = tiny_config(tmp_path / "a", **kw)
    b = tiny_config(tmp_path / "b", **kw)
    fit(a)
    stopped = fit(b, stop_after=4)  # "killed" after step 4: the last checkpoint is step 3
    assert stopped["stopped"] and stopped["step"] == 4
    fit(b)
    sa, sb = _final_state(tmp_path / "a" / "run"), _final_state(tmp_path / "b" / "run")
    for k, v in sa["modules"]["model"].items():
        assert torch.equal(v, sb["modules"]["model"][k]), k
    la = (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]  # noqa: E731
    assert strip(la) == strip(lb)


def test_discriminator_and_perceptual_terms(tmp_path):
    """VGG16 from a local safetensors file (random weights here) and the PatchGAN run and log."""
    from safetensors.torch import save_file

    from aiprod_hwvae.losses import VGG16Features

    torch.manual_seed(0)
    vgg = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in VGG16Features().state_dict().items()}, str(vgg))
    data = yaml.safe_load(TINY.read_text())
    data["train"].update(output_dir=str(tmp_path / "run"), max_steps=2, log_every=1)
    data["loss"].update(perceptual=0.1, vgg16_weights=str(vgg), perceptual_frames=1)
    data["disc"] = {"enabled": True, "channels": 8, "layers": 2}
    data["stats_clips"] = 0
    cfg = validate_document(data, "test")[2]
    fit(cfg)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[1])
    assert rec["perceptual"] > 0 and "d_loss" in rec and "g_adv" in rec


def test_missing_vgg_weights_disable_perceptual_with_a_warning(tmp_path):
    from aiprod_hwvae.losses import PerceptualLoss

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = PerceptualLoss(tmp_path / "nope.safetensors")
    assert not loss.enabled and any("perceptual loss disabled" in str(w.message) for w in caught)
    x = torch.zeros(1, 3, 1, 16, 16)
    assert loss(x, x + 1).item() == 0.0


def test_mp4_folder_source(tmp_path):
    import av
    import numpy as np

    from aiprod_hwvae.data import Mp4FolderSource

    path = tmp_path / "clips" / "a.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as box:
        stream = box.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            img = np.full((48, 64, 3), i * 20, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    src = Mp4FolderSource(tmp_path / "clips", frames=5, height=32, width=32, stride=2)
    clip = src.clip(torch.Generator().manual_seed(0))
    assert clip.shape == (3, 5, 32, 32) and clip.min() >= -1 and clip.max() <= 1
    means = clip.mean(dim=(0, 2, 3))
    assert torch.all(means[1:] > means[:-1])  # brightness ramps over time: frames come in order
    # scale (1, 1): clips at the files' own pixels (a 32x32 crop of the 64x48 frames), not resized
    native = Mp4FolderSource(tmp_path / "clips", frames=5, height=48, width=64, stride=2, scale=(1.0, 1.0))
    frames = native._decode(native.usable[0], 0)  # [T, 3, H, W]
    assert torch.equal(native.clip_from(native.usable[0], torch.Generator().manual_seed(0)),
                       frames.permute(1, 0, 2, 3).clamp(-1, 1))
    with pytest.raises(Exception, match="frames a clip needs"):
        Mp4FolderSource(tmp_path / "clips", frames=40, height=32, width=32)


def test_bad_clip_geometry_is_a_config_error():
    from aiprod_core.errors import ConfigError

    data = yaml.safe_load(TINY.read_text())
    data["data"].update(frames=6, width=30)
    with pytest.raises(ConfigError) as exc:
        validate_document(data, str(TINY))
    assert len(exc.value.lines()) == 2 and "data.frames" in exc.value.lines()[0]
    data = yaml.safe_load(TINY.read_text())
    data["data"]["scale"] = [0.8, 1.0]
    with pytest.raises(ConfigError, match="data.scale"):
        validate_document(data, str(TINY))


def test_decoder_only_fine_tune_keeps_the_latent_space(tmp_path, monkeypatch):
    """train_encoder: false — the encoder and latent statistics are untouched, the decoder improves (on the pixel
    MSE alone, as the demo's third stage, configs/train/tiny/hwvae_decoder_mse_demo.yaml)."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    base_cfg = tiny_config(tmp_path / "base", max_steps=20, checkpoint_every=20)
    fit(base_cfg)
    base = tmp_path / "base" / "run" / "final" / "model"
    data = yaml.safe_load(TINY.read_text())
    data["model"] = {"name": "hwvae", "weights": str(base)}
    data["train_encoder"] = False
    data["loss"].update(l1=0.0, l2=1.0, spectral=0.0, perceptual=0.0, kl=0.0)
    data["train"].update(output_dir=str(tmp_path / "ft"), max_steps=40, checkpoint_every=20)
    cfg = validate_document(data, str(TINY))[2]
    task = HWVAETask(cfg)
    trainer = Trainer(cfg.train, task)
    before = trainer._evaluate()["eval/psnr"]
    after = trainer.fit()["eval/psnr"]
    assert after > before + 1.0, (before, after)
    records = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(r["loss"] == pytest.approx(r["l2"]) for r in steps)  # the MSE is the whole loss
    ckpt = torch.load(sorted((tmp_path / "ft" / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert ckpt["modules"]["model"] and all(k.startswith("decoder.") for k in ckpt["modules"]["model"])
    old, new = load_component(base), load_component(tmp_path / "ft" / "final" / "model")
    assert new.config.latent_shift == old.config.latent_shift and new.config.latent_scale == old.config.latent_scale
    clips = task._fixed_clips(2, 7)
    with torch.no_grad():
        assert torch.equal(old.encode(clips), new.encode(clips))  # cached latents stay valid
        assert not torch.equal(old.decode(old.encode(clips)), new.decode(new.encode(clips)))
    data["model"] = {"name": "hwvae", "preset": "tiny"}
    with pytest.raises(Exception, match="train_encoder: false fine-tunes a trained decoder"):
        validate_document(data, str(TINY))
