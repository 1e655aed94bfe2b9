"""The index of a data set: one row per item (clip, utterance) with its duration, size and bucket keys.

An index is a set of equal-length numpy columns plus a small JSON ``meta`` dict, stored as one ``.npz``
(no pickle) next to the data. It is built once — by the shard writer, or by scanning a folder — and
reloaded in milliseconds after that; :meth:`Index.cached` rebuilds it only when the data's fingerprint
(names, sizes and modification times of its files) changed. Training then does O(1) work per step in
the number of items: the sampler hands out row numbers, the row tells where the bytes are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aiprod_core.errors import AiprodError
from aiprod_core.store import atomic_path

INDEX_FORMAT = "aiprod-index/1"


class Index:
    """Columns of equal length (``key`` is the conventional item name column)."""

    def __init__(self, columns: Mapping[str, Any], meta: Mapping[str, Any] | None = None):
        cols = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"index columns differ in length: {lengths}")
        self.columns = cols
        self.meta = dict(meta or {})
        # text columns stored as UTF-8 bytes (4x smaller than numpy's UTF-32), decoded on first access only:
        # training reads numbers (shard, offset, size), so a million keys are never decoded there
        self._encoded = set(self.meta.pop("text_columns", []))

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._encoded:
            self.columns[name] = np.char.decode(self.columns[name], "utf-8")
            self._encoded.discard(name)
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def row(self, i: int) -> dict[str, Any]:
        return {k: self[k][i].item() if hasattr(self[k][i], "item") else self[k][i] for k in self.columns}

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> Index:
        rows = list(rows)
        if not rows:
            return cls({}, meta)
        names = list(rows[0])
        return cls({k: [r[k] for r in rows] for k in names}, meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        cols, text = {}, []
        for k, v in self.columns.items():
            if k in self._encoded or v.dtype.kind == "U":
                text.append(k)
                v = v if k in self._encoded else np.char.encode(v, "utf-8")
            cols[k] = v
        meta = {"format": INDEX_FORMAT, **self.meta, "text_columns": text}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta)), **cols)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Index:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                cols = {k: z[k] for k in z.files if k != "__meta__"}
        except (OSError, ValueError, KeyError) as err:
            raise AiprodError(f"{path}: not a readable index ({err})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise AiprodError(f"{path}: index format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
        return cls(cols, meta)

    @classmethod
    def cached(cls, path: str | Path, fingerprint: str, build: Callable[[], Index]) -> Index:
        """The index at ``path`` when its fingerprint matches, else ``build()`` saved there (atomically, so
        concurrent ranks building the same index at start all end with a whole file)."""
        path = Path(path)
        if path.is_file():
            try:
                idx = cls.load(path)
                if idx.meta.get("fingerprint") == fingerprint:
                    return idx
            except AiprodError:
                pass
        idx = build()
        idx.meta["fingerprint"] = fingerprint
        try:
            idx.save(path)
        except OSError:  # a read-only data folder: use the index without caching it
            pass
        return idx


def fingerprint_files(paths: Iterable[str | Path], extra: Any = None) -> str:
    """A hash of the files' names, sizes and modification times (and ``extra``, e.g. build options)."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for p in sorted(str(p) for p in paths):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]
