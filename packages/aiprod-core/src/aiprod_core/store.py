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
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiprod_core.errors import AiprodError, VerificationError
from aiprod_core.yamlio import excerpt

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


def _chmod_if_needed(path: Path, mode: int) -> None:
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


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
        # mkdtemp makes 0700, some writers 0600: give the usual permissions. Only where they
        # differ: chmod changes a file's ctime, which would void the stamps just written.
        _chmod_if_needed(tmp, 0o777 & ~mask)
        for dirpath, dirnames, filenames in os.walk(tmp):
            for d in dirnames:
                _chmod_if_needed(Path(dirpath, d), 0o777 & ~mask)
            for f in filenames:
                _chmod_if_needed(Path(dirpath, f), 0o666 & ~mask)
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
def _cache_dir() -> Path:
    root = os.environ.get("AIPROD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aiprod"
    )
    return Path(root)


def _cache_file() -> Path:
    return _cache_dir() / "verified.json"


STAMP_FORMAT = "aiprod-stamps/2"


def _stamp(path: Path) -> str:
    # (device, inode) names the file itself, so the stamp survives the atomic rename of a
    # freshly written folder; size and mtime change with any ordinary write, and ctime with
    # any write, any utime() that puts an old mtime back, and the creation of a new file
    # that reuses a freed inode: a user cannot set ctime (only the kernel does).
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _stamp_key(create: bool) -> bytes | None:
    """The per-user secret the stamps are signed with (``<cache>/stamp.key``, mode 0600)."""
    path = _cache_dir() / "stamp.key"
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        if not create:
            return None
        path.unlink()
    except FileNotFoundError:
        if not create:
            return None
    except OSError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        return path.read_bytes()
    except FileExistsError:  # another process created it first
        return _stamp_key(create=False)
    except OSError:
        return None


def _mac(key: bytes, stamp: str, digest: str) -> str:
    return hmac.new(key, f"{stamp}\n{digest}".encode(), hashlib.sha256).hexdigest()


def _read_cache() -> dict[str, str]:
    """Stamp -> digest, keeping only entries whose HMAC the per-user key confirms.

    The stamp file is not a trust anchor: an entry written or edited by anything but this
    code (without the key) is ignored, so the file is re-hashed.
    """
    key = _stamp_key(create=False)
    if key is None:
        return {}
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != STAMP_FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    out = {}
    for stamp, entry in data["entries"].items():
        if (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
                and hmac.compare_digest(entry[1], _mac(key, stamp, entry[0]))):
            out[stamp] = entry[0]
    return out


def _write_cache(cache: dict[str, str]) -> None:
    key = _stamp_key(create=True)
    if key is None:
        return  # no private key, no cache: files are re-hashed next time
    entries = {stamp: [digest, _mac(key, stamp, digest)] for stamp, digest in cache.items()}
    try:
        atomic_write_text(_cache_file(), json.dumps({"format": STAMP_FORMAT, "entries": entries}))
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
    try:
        return _hash_files(paths, force, progress)
    except OSError as err:  # unreadable file: one line, not a traceback
        raise VerificationError(f"{err.filename or '?'}: cannot read ({err.strerror or err})") from None


def _hash_files(paths: list[Path], force: bool, progress: bool) -> dict[Path, str]:
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
    """Every file below ``root`` (hidden ones too, ``.git`` folders aside) but the root's own MANIFEST/CHECKSUMS.

    A symbolic link is refused: a file is verified at the path the manifest lists, never
    through a link to somewhere else (e.g. a sibling component's file). The stamp cache is
    skipped when it lies inside ``root``.
    """
    files = []
    cache = _cache_dir().absolute()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if (here / name).is_symlink():
                raise VerificationError(f"{here / name}: is a symbolic link; a weights folder holds real files only")
        # a clone's .git holds history no loader reads (shard names cannot contain '/'); skip it
        dirnames[:] = sorted(d for d in dirnames if (here / d).absolute() != cache and d != ".git")
        for name in sorted(filenames):
            p = here / name
            rel = p.relative_to(root).as_posix()
            if rel in _SKIP:
                continue
            files.append(p)
    return files


def _component_entry(folder: Path, root: Path) -> dict[str, Any] | None:
    cfg_path = folder / "config.json"
    try:
        meta = json.loads(cfg_path.read_text()).get("_aiprod")
    except (OSError, ValueError, AttributeError, RecursionError):
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


def _find(folder: str | Path) -> tuple[Path, Path] | None:
    """(store root as written, ``folder`` as written) for the nearest ancestor holding a manifest."""
    folder = Path(os.path.abspath(folder))
    for cand in (folder, *folder.parents):
        if (cand / MANIFEST).is_file():
            return cand, folder
    return None


def find_root(folder: str | Path) -> Path | None:
    """The store root that covers ``folder``: itself or its nearest ancestor with a manifest."""
    found = _find(folder)
    return found[0].resolve() if found else None


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        raise VerificationError(f"{path}: not valid JSON ({excerpt(str(err), 120)})") from None
    except OSError as err:
        raise VerificationError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise VerificationError(f"{path}: expected a mapping with a 'files' list")
    return manifest


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def _check_entries(root: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Listed relative path -> entry, each path checked: inside the root, no link on the way."""
    where = root / MANIFEST
    listed: dict[str, dict[str, Any]] = {}
    for i, e in enumerate(manifest["files"]):
        if not isinstance(e, dict) or not {"path", "bytes", "sha256"} <= set(e):
            raise VerificationError(f"{where}: files[{i}]: expected path, bytes and sha256")
        rel = e["path"]
        if not isinstance(rel, str) or not rel:
            raise VerificationError(f"{where}: files[{i}].path: expected a relative path")
        parts = rel.split("/")
        if (os.path.isabs(rel) or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts)):
            raise VerificationError(f"{where}: files[{i}].path {excerpt(rel, 100)} escapes the store root {root}")
        if not isinstance(e["bytes"], int) or isinstance(e["bytes"], bool) or e["bytes"] < 0:
            raise VerificationError(f"{where}: files[{i}].bytes: expected a size in bytes, got {excerpt(e['bytes'])}")
        if not isinstance(e["sha256"], str) or not _SHA_RE.match(e["sha256"]):
            raise VerificationError(f"{where}: files[{i}].sha256: expected 64 lowercase hex digits")
        if rel in listed:
            raise VerificationError(f"{where}: files[{i}].path {excerpt(rel, 100)} is listed twice")
        if rel in _SKIP:
            raise VerificationError(f"{where}: files[{i}].path {rel} cannot list itself")
        listed[rel] = e
    return listed


def _cross_check_checksums(root: Path, listed: dict[str, dict[str, Any]]) -> None:
    """CHECKSUMS.sha256 (what ``sha256sum -c`` checks) must say exactly what MANIFEST.json says."""
    path = root / CHECKSUMS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VerificationError(f"{path}: missing beside {MANIFEST}; rewrite both with `aiprod manifest DIR`") from None
    except (OSError, UnicodeDecodeError) as err:
        raise VerificationError(f"{path}: unreadable ({excerpt(str(err), 100)})") from None
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _CHECKSUM_LINE.match(line)
        if m is None:
            raise VerificationError(f"{path}: line {n}: expected '<sha256>  <path>'")
        rel = m.group(2).removeprefix("./")
        if rel in sums:
            raise VerificationError(f"{path}: line {n}: {excerpt(rel, 100)} is listed twice")
        sums[rel] = m.group(1).lower()
    for rel, e in listed.items():
        if rel not in sums:
            raise VerificationError(f"{path}: does not list {rel}, which {MANIFEST} lists")
        if sums[rel] != e["sha256"]:
            raise VerificationError(f"{path}: {rel}: sha256 {sums[rel][:16]}... differs from {MANIFEST} "
                                    f"({e['sha256'][:16]}...)")
    extra = sorted(set(sums) - set(listed))
    if extra:
        raise VerificationError(f"{path}: lists {excerpt(extra[0], 100)}, which {MANIFEST} does not")


def verify(folder: str | Path, force: bool = False) -> Path:
    """Verify ``folder`` (a store root or a component folder inside one) against its manifest.

    Every file in scope must be listed, be a real file at its listed path (no symbolic link
    on the way), have the listed size and SHA-256; ``CHECKSUMS.sha256`` must agree with
    ``MANIFEST.json``; a shard index may name only files of its own folder. Returns the store
    root. Raises :class:`VerificationError` (one line) on any problem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VerificationError(f"{folder}: weights folder not found")
    found = _find(folder)
    if found is None:
        raise VerificationError(
            f"{folder}: no {MANIFEST} in this folder or above it; write one with `aiprod manifest DIR`"
        )
    written_root, written = found
    for sub in [written, *written.parents]:  # a component folder linked to another one is not itself
        if sub == written_root:
            break
        if sub.is_symlink():
            raise VerificationError(f"{sub}: is a symbolic link inside the store root {written_root}; refusing")
    root = written_root.resolve()
    manifest = _read_manifest(root)
    listed = _check_entries(root, manifest)
    _cross_check_checksums(root, listed)
    scope_rel = written.relative_to(written_root).as_posix()
    scope = root if scope_rel == "." else root / scope_rel
    prefix = "" if scope_rel == "." else scope_rel + "/"
    in_scope: dict[Path, dict[str, Any]] = {}
    for rel, e in listed.items():
        if not rel.startswith(prefix):
            continue
        p = root / rel
        for anc in [*reversed(p.relative_to(root).parents[:-1]), p.relative_to(root)]:
            if (root / anc).is_symlink():
                raise VerificationError(f"{root / anc}: is a symbolic link; refusing (listed as {rel} in {root / MANIFEST})")
        if not p.is_file():
            raise VerificationError(f"{p}: listed in {root / MANIFEST} but missing")
        size = p.stat().st_size
        if size != e["bytes"]:
            raise VerificationError(f"{p}: size {size} bytes, manifest says {e['bytes']}")
        in_scope[p] = e
    for p in _walk(scope):
        rel = p.relative_to(root).as_posix()
        if rel not in listed:
            raise VerificationError(f"{p}: not listed in {root / MANIFEST}; refusing an unverified file")
    from aiprod_core.weights import INDEX, weight_files  # weights imports this module

    for p in in_scope:
        if p.name == INDEX:
            try:
                weight_files(p.parent)
            except AiprodError as err:
                raise VerificationError(str(err)) from None
    digests = hash_files(list(in_scope), force=force, progress=True)
    for p, e in in_scope.items():
        if digests[p] != e["sha256"]:
            raise VerificationError(f"{p}: sha256 {digests[p][:16]}... does not match the manifest ({e['sha256'][:16]}...)")
    return root
