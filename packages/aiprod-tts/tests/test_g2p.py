"""The G2P path that needs no system program: lexicon table, G2P model, held-out split and its floor,
and the voice that carries its G2P folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from aiprod_core.errors import AiprodError
from aiprod_tts.frontend import IPA
from aiprod_tts.g2p import PER_FLOOR, G2PModel, edit_distance, is_heldout, lexicon_words, phoneme_error_rate
from aiprod_tts.lexicon import PHONES, arpabet_to_ipa, cmu_lexicon, phone_to_ipa

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_G2P = ROOT / "weights" / "tiny" / "tts" / "g2p"


def test_every_phone_maps_into_the_voice_inventory():
    inventory = set(IPA)
    for phone in PHONES:
        ipa = phone_to_ipa(phone)
        assert ipa and set(ipa) <= inventory, (phone, ipa)
    assert arpabet_to_ipa(["HH", "AH0", "L", "OW1"]) == "həlˈoʊ"
    assert arpabet_to_ipa(["W", "ER1", "L", "D"]) == "wˈɜːld"
    with pytest.raises(AiprodError, match="not an ARPAbet phone"):
        phone_to_ipa("XX1")


def test_heldout_split_is_fixed_and_disjoint():
    assert is_heldout("zebra") == is_heldout("zebra")
    held = lexicon_words("heldout")
    train = {w for w, _ in lexicon_words("train")}
    assert 1500 < len(held) < 4000 and len(train) > 100_000
    assert not train & {w for w, _ in held}
    assert all(w in cmu_lexicon() for w, _ in held[:50])


def test_model_roundtrip_and_error_rate(tmp_path):
    torch.manual_seed(0)
    model = G2PModel(dim=32, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=64).eval()
    words = lexicon_words("heldout")[:8]
    out = model.predict([w for w, _ in words])
    assert len(out) == 8 and all(set(p) <= set(PHONES) for p in out)
    r = phoneme_error_rate(model, words)
    assert r["per"] > 0.5 and r["words"] == 8  # untrained: mostly wrong
    folder = model.save_pretrained(tmp_path / "g2p")
    again = G2PModel.from_pretrained(folder)
    assert again.predict([w for w, _ in words]) == out
    assert edit_distance(["A", "B", "C"], ["A", "C"]) == 1


@pytest.mark.skipif(not SHIPPED_G2P.is_dir(), reason="no shipped G2P folder")
def test_shipped_g2p_meets_its_floor_on_heldout_words(monkeypatch, tmp_path):
    """The floor of the G2P that ships in the demo voice: PER on 300 held-out lexicon words."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path))
    model = G2PModel.from_pretrained(SHIPPED_G2P)  # verified against the voice's manifest
    r = phoneme_error_rate(model, lexicon_words("heldout")[:300])
    print(r)
    assert r["per"] <= PER_FLOOR, r
    assert r["wer"] < 0.9


def test_voice_carries_its_g2p_folder(tmp_path, monkeypatch):
    from aiprod_core import store
    from aiprod_tts.presets import PRESETS
    from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    g2p = G2PModel(dim=32, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=64).save_pretrained(tmp_path / "g")
    voice = FastSpeech2HiFiGAN(**{**PRESETS["tiny"], "frontend": {"g2p_weights": str(g2p)}}).eval()
    folder = voice.save_pretrained(tmp_path / "voice")
    assert (folder / "g2p" / "model.safetensors").is_file()
    assert "g2p/model.safetensors" in (folder / "CHECKSUMS.sha256").read_text()
    assert voice.cfg.frontend.g2p_weights == str(g2p)  # the module keeps its own setting
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    loaded = FastSpeech2HiFiGAN.from_pretrained(moved)
    assert Path(loaded.cfg.frontend.g2p_weights) == (moved / "g2p").resolve()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown word goes to the G2P model: no spelling warning
        enc = loaded.frontend.encode("Blorptastic hello")
    assert enc.symbols.endswith("həlˈoʊ") and enc.unknown == []
    again = loaded.save_pretrained(tmp_path / "copy")  # a loaded voice saves its G2P again
    assert (again / "g2p" / "config.json").is_file()
    (moved / "g2p" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(AiprodError, match="model.safetensors"):
        store.verify(moved, force=True)


def test_recipe_trains_and_exports_a_component(tmp_path, monkeypatch):
    from aiprod_core.pipeline import load_document
    from aiprod_tts.g2p import train

    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / "cache"))
    recipe = ROOT / "configs" / "train" / "tiny" / "g2p_demo.yaml"
    _, _, cfg = load_document(recipe, [f"train.output_dir={tmp_path / 'run'}", "train.max_steps=6",
                                       "train.batch_size=16", "train.eval_every=3", "train.checkpoint_every=3",
                                       "train.log_every=1", "eval_words=16", "model.dim=32", "model.ffn_dim=64"])
    metrics = train(cfg)
    assert metrics["step"] == 6
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) >= 6 and any("eval/per" in r for r in rows)
    model = G2PModel.from_pretrained(tmp_path / "run" / "final" / "g2p")
    assert model.config.dim == 32 and len(model.predict(["hello"])) == 1
