"""The real loading path: a tiny random Gemma 3 folder + a trained tokenizer, trained, saved,
reloaded, checked against another base, merged."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from aiprod_core.errors import AiprodError
from aiprod_core.training import TrainConfig, Trainer
from aiprod_core.weights import load_component
from aiprod_textenc.data import synthetic_pairs, write_pairs
from aiprod_textenc.model import Gemma3LoraTextEncoder
from aiprod_textenc.presets import PRESETS
from aiprod_textenc.train import DataSection, ModelSection, TextEncoderTask, TextEncoderTrainConfig

PROMPTS = ["a red fox running through a snowy forest", "a lighthouse", "two dancers spinning across the rain"]


def build(base, **kw):
    torch.manual_seed(0)
    return Gemma3LoraTextEncoder(**{**PRESETS["tiny"], "random_base": False, "base_path": str(base), **kw}).eval()


def encode(module, prompts=PROMPTS):
    with torch.no_grad():
        return module.encode(prompts)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the base folder -----------------------------------------------------------------------------
def test_missing_or_incomplete_folder_is_one_line(tmp_path, tiny_base):
    with pytest.raises(AiprodError, match="not a folder") as exc:
        build(tmp_path / "nowhere")
    assert "\n" not in str(exc.value) and "tokenizer.json" in str(exc.value)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_base, partial)
    (partial / "tokenizer.json").unlink()
    (partial / "model.safetensors").unlink()
    with pytest.raises(AiprodError) as exc:
        build(partial)
    msg = str(exc.value)
    assert "\n" not in msg and "missing tokenizer.json, model.safetensors or model.safetensors.index.json" in msg


def test_loads_the_folder_weights_and_tokenizer(tiny_base):
    from transformers import PreTrainedTokenizerFast

    module = build(tiny_base)
    with safe_open(str(tiny_base / "model.safetensors"), "pt") as f:  # a Gemma3ForCausalLM checkpoint
        stored = {k.removeprefix("model."): f.get_tensor(k) for k in f.keys()}
    base = module.text_model.get_base_model().state_dict()
    for key in ("embed_tokens.weight", "layers.1.mlp.down_proj.base_layer.weight", "norm.weight"):
        assert torch.equal(base[key], stored[key.replace(".base_layer", "")]), key
    # same ids as the transformers tokenizer of the folder, with <bos> first
    hf = PreTrainedTokenizerFast.from_pretrained(str(tiny_base), local_files_only=True)
    ids, mask = module.tokenize(PROMPTS[:1])
    assert ids[0].tolist() == [hf.bos_token_id] + hf(PROMPTS[0], add_special_tokens=False)["input_ids"]
    assert module.config.base_sha256 == {"model.safetensors": sha256(tiny_base / "model.safetensors"),
                                         "tokenizer.json": sha256(tiny_base / "tokenizer.json")}


def test_sharded_base_loads_and_is_fingerprinted_per_shard(tmp_path, tiny_base):
    from aiprod_textenc.testing_utils import make_tiny_gemma3

    sharded = make_tiny_gemma3(tmp_path / "sharded", seed=0, max_shard_size="100KB")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").is_file()
    module = build(sharded)
    assert sorted(module.config.base_sha256) == sorted([*shards, "tokenizer.json"])
    torch.testing.assert_close(encode(module)[0], encode(build(tiny_base))[0], rtol=0, atol=0)
    (sharded / shards[-1]).unlink()
    with pytest.raises(AiprodError, match=f"missing {shards[-1]}"):
        build(sharded)


def test_padding_does_not_change_real_tokens(tiny_base):
    module = build(tiny_base)
    batch, mask = encode(module)
    for i, p in enumerate(PROMPTS):
        alone, m = encode(module, [p])
        n = int(m.sum())
        assert mask[i].sum() == n
        torch.testing.assert_close(batch[i, :n], alone[0], rtol=1e-4, atol=1e-5)
    assert batch[~mask].abs().max() == 0


def test_bad_options_are_one_line(tiny_base):
    with pytest.raises(AiprodError, match=r"hidden_layers: \[5\] out of range for a 2-layer base"):
        build(tiny_base, hidden_layers=[5])
    with pytest.raises(AiprodError, match="lora_targets"):
        build(tiny_base, lora_targets=["no_such_proj"])


# -- train, save, reload, merge --------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    """A few Trainer steps on JSONL pairs with the folder base; returns (task, trainer, final folder)."""
    root = tmp_path_factory.mktemp("textenc-train")
    jsonl = write_pairs(root / "pairs.jsonl", synthetic_pairs(72, seed=3))
    cfg = TextEncoderTrainConfig(
        model=ModelSection(preset="tiny", config={"random_base": False, "base_path": str(tiny_base)}),
        data=DataSection(source="jsonl", train_jsonl=str(jsonl), eval_size=8),
        train=TrainConfig(output_dir=str(root / "run"), max_steps=30, batch_size=4, lr=3e-3, warmup_steps=3,
                          checkpoint_every=100, log_every=5, device="cpu", progress=False, export_dtype="fp32"))
    task = TextEncoderTask(cfg)
    trainer = Trainer(cfg.train, task)
    trainer.fit()
    return task, trainer, root / "run" / "final" / "model"


def test_training_lowers_the_loss(trained):
    """The alignment parts (pooled cosine + token F1) fall. The target is anchored (the caption through the
    frozen start-of-run head) and these synthetic captions add random shot, light and mood words that no
    prompt predicts, so the loss cannot vanish (a target that could move halved it by collapsing); the
    in-batch InfoNCE term at batch 4 is too noisy to compare five steps with five."""
    _, trainer, _ = trained
    parts = [r["loss_cos"] + r["loss_tok"] for r in trainer.history]
    first, last = sum(parts[:5]) / 5, sum(parts[-5:]) / 5
    print(f"\ntiny text-encoder: cos + token loss {first:.4f} (steps 1-5) -> {last:.4f} (steps 26-30)")
    assert last < 0.9 * first


def test_saved_folder_holds_only_adapter_and_projection(trained, tiny_base):
    task, _, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["CHECKSUMS.sha256", "MANIFEST.json", "config.json",
                                                      "model.safetensors"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        numel = sum(f.get_tensor(k).numel() for k in keys)
    assert all(k.startswith("projection.") or ".lora_" in k for k in keys)
    assert numel == task.model.num_parameters(trainable_only=True)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["base_path"] == str(tiny_base)
    assert cfg["base_sha256"]["model.safetensors"] == sha256(tiny_base / "model.safetensors")


def test_reload_gives_equal_outputs(trained):
    task, _, folder = trained
    model = task.model.eval()
    reloaded = Gemma3LoraTextEncoder.from_pretrained(folder)
    via_registry = load_component(folder)
    ref, mask = encode(model)
    for other in (reloaded, via_registry):
        out, m = encode(other)
        assert torch.equal(out, ref) and torch.equal(m, mask)
    # the adapter matters: the same model with LoRA off differs
    with model.adapter_disabled():
        plain, _ = encode(model)
    assert (plain - ref).abs().max() > 1e-3


def test_moved_base_is_accepted_other_base_refused(trained, tmp_path, other_base):
    task, _, folder = trained
    moved = shutil.copytree(task.model.config.base_path, tmp_path / "moved")
    out, _ = encode(Gemma3LoraTextEncoder.from_pretrained(folder, base_path=moved))
    assert torch.equal(out, encode(task.model.eval())[0])
    with pytest.raises(AiprodError, match="not the base this adapter was trained on") as exc:
        Gemma3LoraTextEncoder.from_pretrained(folder, base_path=other_base)
    assert "\n" not in str(exc.value) and "model.safetensors" in str(exc.value)


def test_merge_lora_matches(trained):
    _, _, folder = trained
    ref, mask = encode(Gemma3LoraTextEncoder.from_pretrained(folder))
    merged = Gemma3LoraTextEncoder.from_pretrained(folder).merge_lora()
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(encode(merged)[0], ref, rtol=1e-4, atol=1e-5)
    # bf16: merging (W + BA rounded once to bf16) stays within bf16's own error of the fp32 output
    unmerged16 = Gemma3LoraTextEncoder.from_pretrained(folder, dtype=torch.bfloat16)
    merged16 = Gemma3LoraTextEncoder.from_pretrained(folder, dtype=torch.bfloat16).merge_lora()
    err_unmerged = (encode(unmerged16)[0].float() - ref)[mask].abs().max().item()
    err_merged = (encode(merged16)[0].float() - ref)[mask].abs().max().item()
    print(f"\nbf16 max abs error vs fp32: unmerged {err_unmerged:.4f}, merged {err_merged:.4f} "
          f"(output RMS {ref[mask].pow(2).mean().sqrt():.2f})")
    assert err_merged <= max(2 * err_unmerged, 0.05)
    with pytest.raises(AiprodError, match="merged"):
        merged.save_pretrained(folder.parent / "never")
