"""Every recipe under torchrun (2 gloo processes, CPU) with DDP and FSDP2, the way a user runs it:
``aiprod train <tiny config> --set ...``, 3 steps, adversarial parts on from step 0. Every rank must end
with bit-identical full weights, trainable parameters and AdamW state in fp32.

Each case starts two Python processes once (a few seconds of imports alone) and trains with DDP, then
FSDP2: marked ``slow`` (still run by ``nox -s tests``). ``AIPROD_DIST_TIMINGS=file.jsonl`` appends each case's mean step time there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aiprod_core.training.launch import train_distributed

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny"
STEPS = ["train.max_steps=3", "train.log_every=1", "train.checkpoint_every=100", "train.warmup_steps=0"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    """What the recipes read: a bf16 SHDT folder (the card's dtype), a few wavs, an espeak-ng corpus."""
    root = tmp_path_factory.mktemp("dist-assets")
    from aiprod_shdt.model import SHDT
    from aiprod_shdt.presets import PRESETS

    torch.manual_seed(0)
    SHDT(**PRESETS["tiny"]).save_pretrained(root / "shdt_bf16", dtype=torch.bfloat16)
    import soundfile as sf

    (root / "wavs").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    for i in range(2):
        wav = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t * (1 + 0.1 * np.sin(3 * t))) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / "wavs" / f"{i}.wav", wav.astype(np.float32), 24000)
    out = {"shdt_bf16": str(root / "shdt_bf16"), "wavs": str(root / "wavs")}
    if shutil.which("espeak-ng"):
        from aiprod_tts.corpus import make_corpus

        out["tts_corpus"] = str(make_corpus(root / "tts", n=4, seed=0, short=True))
    return out


CASES = {
    "shdt-full": ("shdt.yaml", [
        "curriculum=[{resolution: 32, frames: 1, steps: 3, batch_size: 2, aspect_ratios: ['1:1', '2:1']}]",
        "model.init_weights={shdt_bf16}", "model.preset=tiny", "train.lr=2.0e-5", "train.mixed_precision=bf16",
        "train.eval_every=2"]),
    "shdt-lora": ("shdt.yaml", [
        "curriculum=[{resolution: 32, frames: 1, steps: 3, batch_size: 2}]", "mode=lora", "lora.rank=4",
        "model.init_weights={shdt_bf16}", "train.mixed_precision=bf16"]),
    "hwvae-gan": ("hwvae.yaml", [
        "disc.enabled=true", "disc.start_step=0", "disc.channels=8", "disc.layers=1", "eval_clips=1",
        "stats_clips=1", "train.grad_accum_steps=2"]),
    "codec-gan": ("audio_codec.yaml", [
        "data.roots=[{wavs}]", "disc_start=0", "train.batch_size=2", "eval.max_files=1", "eval.max_seconds=0.5",
        "data.segment_seconds=0.2", "train.grad_accum_steps=2"]),
    "tts-acoustic": ("tts.yaml", ["data.root={tts_corpus}", "acoustic_loss.bin_loss_start=0"]),
    "tts-vocoder": ("tts_vocoder.yaml", ["data.root={tts_corpus}", "vocoder.segment_frames=8"]),
    "phoneme-recogniser": ("phoneme_recogniser_demo.yaml", [
        "data.root={tts_corpus}", "data.heldout={tts_corpus}", "data.g2p_weights=null", "model.channels=16",
        "model.blocks=2", "train.batch_size=2", "train.eval_every=3", "train.export_dtype=fp32"]),
    "text-encoder": ("text_encoder.yaml", ["data.synthetic_size=24", "data.eval_size=4"]),
    "upsampler": ("upsampler.yaml", ["data.eval_size=2", "train.batch_size=2"]),
}


def _fill(text: str, assets: dict[str, str]) -> str:
    for key, value in assets.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_recipe_ranks_end_identical(case, assets, tmp_path):
    config, sets = CASES[case]
    if any("{tts_corpus}" in s for s in sets) and "tts_corpus" not in assets:
        pytest.skip("system package espeak-ng not installed")
    overrides = [_fill(s, assets) for s in sets] + STEPS
    if case.startswith("tts"):  # the feature cache is shared by the ranks of a run only
        overrides.append(f"data.cache_dir={tmp_path / 'features'}")
    runs = train_distributed(TINY / config, overrides, tmp_path, ["ddp", "fsdp2"], timeout=540)
    for strategy, reports in runs.items():
        assert [r["rank"] for r in reports] == [0, 1] and {r["world_size"] for r in reports} == {2}
        assert {r["strategy"] for r in reports} == {strategy}
        assert all(r["steps"] == 3 for r in reports)
        assert reports[0]["digest"] == reports[1]["digest"], f"{strategy}: ranks ended with different weights"
        for r in reports:
            assert r["dtypes"] == ["torch.float32"], r["dtypes"]
            assert r["optimizer_dtypes"] == ["torch.float32"], r["optimizer_dtypes"]
        logged = [[{k: v for k, v in rec.items() if k != "elapsed_s"} for rec in r["history"]] for r in reports]
        assert logged[0] == logged[1]  # every rank holds the same rank means
    timings = os.environ.get("AIPROD_DIST_TIMINGS")
    if timings:
        with open(timings, "a") as f:
            for strategy, reports in runs.items():
                f.write(json.dumps({"case": case, "strategy": strategy, "step_s": reports[0]["step_s"],
                                    "loss": reports[0]["history"][-1].get("loss")}) + "\n")
