"""The Gemma 3 base model: a local folder, checked, fingerprinted and loaded offline.

A base folder is what ``save_pretrained`` of a Gemma 3 text model writes (e.g. Google's
``gemma-3-1b-pt`` / ``gemma-3-1b-it`` downloaded once by the user): ``config.json``
(``model_type: gemma3_text``), ``tokenizer.json`` and ``model.safetensors`` or a sharded
``model.safetensors.index.json``. Nothing is ever fetched from the hub: the offline
switches are set before transformers is imported and every load is ``local_files_only``.

The *fingerprint* of a base is the SHA-256 of each of its weight files and of
``tokenizer.json`` (what ``sha256sum`` prints); a text-encoder component records it, so
an adapter is never silently applied to another base. A randomly initialised base (tests,
the ``tiny`` preset) is fingerprinted by hashing its tensors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from aiprod_core import store
from aiprod_core.errors import AiprodError
from aiprod_core.offline import enforce_offline

enforce_offline()  # before transformers / huggingface_hub read their environment

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
REQUIRED = f"{CONFIG}, {TOKENIZER} and {WEIGHTS} (or {INDEX} with its shards)"
RANDOM_KEY = "random-init"  # fingerprint key of a randomly initialised base

#: architecture fields a preset may pin; a base folder must agree on every one given
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a base folder (shards listed by the index), in order."""
    if (folder / INDEX).is_file():
        try:
            names = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError):
            raise AiprodError(f"{folder / INDEX}: not a valid safetensors index (needs a 'weight_map')") from None
        return [folder / n for n in names]
    return [folder / WEIGHTS]


def check_folder(path: str | Path) -> Path:
    """Refuse, in one line, a base folder that is missing or incomplete."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AiprodError(f"base_path {str(path)!r}: not a folder; a Gemma 3 base folder holds {REQUIRED}")
    missing = [n for n in (CONFIG, TOKENIZER) if not (folder / n).is_file()]
    if not (folder / WEIGHTS).is_file() and not (folder / INDEX).is_file():
        missing.append(f"{WEIGHTS} or {INDEX}")
    else:
        missing += [p.name for p in weight_files(folder) if not p.is_file()]
    if missing:
        raise AiprodError(f"base_path {str(folder)!r}: missing {', '.join(missing)}; a Gemma 3 base folder holds {REQUIRED}")
    return folder


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` of the weight files and ``tokenizer.json`` (stamp-cached by the core store)."""
    files = [*weight_files(folder), folder / TOKENIZER]
    digests = store.hash_files(files)
    return {p.name: digests[p] for p in files}


def state_fingerprint(module: torch.nn.Module) -> dict[str, str]:
    """Fingerprint of an in-memory (random) base: SHA-256 over its names and float32 bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().data)  # no copy
    return {RANDOM_KEY: h.hexdigest()}


def describe_mismatch(expected: Mapping[str, str], found: Mapping[str, str]) -> str:
    diff = sorted(k for k in {*expected, *found} if expected.get(k) != found.get(k))
    k = diff[0]
    return (f"{k}: expected sha256 {expected.get(k, '<absent>')[:16]}..., found {found.get(k, '<absent>')[:16]}..."
            + (f" (+{len(diff) - 1} more files differ)" if len(diff) > 1 else ""))


def text_config(folder: Path | None, overrides: Mapping[str, Any] | None):
    """The ``Gemma3TextConfig`` of a folder, or one built from ``overrides`` (a preset's architecture)."""
    from transformers import Gemma3TextConfig

    if folder is None:
        return Gemma3TextConfig(**dict(overrides or {}))
    try:
        data = json.loads((folder / CONFIG).read_text())
    except ValueError as err:
        raise AiprodError(f"{folder / CONFIG}: not valid JSON ({err})") from None
    if data.get("model_type") != "gemma3_text":
        raise AiprodError(f"{folder / CONFIG}: model_type is {data.get('model_type')!r}, expected 'gemma3_text' "
                          "(a Gemma 3 text-only checkpoint such as gemma-3-1b)")
    cfg = Gemma3TextConfig.from_pretrained(str(folder), local_files_only=True)
    bad = [f"{k}={getattr(cfg, k)} (preset expects {v})" for k, v in (overrides or {}).items()
           if k in SHAPE_KEYS and getattr(cfg, k) != v]
    if bad:
        raise AiprodError(f"{folder / CONFIG}: base does not match the preset's architecture: {', '.join(bad)}")
    return cfg


def build_random(config, seed: int) -> torch.nn.Module:
    """A Gemma 3 text model with seeded random weights, on CPU, without touching the global RNG."""
    from transformers import Gemma3TextModel

    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        return Gemma3TextModel(config).float()


def build_meta(config) -> torch.nn.Module:
    """The architecture only (ambient device must be meta): for parameter counts and meta builds."""
    from transformers import Gemma3TextModel

    return Gemma3TextModel(config)


def load_weights(folder: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load a Gemma 3 text model from a local folder (``Gemma3ForCausalLM`` checkpoints included)."""
    from transformers import Gemma3TextModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our CLI owns the terminal; errors still raise
    try:
        model = Gemma3TextModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as err:
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AiprodError(f"base_path {str(folder)!r}: cannot load the Gemma 3 weights: {line}") from None
    return model


# -- tokenizers -------------------------------------------------------------------------
def load_tokenizer(folder: Path):
    """The base's ``tokenizer.json`` as a ``tokenizers.Tokenizer`` (special tokens added by us)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(folder / TOKENIZER))
    except Exception as err:  # the Rust error types are not importable
        raise AiprodError(f"{folder / TOKENIZER}: cannot be read by the tokenizers library ({err})") from None


def byte_tokenizer():
    """A deterministic byte-level tokenizer (no training, no file) for a random base.

    Ids follow Gemma's layout: 0 ``<pad>``, 1 ``<eos>``, 2 ``<bos>``, 3 ``<unk>``, then the
    256 bytes (260 ids in all).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({ch: len(specials) + i for i, ch in enumerate(sorted(alphabet))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok
