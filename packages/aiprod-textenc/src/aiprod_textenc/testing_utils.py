"""Test helpers: a tiny random Gemma 3 base folder with a tokenizer trained by ``tokenizers``.

The folder has the layout of a real Gemma 3 text checkpoint (``Gemma3ForCausalLM`` weights,
``config.json`` with ``model_type: gemma3_text``, ``tokenizer.json`` + tokenizer config), so
tests exercise the same loading path as ``gemma-3-1b``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aiprod_textenc import base as B  # sets the offline switches first
from aiprod_textenc.data import synthetic_pairs
from aiprod_textenc.presets import GEMMA3_TINY

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids 0..3


def train_bpe_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def make_tiny_gemma3(folder: str | Path, *, seed: int = 0, vocab_size: int | None = None,
                     max_shard_size: str | None = None, **overrides) -> Path:
    """Write a seeded random tiny Gemma 3 (+ trained tokenizer) to ``folder``; returns the folder.

    ``max_shard_size`` (e.g. ``"40KB"``) writes sharded weights with an index, as large bases are.
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    folder = Path(folder)
    corpus = [t for pair in synthetic_pairs(200, seed=1) for t in pair]
    cfg_kwargs = {**GEMMA3_TINY, **overrides}
    tok = train_bpe_tokenizer(corpus, vocab_size or cfg_kwargs["vocab_size"])
    cfg_kwargs["vocab_size"] = max(cfg_kwargs["vocab_size"], tok.get_vocab_size())
    config = Gemma3TextConfig(**cfg_kwargs, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config).float()
        # Gemma's RMSNorm scales by (1 + w) with w = 0 at init; perturb so norms matter in tests
        for name, p in model.named_parameters():
            if "norm" in name:
                torch.nn.init.normal_(p, std=0.1)
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                      pad_token="<pad>", unk_token="<unk>")
    wrapped.save_pretrained(folder)
    B.check_folder(folder)
    return folder
