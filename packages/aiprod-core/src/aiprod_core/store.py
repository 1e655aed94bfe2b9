"""Checksummed weights store: MANIFEST.json, CHECKSUMS.sha256, verification, atomic writes.

A *store root* holds any number of component folders plus ``MANIFEST.json`` (per file:
relative path, bytes, sha256; per component: name, kind, version, parameter count,
dtype, license) and ``CHECKSUMS.sha256`` in the format ``sha256sum -c`` accepts. A
component folder written by ``save_pretrained`` is a store root of its own.

Verification runs before any tensor is read: a missing file, a wrong size, a wrong hash,
a file the manifest does not list, or a path escaping the root is refused with one line.
Hashing large unchanged files again on every load is avoided by a stamp cache keyed on
(device + inode, size, mtime); ``force=True`` re-hashes everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiprod_core.errors import VerificationError

MANIFEST = "MANIFEST.json"
CHECKSUMS = "CHECKSUMS.sha256"
MANIFEST_FORMAT = "aiprod-manifest/1"
_SKIP = {MANIFEST, CHECKSUMS}


# -- atomic writes -------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; swap it in place on success.

    Either the complete new folder or the old one is there afterwards, never a mix.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass overwrite=True)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700, some writers 0600: give the usual permissions
        for dirpath, dirnames, filenames in os.walk(tmp):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o666 & ~mask)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- hashing with a stamp cache ------------------------------------------------------
def _cache_file() -> Path:
    root = os.environ.get("AIPROD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aiprod"
    )
    return Path(root) / "verified.json"


def _stamp(path: Path) -> str:
    # (device, inode) names the file itself, so the stamp survives the atomic rename of a
    # freshly written folder; size and mtime change with any ordinary write. --force
    # re-hashes for the paranoid case of a write that restores the old mtime.
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache() -> dict[str, str]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict[str, str]) -> None:
    try:
        atomic_write_text(_cache_file(), json.dumps(cache))
    except OSError:
        pass  # a read-only home only costs re-hashing next time


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: list[Path], force: bool = False, progress: bool = False) -> dict[Path, str]:
    """SHA-256 of each file, reusing cached digests of files whose stamp is unchanged."""
    cache = {} if force else _read_cache()
    out: dict[Path, str] = {}
    changed = False
    todo = paths
    bar = None
    if progress and sum(p.stat().st_size for p in paths) > (256 << 20):
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="sha256", unit="file", disable=_quiet())
    for p in todo:
        key = _stamp(p)
        digest = cache.get(key)
        if digest is None:
            digest = sha256_file(p)
            cache[key] = digest
            changed = True
        out[p] = digest
        if bar:
            bar.update()
    if bar:
        bar.close()
    if changed:
        _write_cache(cache if not force else {**_read_cache(), **cache})
    return out


def _quiet() -> bool:
    return os.environ.get("AIPROD_QUIET", "") not in ("", "0")


# -- manifest --------------------------------------------------------------------------
def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel in _SKIP:
                continue
            files.append(p)
    return files


def _component_entry(folder: Path, root: Path) -> dict[str, Any] | None:
    cfg_path = folder / "config.json"
    try:
        meta = json.loads(cfg_path.read_text()).get("_aiprod")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(meta, dict):
        return None
    rel = folder.relative_to(root).as_posix()
    return {
        "path": "." if rel == "" else rel,
        "name": meta.get("name"),
        "kind": meta.get("kind"),
        "version": meta.get("version"),
        "parameters": meta.get("parameters"),
        "dtype": meta.get("dtype"),
        "license": meta.get("license"),
    }


def write_manifest(root: str | Path, force: bool = False) -> dict[str, Any]:
    """Write ``MANIFEST.json`` and ``CHECKSUMS.sha256`` for every file below ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise VerificationError(f"{root}: not a folder")
    files = _walk(root)
    digests = hash_files(files, force=force, progress=True)
    entries = [
        {"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": digests[p]} for p in files
    ]
    components = []
    for cfg in sorted(p for p in files if p.name == "config.json"):
        entry = _component_entry(cfg.parent, root)
        if entry is not None:
            components.append(entry)
    manifest = {"format": MANIFEST_FORMAT, "files": entries, "components": components}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(root / CHECKSUMS, "".join(f"{e['sha256']}  {e['path']}\n" for e in entries))
    return manifest


def find_root(folder: str | Path) -> Path | None:
    """The store root that covers ``folder``: itself or its nearest ancestor with a manifest."""
    folder = Path(folder).resolve()
    for cand in (folder, *folder.parents):
        if (cand / MANIFEST).is_file():
            return cand
    return None


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise VerificationError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise VerificationError(f"{path}: expected a mapping with a 'files' list")
    return manifest


def verify(folder: str | Path, force: bool = False) -> Path:
    """Verify ``folder`` (a store root or a component folder inside one) against its manifest.

    Returns the store root. Raises :class:`VerificationError` (one line) on any problem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VerificationError(f"{folder}: weights folder not found")
    root = find_root(folder)
    if root is None:
        raise VerificationError(
            f"{folder}: no {MANIFEST} in this folder or above it; write one with `aiprod manifest DIR`"
        )
    manifest = _read_manifest(root)
    scope = folder.resolve()
    listed: dict[Path, dict[str, Any]] = {}
    for i, e in enumerate(manifest["files"]):
        if not isinstance(e, dict) or not {"path", "bytes", "sha256"} <= set(e):
            raise VerificationError(f"{root / MANIFEST}: files[{i}]: expected path, bytes and sha256")
        rel = str(e["path"])
        target = (root / rel).resolve()
        if os.path.isabs(rel) or ".." in Path(rel).parts or not target.is_relative_to(root):
            raise VerificationError(f"{root / MANIFEST}: files[{i}].path {rel!r} escapes the store root {root}")
        listed[target] = e
    in_scope = {p: e for p, e in listed.items() if p.is_relative_to(scope)}
    for p, e in in_scope.items():
        if not p.is_file():
            raise VerificationError(f"{p}: listed in {root / MANIFEST} but missing")
        size = p.stat().st_size
        if size != e["bytes"]:
            raise VerificationError(f"{p}: size {size} bytes, manifest says {e['bytes']}")
    for p in _walk(scope):
        if p.resolve() not in listed and not (scope == root and p.relative_to(root).as_posix() in _SKIP):
            raise VerificationError(f"{p}: not listed in {root / MANIFEST}; refusing an unverified file")
    digests = hash_files(list(in_scope), force=force, progress=True)
    for p, e in in_scope.items():
        if digests[p] != e["sha256"]:
            raise VerificationError(f"{p}: sha256 {digests[p][:16]}… does not match the manifest ({str(e['sha256'])[:16]}…)")
    return root
