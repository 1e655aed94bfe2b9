"""Sharded sample storage: WebDataset tar shards, read by random access from a folder or object storage.

**Format** — plain `WebDataset <https://github.com/webdataset/webdataset>`_ shards: POSIX tar files of a few
hundred samples, each sample the members ``<key>.safetensors`` (its tensors) and ``<key>.json`` (caption,
source, shape). Any tool reads them (``tar tf``, ``webdataset.WebDataset(urls)`` streaming, a decoder for
``.safetensors``); nothing is pickled. Why WebDataset rather than MosaicML streaming MDS: the same
standard-tar files stream sequentially or are read at random, its reader needs three small pure-Python
dependencies (MDS pulls in boto3, google-cloud-storage, azure, oci, transformers and pins numpy < 2.2),
and its ``gopen`` URLs (``https://``, ``gs://``, ``pipe:aws s3 cp s3://... -``) reach object storage.

**Random access** — the writer records where each sample's bytes start in its shard; that offset is a
column of the data set's :class:`~aiprod_core.data.index.Index` (``index.npz`` beside the shards), so a
training step reads exactly the bytes of its samples: one seek per sample, O(1) in the data set size.
A remote shard is fetched whole, once, into a local cache by webdataset's ``FileCache`` and then read
the same way.

**Resume** — a shard appears under its final name only once complete (written to a temporary name, then
renamed), and its rows are appended to ``<prefix>.rows.jsonl`` after that; a killed writer restarts by
skipping the keys already listed and deleting any shard without rows. :func:`finalize` merges every
writer's rows (one writer per rank) into ``index.npz``.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import torch

from aiprod_core.data.index import Index
from aiprod_core.errors import AiprodError

INDEX_NAME = "index.npz"
SAMPLE_EXT, META_EXT = "safetensors", "json"


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise AiprodError("sharded data needs webdataset (pip install 'aiprod-core[data]')") from None
    return webdataset


class ShardWriter:
    """Write samples into ``out_dir/<prefix>-NNNNNN.tar`` shards of at most ``max_count`` samples or
    ``max_bytes`` bytes. ``columns`` of each sample become index columns (numbers or strings)."""

    def __init__(self, out_dir: str | Path, prefix: str = "shard", *, max_count: int = 256,
                 max_bytes: int = 1 << 30):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise ValueError(f"shard prefix {prefix!r}: letters, digits, '_', '.', '-' only")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.rows_path = self.out / f"{prefix}.rows.jsonl"
        self.done: set[str] = set()
        numbers = []
        if self.rows_path.is_file():
            for line in self.rows_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.done.add(row["key"])
                    numbers.append(int(row["shard"].rsplit("-", 1)[1].split(".")[0]))
        listed = {f"{prefix}-{n:06d}.tar" for n in numbers}
        for f in self.out.glob(f"{prefix}-*.tar"):  # a shard renamed before its rows were written
            if f.name not in listed:
                f.unlink()
        for f in self.out.glob(f".{prefix}-*.tar.tmp"):
            f.unlink()
        self.number = max(numbers, default=-1) + 1
        self._tar = None
        self._pending: list[dict[str, Any]] = []
        self._bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def _open(self) -> None:
        wds = _webdataset()
        self._name = f"{self.prefix}-{self.number:06d}.tar"
        self._tmp = self.out / f".{self._name}.tmp"
        self._stream = open(self._tmp, "wb")
        self._tar = wds.TarWriter(self._stream, encoder=False, mtime=0.0)

    def write(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None,
              columns: dict[str, Any] | None = None) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r}: no '.' or '/' (WebDataset splits member names on them)")
        from safetensors.torch import save

        if self._tar is None:
            self._open()
        data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        info = json.dumps(meta or {}, sort_keys=True).encode()
        self._tar.write({"__key__": key, SAMPLE_EXT: data, META_EXT: info})
        self._pending.append({"key": key, **(columns or {})})
        self._bytes += len(data) + len(info)
        if len(self._pending) >= self.max_count or self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Close the current shard (if any samples), publish it and record its rows."""
        if self._tar is None:
            return
        self._tar.close()
        self._stream.close()
        final = self.out / self._name
        offsets = {}
        with tarfile.open(self._tmp) as tf:
            for m in tf:
                if m.name.endswith("." + SAMPLE_EXT):
                    offsets[m.name[: -len(SAMPLE_EXT) - 1]] = (m.offset_data, m.size)
        os.replace(self._tmp, final)
        with open(self.rows_path, "a", encoding="utf-8") as f:
            for row in self._pending:
                off, size = offsets[row["key"]]
                f.write(json.dumps({**row, "shard": self._name, "offset": off, "nbytes": size}) + "\n")
                self.done.add(row["key"])
            f.flush()
            os.fsync(f.fileno())
        self._tar, self._pending, self._bytes = None, [], 0
        self.number += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._tar is not None:  # keep only whole shards
            try:
                self._tar.close()
            finally:
                self._stream.close()
            self._tmp.unlink(missing_ok=True)
            self._tar = None


def finalize(out_dir: str | Path, meta: dict[str, Any] | None = None) -> Index:
    """Merge every writer's ``*.rows.jsonl`` under ``out_dir`` into ``out_dir/index.npz`` (rows sorted by key,
    so the index is the same whatever the number of writers)."""
    out = Path(out_dir)
    rows = []
    for p in sorted(out.glob("*.rows.jsonl")):
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise AiprodError(f"{out}: no shard rows (*.rows.jsonl) to index")
    rows.sort(key=lambda r: r["key"])
    keys = [r["key"] for r in rows]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise AiprodError(f"{out}: sample key {dup!r} written twice")
    shards = sorted({r["shard"] for r in rows})
    pos = {s: i for i, s in enumerate(shards)}
    for r in rows:
        r["shard"] = pos[r["shard"]]
    idx = Index.from_rows(rows, {**(meta or {}), "shards": shards})
    idx.save(out / INDEX_NAME)
    return idx


def is_url(location: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+]*:", location)) and not location.startswith("file:")


class ShardReader:
    """Random access to the samples of a shard set at ``location``: a local folder, or a URL that
    webdataset's ``gopen`` opens (``https://host/path``, ``gs://bucket/path``, or a ``pipe:`` command with
    ``{name}`` where the file name goes, e.g. ``pipe:aws s3 cp s3://bucket/latents/{name} -``). Remote
    files are cached whole under ``cache_dir`` (default ``$AIPROD_CACHE_DIR/shards`` or
    ``~/.cache/aiprod/shards``). Picklable: each DataLoader worker opens its own file handles."""

    def __init__(self, location: str | Path, cache_dir: str | Path | None = None):
        self.location = str(location)
        if self.location.startswith("file:"):
            self.location = self.location[len("file:"):].removeprefix("//")
        self.remote = is_url(self.location)
        base = Path(os.environ.get("AIPROD_CACHE_DIR", Path.home() / ".cache" / "aiprod"))
        self.cache_dir = str(cache_dir or base / "shards")
        self._files: dict[str, Any] = {}
        self.index = Index.load(self.local(INDEX_NAME, refresh=True))
        self.shards: list[str] = list(self.index.meta.get("shards", []))
        for col in ("key", "shard", "offset", "nbytes"):
            if col not in self.index:
                raise AiprodError(f"{self.location}/{INDEX_NAME}: a shard index has a {col!r} column")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}

    def __len__(self) -> int:
        return len(self.index)

    def url(self, name: str) -> str:
        if self.location.startswith("pipe:"):
            if "{name}" not in self.location:
                raise AiprodError(f"{self.location}: a pipe: location needs '{{name}}' where the file name goes")
            return self.location.replace("{name}", name)
        return self.location.rstrip("/") + "/" + name

    def local(self, name: str, refresh: bool = False) -> str:
        """A local path to file ``name`` of the set (fetched into the cache first when remote)."""
        if not self.remote:
            path = Path(self.location) / name
            if not path.is_file():
                raise AiprodError(f"{path}: not found (a shard folder holds {INDEX_NAME} + *.tar)")
            return str(path)
        wds = _webdataset()
        from hashlib import sha1

        url = self.url(name)
        cache = wds.cache.FileCache(self.cache_dir, validator=None,
                                    url_to_name=lambda u: sha1(u.encode()).hexdigest()[:16] + "-" + name)
        if refresh:  # the index may change between runs; shards are immutable
            dest = Path(self.cache_dir) / cache.url_to_name(url)
            dest.unlink(missing_ok=True)
        try:
            return cache.get_file(url)
        except Exception as err:  # gopen raises IOError / ValueError / subprocess errors by scheme
            raise AiprodError(f"{url}: could not fetch ({err})") from None

    def read_bytes(self, i: int) -> bytes:
        name = self.shards[int(self.index["shard"][i])]
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self.local(name), "rb")
        # positional read: forked DataLoader workers share the descriptor (and a seek offset) with the parent
        n, off = int(self.index["nbytes"][i]), int(self.index["offset"][i])
        data = os.pread(f.fileno(), n, off)
        if len(data) != n:
            raise AiprodError(f"{self.url(name)}: truncated shard ({len(data)} of {n} bytes at offset {off})")
        return data

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        return load(self.read_bytes(i))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def read_tar_sample(data: bytes) -> dict[str, torch.Tensor]:
    """Decode a ``.safetensors`` member (for ``webdataset.WebDataset(...).map(...)`` streaming readers)."""
    from safetensors.torch import load

    return load(bytes(data))


__all__ = ["INDEX_NAME", "ShardReader", "ShardWriter", "finalize", "read_tar_sample"]
