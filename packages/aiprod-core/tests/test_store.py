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


# -- issue 19: tampering that the stamp cache, links, indexes or the two manifests must not let through -------
def _tamper_keeping_size_and_mtime(path):
    import os

    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_in_place_edit_with_size_and_mtime_restored_is_caught(saved):
    _, folder = saved
    store.verify(folder)  # stamped
    _tamper_keeping_size_and_mtime(folder / "model.safetensors")
    with pytest.raises(VerificationError, match="sha256"):
        store.verify(folder)  # no --force needed: ctime is in the stamp


def test_recreated_file_on_a_reused_inode_is_caught(saved, monkeypatch):
    """A new file on a freed inode with the old size and mtime still has a new ctime: simulate the inode
    reuse by keying the stamp on (size, mtime, ctime) only, as if every inode were the same."""
    import os

    _, folder = saved
    real = store._stamp
    monkeypatch.setattr(store, "_stamp", lambda p: real(p).split("|", 1)[1])
    store.verify(folder, force=True)
    f = folder / "model.safetensors"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x10
    f.unlink()
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(VerificationError, match="sha256"):
        store.verify(folder)


def test_an_edited_stamp_file_is_not_trusted(saved):
    _, folder = saved
    good = json.loads((folder / "MANIFEST.json").read_text())["files"]
    expected = next(e["sha256"] for e in good if e["path"] == "model.safetensors")
    _tamper_keeping_size_and_mtime(folder / "model.safetensors")
    cache_file = store._cache_file()
    cache = json.loads(cache_file.read_text())
    assert cache["format"] == "aiprod-stamps/2"
    stamp = store._stamp(folder / "model.safetensors")
    # the forger writes the tampered file's new stamp with the digest the manifest expects
    cache["entries"][stamp] = [expected, "0" * 64]
    cache_file.write_text(json.dumps(cache))
    with pytest.raises(VerificationError, match="sha256"):
        store.verify(folder)
    # a stamp file of the old, unsigned format is ignored the same way
    cache_file.write_text(json.dumps({stamp: expected}))
    with pytest.raises(VerificationError, match="sha256"):
        store.verify(folder)


def test_symlink_to_a_sibling_components_file_is_refused(tmp_path):
    root = tmp_path / "store"
    Toy(dim=8).save_pretrained(root / "a", manifest=False)
    Toy(dim=8).save_pretrained(root / "b", manifest=False)
    store.write_manifest(root)
    (root / "b" / "model.safetensors").unlink()
    (root / "b" / "model.safetensors").symlink_to(root / "a" / "model.safetensors")
    with pytest.raises(VerificationError, match="symbolic link"):
        store.verify(root / "b", force=True)
    with pytest.raises(VerificationError, match="symbolic link"):
        store.verify(root, force=True)
    (root / "b" / "model.safetensors").unlink()
    shutil.rmtree(root / "b")
    (root / "b").symlink_to(root / "a", target_is_directory=True)  # the whole folder linked
    with pytest.raises(VerificationError, match="symbolic link"):
        store.verify(root / "b", force=True)
    with pytest.raises(VerificationError, match="symbolic link"):
        store.write_manifest(root)


def test_shard_index_naming_a_file_outside_its_folder_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "sharded"
    Toy(dim=32, depth=4).save_pretrained(folder, max_shard_size=5000)
    index = json.loads((folder / weights.INDEX).read_text())
    outside = tmp_path / "evil.safetensors"
    shutil.copy(folder / sorted(set(index["weight_map"].values()))[0], outside)
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../evil.safetensors"
    (folder / weights.INDEX).write_text(json.dumps(index))
    store.write_manifest(folder)
    _no_tensor_reads(monkeypatch)
    with pytest.raises(VerificationError, match="weight_map names '../evil.safetensors'"):
        Toy.from_pretrained(folder)
    monkeypatch.undo()
    with pytest.raises(weights.AiprodError, match="inside this folder"):
        weights.load_state_dict(folder)  # unverified loading refuses it too


def test_checksums_must_agree_with_the_manifest(saved):
    _, folder = saved
    sums = (folder / "CHECKSUMS.sha256").read_text()
    lines = sums.splitlines()
    bad = "0" * 64 + lines[0][64:]
    (folder / "CHECKSUMS.sha256").write_text("\n".join([bad, *lines[1:]]) + "\n")
    with pytest.raises(VerificationError, match="differs from MANIFEST.json"):
        store.verify(folder)
    (folder / "CHECKSUMS.sha256").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(VerificationError, match="does not list"):
        store.verify(folder)
    (folder / "CHECKSUMS.sha256").write_text(sums + "0" * 64 + "  extra.bin\n")
    with pytest.raises(VerificationError, match="lists 'extra.bin'"):
        store.verify(folder)
    (folder / "CHECKSUMS.sha256").unlink()
    with pytest.raises(VerificationError, match="missing beside MANIFEST.json"):
        store.verify(folder)


def test_hidden_files_are_not_exempt(saved):
    _, folder = saved
    (folder / ".hidden.safetensors").write_bytes(b"x")
    with pytest.raises(VerificationError, match="not listed"):
        store.verify(folder)
    store.write_manifest(folder)  # listed now: verified like any other file
    store.verify(folder)
    (folder / ".hidden.safetensors").write_bytes(b"y")
    with pytest.raises(VerificationError, match="sha256"):
        store.verify(folder, force=True)


def test_malformed_manifest_entries_are_one_line(saved):
    _, folder = saved
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for patch, expect in (({"bytes": "12"}, "expected a size"), ({"sha256": "xyz"}, "64 lowercase hex"),
                          ({"path": "./model.safetensors"}, "escapes")):
        m = json.loads(json.dumps(manifest))
        m["files"][0].update(patch)
        (folder / "MANIFEST.json").write_text(json.dumps(m))
        with pytest.raises(VerificationError, match=expect) as err:
            store.verify(folder)
        _one_line(err)
    m = json.loads(json.dumps(manifest))
    m["files"].append(dict(m["files"][0]))
    (folder / "MANIFEST.json").write_text(json.dumps(m))
    with pytest.raises(VerificationError, match="listed twice"):
        store.verify(folder)


def test_unreadable_or_odd_json_is_one_line(saved, tmp_path):
    _, folder = saved
    cfg = folder / "config.json"
    cfg.write_text('{"dim": 8, "_aiprod": [1]}')
    with pytest.raises(weights.AiprodError, match="'_aiprod' must be an object") as err:
        weights.read_config(folder)
    _one_line(err)
    cfg.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(weights.AiprodError, match="not valid JSON"):
        weights.read_config(folder)
    (folder / "MANIFEST.json").write_text("{" * 100_000)
    with pytest.raises(VerificationError, match="not valid JSON") as err:
        store.verify(folder)
    _one_line(err)


def test_meta_device_skips_initialisers_and_restores_them():
    original = torch.nn.init.normal_
    with weights.meta_device():
        emb = torch.nn.Embedding(10, 4)
        assert torch.nn.init.normal_ is not original
    assert emb.weight.is_meta and torch.nn.init.normal_ is original
    with pytest.raises(RuntimeError), weights.meta_device():
        raise RuntimeError("boom")
    assert torch.nn.init.normal_ is original


def test_git_folder_is_skipped_and_hidden_shards_are_refused(saved, tmp_path):
    _, folder = saved
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    store.verify(folder)  # a clone's history is not part of the weights
    store.write_manifest(folder)
    assert ".git/HEAD" not in (folder / "CHECKSUMS.sha256").read_text()
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")  # other hidden files are checked
    with pytest.raises(VerificationError, match="not listed"):
        store.verify(folder)
    sharded = tmp_path / "sh"
    Toy(dim=32, depth=4).save_pretrained(sharded, max_shard_size=5000)
    index = json.loads((sharded / weights.INDEX).read_text())
    name = sorted(set(index["weight_map"].values()))[0]
    (sharded / name).rename(sharded / f".{name}")
    index["weight_map"] = {k: (f".{v}" if v == name else v) for k, v in index["weight_map"].items()}
    (sharded / weights.INDEX).write_text(json.dumps(index))
    with pytest.raises(weights.AiprodError, match="inside this folder"):
        weights.load_state_dict(sharded)
