"""WebDataset shards: resumable writer, index with offsets, random-access reader (folder and URL), loader."""

from __future__ import annotations

import tarfile

import pytest
import torch

from aiprod_core.data.index import Index, fingerprint_files
from aiprod_core.data.loader import StepLoader
from aiprod_core.data.shards import INDEX_NAME, ShardReader, ShardWriter, finalize
from aiprod_core.errors import AiprodError

pytest.importorskip("webdataset")


def _sample(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return {"latents": torch.randn(4, 2, 3, 3, generator=g).to(torch.bfloat16), "mask": torch.ones(i % 3 + 1).bool()}


def _write(out, keys, **kw):
    with ShardWriter(out, **kw) as w:
        for i in keys:
            if f"s{i:04d}" not in w:
                w.write(f"s{i:04d}", _sample(i), {"caption": f"clip {i}"}, {"frames": i % 5})


def test_write_read_random_access(tmp_path):
    _write(tmp_path, range(10), max_count=4)
    idx = finalize(tmp_path, {"kind": "test"})
    assert len(idx) == 10 and idx.meta["shards"] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    r = ShardReader(tmp_path)
    for i in (7, 0, 9, 3):
        key = str(r.index["key"][i])
        want = _sample(int(key[1:]))
        got = r[i]
        assert torch.equal(got["latents"], want["latents"]) and torch.equal(got["mask"], want["mask"])
    assert list(r.index["frames"]) == [i % 5 for i in range(10)]
    # standard tar: the members WebDataset expects
    with tarfile.open(tmp_path / "shard-000000.tar") as tf:
        assert sorted(tf.getnames()[:2]) == ["s0000.json", "s0000.safetensors"]


def test_webdataset_streams_the_same_shards(tmp_path):
    import webdataset as wds

    from aiprod_core.data.shards import read_tar_sample

    _write(tmp_path, range(5), max_count=2)
    urls = [str(p) for p in sorted(tmp_path.glob("*.tar"))]
    got = {s["__key__"]: read_tar_sample(s["safetensors"]) for s in wds.WebDataset(urls, shardshuffle=False)}
    assert sorted(got) == [f"s{i:04d}" for i in range(5)]
    assert torch.equal(got["s0003"]["latents"], _sample(3)["latents"])


def test_writer_resumes_after_a_kill(tmp_path):
    class Killed(Exception):
        pass

    with pytest.raises(Killed), ShardWriter(tmp_path, max_count=3) as w:
        for i in range(8):
            w.write(f"s{i:04d}", _sample(i))
            if i == 6:
                raise Killed  # shards 0, 1 (6 samples) complete; the half-written third is dropped
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert not list(tmp_path.glob(".*.tmp"))
    _write(tmp_path, range(10), max_count=3)
    idx = finalize(tmp_path)
    assert list(idx["key"]) == [f"s{i:04d}" for i in range(10)]
    r = ShardReader(tmp_path)
    assert all(torch.equal(r[i]["latents"], _sample(i)["latents"]) for i in range(10))


def test_reader_through_a_url_caches_the_shards(tmp_path):
    src, cache = tmp_path / "remote", tmp_path / "cache"
    _write(src, range(6), max_count=4)
    finalize(src)
    r = ShardReader(f"pipe:cat {src}/{{name}}", cache_dir=cache)  # what `pipe:aws s3 cp s3://.../{name} -` does
    assert r.remote and torch.equal(r[5]["latents"], _sample(5)["latents"])
    assert len(list(cache.glob("*.tar"))) == 1  # only the shard that was read
    with pytest.raises(AiprodError, match="not found"):
        ShardReader(tmp_path / "nothing")


def test_index_cache_rebuilds_when_the_data_changes(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    calls = []

    def build():
        calls.append(1)
        return Index({"key": ["a"], "size": [f.stat().st_size]})

    p = tmp_path / "idx.npz"
    assert Index.cached(p, fingerprint_files([f]), build)["size"][0] == 1
    assert Index.cached(p, fingerprint_files([f]), build)["size"][0] == 1 and len(calls) == 1
    f.write_bytes(b"xyz")
    assert Index.cached(p, fingerprint_files([f]), build)["size"][0] == 3 and len(calls) == 2
    assert (tmp_path / "idx.npz").is_file() and INDEX_NAME == "index.npz"


class _Fetch:
    def __call__(self, draw: int) -> dict[str, torch.Tensor]:
        return {"draw": torch.tensor(draw), "x": torch.full((2,), float(draw))}


@pytest.mark.parametrize("workers", [0, 2])
def test_step_loader_returns_fetch_of_the_draw(workers):
    loader = StepLoader(_Fetch(), end=20, num_workers=workers, prefetch_factor=2)
    got = [int(loader(d)["draw"]) for d in [0, 1, 2, 3, 10, 11, 5, 19, 25]]  # jumps restart the workers
    assert got == [0, 1, 2, 3, 10, 11, 5, 19, 25]
    loader.close()


def test_index_text_columns_round_trip_as_utf8(tmp_path):
    idx = Index({"key": ["a", "été", "c"], "n": [1, 2, 3]}, {"kind": "t"})
    idx.save(tmp_path / "i.npz")
    back = Index.load(tmp_path / "i.npz")
    assert back.columns["key"].dtype.kind == "S"  # stored and loaded as UTF-8 bytes, decoded on first use
    assert back["key"].tolist() == ["a", "été", "c"] and back.row(1) == {"key": "été", "n": 2}
    assert back.meta["kind"] == "t" and "text_columns" not in back.meta
