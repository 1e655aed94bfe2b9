"""Weights store: save/load, manifest, sha256sum compatibility and refusal before any tensor is read."""

import json
import shutil
import subprocess

import pytest
import torch
from toy import Toy

from aiprod_core import store, weights
from aiprod_core.errors import VerificationError


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = Toy(dim=8)
    return model, model.save_pretrained(tmp_path / "toy")


def test_roundtrip_is_exact_and_loads_through_meta(saved, monkeypatch):
    model, folder = saved
    built_on = []
    original = Toy.from_config.__func__

    def spy(cls, cfg):
        built_on.append(torch.empty(0).device)
        return original(cls, cfg)

    monkeypatch.setattr(Toy, "from_config", classmethod(spy))
    loaded = Toy.from_pretrained(folder)
    assert built_on == [torch.device("meta")]
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert loaded.config == model.config
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["dim"] == 8 and cfg["_aiprod"]["kind"] == "toy" and cfg["_aiprod"]["parameters"] == model.num_parameters()


def test_sha256sum_accepts_checksums(saved):
    _, folder = saved
    res = subprocess.run(["sha256sum", "-c", "CHECKSUMS.sha256"], cwd=folder, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "model.safetensors: OK" in res.stdout
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert {e["path"] for e in manifest["files"]} == {"config.json", "model.safetensors"}
    assert manifest["components"][0]["name"] == "toy"


def _no_tensor_reads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a tensor was read before verification failed")

    monkeypatch.setattr(weights, "load_state_dict", boom)


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_flipped_byte_is_refused_before_loading(saved, monkeypatch):
    _, folder = saved
    f = folder / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    _no_tensor_reads(monkeypatch)
    with pytest.raises(VerificationError) as err:
        Toy.from_pretrained(folder)
    assert "model.safetensors" in _one_line(err) and "sha256" in str(err.value)


def test_truncated_file_is_refused(saved, monkeypatch):
    _, folder = saved
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    _no_tensor_reads(monkeypatch)
    with pytest.raises(VerificationError) as err:
        Toy.from_pretrained(folder)
    assert "size" in _one_line(err)


def test_path_escaping_the_root_is_refused(saved, tmp_path, monkeypatch):
    _, folder = saved
    (tmp_path / "outside.bin").write_bytes(b"x")
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    manifest["files"].append({"path": "../outside.bin", "bytes": 1, "sha256": "0" * 64})
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    _no_tensor_reads(monkeypatch)
    with pytest.raises(VerificationError) as err:
        Toy.from_pretrained(folder)
    assert "escapes" in _one_line(err)


def test_unlisted_and_missing_files_are_refused(saved, monkeypatch):
    _, folder = saved
    _no_tensor_reads(monkeypatch)
    (folder / "extra.safetensors").write_bytes(b"not listed")
    with pytest.raises(VerificationError, match="not listed"):
        Toy.from_pretrained(folder)
    (folder / "extra.safetensors").unlink()
    (folder / "model.safetensors").unlink()
    with pytest.raises(VerificationError, match="missing"):
        Toy.from_pretrained(folder)


def test_no_manifest_is_refused_unless_verification_is_off(saved):
    model, folder = saved
    (folder / "MANIFEST.json").unlink()
    with pytest.raises(VerificationError, match="aiprod manifest"):
        Toy.from_pretrained(folder)
    assert torch.equal(Toy.from_pretrained(folder, verify=False).head.weight, model.head.weight)


def test_stamp_cache_skips_rehash_and_force_rehashes(saved, monkeypatch):
    _, folder = saved
    calls = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    store.verify(folder)  # save_pretrained already stamped these files
    assert calls == []
    store.verify(folder, force=True)
    assert len(calls) == 2


def test_sharded_save_with_index(tmp_path):
    model = Toy(dim=32, depth=4)
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size=5000)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / weights.INDEX).is_file()
    loaded = Toy.from_pretrained(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_store_root_with_several_components(tmp_path):
    root = tmp_path / "store"
    Toy(dim=8).save_pretrained(root / "a", manifest=False)
    Toy(dim=16).save_pretrained(root / "b", manifest=False)
    m = store.write_manifest(root)
    assert {c["path"] for c in m["components"]} == {"a", "b"}
    assert Toy.from_pretrained(root / "b").config.dim == 16  # verified against the root manifest
    shutil.copy(root / "a" / "model.safetensors", root / "b" / "model.safetensors")
    with pytest.raises(VerificationError):
        Toy.from_pretrained(root / "b")


def test_failed_save_leaves_previous_folder_intact(tmp_path, monkeypatch):
    folder = Toy(dim=8).save_pretrained(tmp_path / "toy")
    before = (folder / "model.safetensors").read_bytes()

    def fail(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(weights, "save_file", fail)
    with pytest.raises(RuntimeError):
        Toy(dim=8).save_pretrained(folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".aiprod-cache") == ["toy"]


def test_dtype_on_save_and_load(tmp_path):
    folder = Toy(dim=8).save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert json.loads((folder / "config.json").read_text())["_aiprod"]["dtype"] == "bfloat16"
    assert Toy.from_pretrained(folder).head.weight.dtype == torch.bfloat16
    assert Toy.from_pretrained(folder, dtype=torch.float32).head.weight.dtype == torch.float32


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        folder = Toy(dim=8).save_pretrained(tmp_path / "perm")
        store.atomic_write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "note.txt").stat().st_mode) == 0o644
