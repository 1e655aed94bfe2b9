"""Reading a component folder without torch: ``config.json``, the safetensors index, and each
safetensors header (an 8-byte little-endian length, then a JSON object: tensor -> dtype, shape,
data_offsets). ``aiprod validate`` uses these to check a folder without importing torch
(issue 21); :mod:`aiprod_core.weights` re-exports them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aiprod_core.errors import AiprodError
from aiprod_core.yamlio import clip, excerpt

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
CONFIG = "config.json"

_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
#: largest safetensors JSON header read (bytes)
MAX_HEADER = 100 << 20


def _plain_name(name: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and not Path(name).is_absolute())


def weight_files(folder: str | Path) -> tuple[list[str], dict[str, str]]:
    """The safetensors file names of a component folder and its tied names, read from the index if any.

    An index may name only files of the folder itself (no path, no ``..``): a shard outside the
    folder would be loaded unverified.
    """
    folder = Path(folder)
    index_path = folder / INDEX
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (ValueError, OSError, RecursionError) as err:
            raise AiprodError(f"{index_path}: not valid JSON ({clip(str(err), 120)})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        ties = (index.get("tied") or {}) if isinstance(index, dict) else {}
        if not isinstance(weight_map, dict) or not weight_map or not isinstance(ties, dict):
            raise AiprodError(f"{index_path}: expected an object with a non-empty 'weight_map' (tensor -> file)")
        files = sorted({str(v) for v in weight_map.values()} if all(isinstance(v, str) for v in weight_map.values())
                       else {excerpt(v) for v in weight_map.values()})
        for name in files:
            if not _plain_name(name) or not name.endswith(".safetensors") or name.startswith("."):
                raise AiprodError(f"{index_path}: weight_map names {excerpt(name, 100)}; expected a .safetensors "
                                  "file name inside this folder")
            if (folder / name).is_symlink() or not (folder / name).is_file():
                raise AiprodError(f"{index_path}: weight_map names {name}, which is not a file of {folder}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in ties.items()):
            raise AiprodError(f"{index_path}: 'tied' must map tensor names to tensor names")
        return files, dict(ties)
    if (folder / WEIGHTS).is_file():
        return [WEIGHTS], {}
    raise AiprodError(f"{folder}: no {WEIGHTS} or {INDEX}")


def read_safetensors_header(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse and check a safetensors header (tensor -> dtype, shape, data_offsets) without reading tensors."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > size - 8 or n > MAX_HEADER:
                raise AiprodError(f"{path}: not a safetensors file (header length {n} does not fit its {size} bytes)")
            raw = f.read(n)
    except OSError as err:
        raise AiprodError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AiprodError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise AiprodError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_len = size - 8 - n
    out: dict[str, dict[str, Any]] = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        bad = f"{path}: malformed safetensors header entry {excerpt(name, 60)}"
        if not isinstance(e, dict):
            raise AiprodError(f"{bad} (expected an object)")
        shape, offsets, dtype = e.get("shape"), e.get("data_offsets"), e.get("dtype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise AiprodError(f"{bad}: shape {excerpt(shape)} (expected a list of sizes)")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise AiprodError(f"{bad}: data_offsets {excerpt(offsets)} outside the file's {data_len} data bytes")
        if not isinstance(dtype, str):
            raise AiprodError(f"{bad}: dtype {excerpt(dtype)}")
        width = _DTYPE_BYTES.get(dtype)
        if width is not None and math.prod(shape) * width != offsets[1] - offsets[0]:
            raise AiprodError(f"{bad}: shape {tuple(shape)} of {dtype} is {math.prod(shape) * width} bytes, "
                              f"its offsets span {offsets[1] - offsets[0]}")
        out[name] = e
    return out


def safetensors_headers(folder: str | Path) -> dict[Path, dict[str, dict[str, Any]]]:
    """Every safetensors header of a component folder (checked, tensors not read)."""
    folder = Path(folder)
    files, _ = weight_files(folder)
    return {folder / name: read_safetensors_header(folder / name) for name in files}


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise AiprodError(f"{path}: missing (a component folder holds config.json + *.safetensors)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        raise AiprodError(f"{path}: not valid JSON ({clip(str(err), 120)})") from None
    except OSError as err:
        raise AiprodError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise AiprodError(f"{path}: expected a JSON object")
    if not isinstance(data.get("_aiprod", {}), (dict, type(None))):
        raise AiprodError(f"{path}: '_aiprod' must be an object (kind, name, version, ...)")
    return data
