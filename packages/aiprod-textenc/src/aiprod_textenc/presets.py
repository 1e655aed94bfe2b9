"""Named sizes of ``gemma3-lora``.

``v1`` is the model card's AIPROD-Text-Encoder v1: Gemma-3-1B (hidden 1152, 26 layers, 4 query
heads, 1 KV head, head_dim 256, MLP 6912, vocabulary 262144 -> 999,885,952 parameters) with
LoRA r = 32 on every attention and MLP projection, and a 2-block connector into SHDT's text
width 4096. Give it the base folder: ``aiprod ... config: {base_path: /models/gemma-3-1b-pt}``;
the folder's config.json must agree on the shape fields below. Without a folder it only
builds on the meta device (parameter counts).

``tiny`` is a seeded random 2-layer Gemma 3 with a byte-level tokenizer: no file needed, for
tests and the contract suite (``testing_utils.make_tiny_gemma3`` writes the same kind of base
to a folder, with a trained BPE tokenizer, to test the real loading path).
"""

from __future__ import annotations

#: Gemma-3-1B (google/gemma-3-1b-pt config.json), the fields that fix its parameter count
GEMMA3_1B = {
    "vocab_size": 262144,
    "hidden_size": 1152,
    "intermediate_size": 6912,
    "num_hidden_layers": 26,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "max_position_embeddings": 32768,
    "sliding_window": 512,
}

#: a 2-layer Gemma 3 (one sliding-window layer, one global layer), ~55k parameters
GEMMA3_TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "max_position_embeddings": 256,
    "sliding_window": 8,
    "layer_types": ["sliding_attention", "full_attention"],
}

PRESETS: dict[str, dict] = {
    "tiny": {
        "base_config": GEMMA3_TINY,
        "random_base": True,
        "base_seed": 0,
        "lora_rank": 4,
        "lora_alpha": 8.0,
        "connector_layers": 1,
        "connector_heads": 4,
        "connector_mlp_ratio": 2.0,
        "out_dim": 32,
        "max_length": 64,
    },
    "v1": {
        "base_config": GEMMA3_1B,
        "lora_rank": 32,
        "lora_alpha": 32.0,
        "connector_layers": 2,
        "connector_heads": 8,
        "connector_mlp_ratio": 4.0,
        "out_dim": 4096,
        "max_length": 512,
    },
}
