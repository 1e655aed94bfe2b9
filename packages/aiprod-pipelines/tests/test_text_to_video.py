"""text-to-video: the pipeline logic with exact dummy components (always), then the real tiny models."""

from __future__ import annotations

import json
import math

import dummies
import numpy as np
import pytest
import yaml

import aiprod_core.registry as registry_mod
from aiprod_core.errors import AiprodError, ConfigError
from aiprod_core.pipeline import run_document
from aiprod_pipelines import text_to_video as t2v
from aiprod_pipelines.corpus import PALETTE
from aiprod_pipelines.eval import shown_colour
from aiprod_pipelines.media import read_mp4


@pytest.fixture
def reg(monkeypatch):
    reg = dummies.make_registry()
    monkeypatch.setattr(registry_mod, "_REGISTRY", reg)
    return reg


def doc(tmp_path, **over):
    d = {"pipeline": "text-to-video", "prompt": "a red circle moving left over a photo of a cat",
         "output": str(tmp_path / "out" / "clip.mp4"), "width": 32, "height": 32, "frames": 9, "fps": 8, "steps": 4,
         "guidance_scale": 1.0, "text_encoder": {"name": "dummy-text", "preset": "tiny"},
         "denoiser": {"name": "dummy-dit", "preset": "tiny"}, "autoencoder": {"name": "dummy-ae", "preset": "tiny"}}
    d.update(over)
    path = tmp_path / "t2v.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_prompt_colour_video_and_narration_held_last_frame(reg, tmp_path):
    narration = "A red circle glides to the left."  # 32 chars x 0.05 s = 1.6 s > the 9 / 8 s clip
    out = run_document(doc(tmp_path, speech={"name": "dummy-tts", "preset": "tiny"}, narration=narration),
                       device="cpu", quiet=True)
    clip = read_mp4(out)
    n_audio = round(len(narration) * 0.05 * 24000)
    assert clip.frames.shape == (math.ceil(n_audio / 24000 * 8), 32, 32, 3)  # 13 frames: last frame held
    assert len(clip.audio) == clip.frames.shape[0] * 24000 // 8  # narration + silence to the frame boundary
    assert np.abs(clip.frames[-1].astype(int) - clip.frames[8]).max() <= 2
    red = np.asarray(PALETTE["red"], float)
    assert np.abs(clip.frames.reshape(-1, 3).mean(0) - red).max() < 8  # the exact dummy flow lands on the colour
    assert shown_colour(clip.frames) == "red"
    info = json.loads(clip.metadata["comment"])
    assert info["generated_frames"] == 9 and info["written_frames"] == 13 and info["sync"] == "longest"
    # the tone survives AAC: its energy sits at the dummy's 880 Hz
    spec = np.abs(np.fft.rfft(clip.audio[:n_audio]))
    assert abs(np.argmax(spec) * 24000 / n_audio - 880) < 5


def test_sync_video_rule_and_silent_clip(reg, tmp_path):
    out = run_document(doc(tmp_path, speech={"name": "dummy-tts", "preset": "tiny"}, sync="video",
                           narration="x" * 100, prompt="a blue square moving up over a photo of coins"),
                       device="cpu", quiet=True)
    clip = read_mp4(out)
    assert clip.frames.shape[0] == 9 and len(clip.audio) == 9 * 24000 // 8
    assert shown_colour(clip.frames) == "blue"
    silent = read_mp4(run_document(doc(tmp_path, output=str(tmp_path / "silent.mp4")), device="cpu", quiet=True))
    assert silent.audio is None and silent.frames.shape[0] == 9


def test_example_narrates_its_prompt_unless_narration_is_set(reg, tmp_path, repo):
    """examples/text_to_video.yaml does not hard-code a narration: `--set prompt=...` is what is spoken.

    The dummy voice speaks 0.05 s a character, so the clip's length (sync: longest) tells which text it read."""
    example = yaml.safe_load((repo / "examples" / "text_to_video.yaml").read_text())
    assert "narration" not in example, "the example should leave the narration to default to the prompt"
    dummy = {"text_encoder": "dummy-text", "denoiser": "dummy-dit", "autoencoder": "dummy-ae", "speech": "dummy-tts"}
    example.update({k: {"name": v, "preset": "tiny"} for k, v in dummy.items()})
    path = tmp_path / "t2v.yaml"
    path.write_text(yaml.safe_dump(example))
    small = ["width=32", "height=32", "frames=9", "steps=2", "sampler=euler"]  # the dummy registry's one sampler

    def frames(*over):
        out = run_document(path, [f"output={tmp_path / 'clip.mp4'}", *small, *over], device="cpu", quiet=True,
                           overwrite=True)
        return read_mp4(out).frames.shape[0]

    prompt = "a green triangle moving right over a photo of an astronaut"  # 58 characters: 2.9 s, 24 frames at 8 fps
    assert frames(f"prompt={prompt}") == math.ceil(len(prompt) * 0.05 * 8) == 24
    assert frames(f"prompt={prompt}", "narration=A green triangle.") == 9  # 0.8 s: the 9 generated frames


def test_existing_output_refused_before_loading(reg, tmp_path, monkeypatch):
    path = doc(tmp_path)
    run_document(path, device="cpu", quiet=True)
    before = (tmp_path / "out" / "clip.mp4").read_bytes()
    monkeypatch.setattr(t2v, "load_models", lambda *a, **k: pytest.fail("loaded weights for a refused output"))
    with pytest.raises(AiprodError, match="already exists; pass --overwrite"):
        run_document(path, device="cpu", quiet=True)
    assert (tmp_path / "out" / "clip.mp4").read_bytes() == before
    monkeypatch.undo()
    monkeypatch.setattr(registry_mod, "_REGISTRY", reg)
    run_document(path, ["prompt=a green circle moving up over a photo of grass"], device="cpu", quiet=True,
                 overwrite=True)
    assert shown_colour(read_mp4(tmp_path / "out" / "clip.mp4").frames) == "green"


def test_colour_blind_denoiser_fails_the_colour(reg, tmp_path):
    out = run_document(doc(tmp_path, denoiser={"name": "dummy-dit", "preset": "tiny", "config": {"colour_blind": True}}),
                       device="cpu", quiet=True)
    assert shown_colour(read_mp4(out).frames) is None


def test_two_stage_and_cfg(reg, tmp_path):
    out = run_document(doc(tmp_path, guidance_scale=3.0, negative_prompt="a blue blur", steps=3,
                           two_stage={"upsampler": {"name": "dummy-up", "preset": "tiny"}, "sigma": 0.5, "steps": 2}),
                       device="cpu", quiet=True)
    assert read_mp4(out).frames.shape == (9, 32, 32, 3)
    assert shown_colour(read_mp4(out).frames) == "red"


def test_config_errors_are_reported_together(reg, tmp_path):
    with pytest.raises(ConfigError) as err:
        run_document(doc(tmp_path, frames=8, width=40, narration="hi", autoencoder={"name": "dummy-dit", "preset": "tiny"},
                         denoiser={"name": "dummy-dit", "kind": "text-encoder", "preset": "tiny"}), device="cpu")
    text = "\n".join(err.value.lines())
    assert "frames must be 1 + 4k" in text and "multiple of 16" in text and "needs a 'speech' component" in text
    assert "expected a video-denoiser component" in text
    with pytest.raises(ConfigError, match="autoencoder.name: unknown video-autoencoder component 'dummy-dit'"):
        run_document(doc(tmp_path, autoencoder={"name": "dummy-dit", "preset": "tiny"}), device="cpu")


def test_mismatched_components_name_the_problem(reg, tmp_path):
    with pytest.raises(AiprodError, match="8-wide embeddings, the denoiser expects text_dim 16"):
        run_document(doc(tmp_path, denoiser={"name": "dummy-dit", "preset": "tiny", "config": {"text_dim": 16}}),
                     device="cpu", quiet=True)
    with pytest.raises(AiprodError, match=r"width: 48 is not a multiple of 32 \(autoencoder x8 x patch 2 x upsampler 2\)"):
        run_document(doc(tmp_path, width=48, two_stage={"upsampler": {"name": "dummy-up", "preset": "tiny"}}),
                     device="cpu", quiet=True)


# the sampler / two-stage comparisons against a built-in copy are gone with the copy: the pipeline samples
# through the registered sampler components only (tests/test_api.py checks it against aiprod_shdt's sample)


# -- the real tiny components, whichever are installed ------------------------------------------------------
def test_example_yaml_with_demo_weights_and_two_stage(tmp_path, repo, monkeypatch):
    """examples/text_to_video.yaml (weights/tiny/*), with its optional two-stage block switched on."""
    reg = registry_mod.get_registry()
    needed = {("text-encoder", "gemma3-lora"), ("video-denoiser", "shdt"), ("video-autoencoder", "hwvae")}
    missing = needed - set(reg.components)
    if missing:
        pytest.skip(f"component packages not installed: {sorted(n for _, n in missing)}")
    monkeypatch.chdir(repo)  # the example names weights/tiny/<component>, relative to the repository
    example = repo / "examples" / "text_to_video.yaml"
    over = [f"output={tmp_path / 'demo.mp4'}", "steps=2"]
    if ("latent-upsampler", "latent-x2") in reg.components:
        over += ["two_stage.upsampler.name=latent-x2", "two_stage.upsampler.weights=weights/tiny/upsampler",
                 "two_stage.sigma=0.6", "two_stage.steps=1"]
    if ("speech-synthesizer", "fastspeech2-hifigan") not in reg.components:
        over += ["speech=null", "narration=null"]
    out = run_document(example, over, device="cpu", seed=7, quiet=True)
    clip = read_mp4(out)
    assert clip.frames.shape[1:] == (64, 64, 3) and clip.frames.shape[0] >= 17 and clip.fps == 8
    assert clip.frames.std() > 1.0  # something was decoded
    if clip.audio is not None:
        assert len(clip.audio) == clip.frames.shape[0] * clip.sample_rate // 8
    info = json.loads(clip.metadata["comment"])
    assert info["seed"] == 7 and info["steps"] == 2
