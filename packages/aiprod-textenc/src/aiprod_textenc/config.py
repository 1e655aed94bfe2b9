"""Config of ``gemma3-lora``, without torch or transformers: what ``aiprod validate`` reads (the model is in
:mod:`aiprod_textenc.model`), and :func:`state_dict_shapes`, what that config builds on the meta device."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from aiprod_core.config import StrictModel
from aiprod_core.shapes import Shapes

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: the files of a base folder (:data:`aiprod_textenc.base.REQUIRED`; a test keeps the two equal)
REQUIRED = "config.json, tokenizer.json and model.safetensors (or model.safetensors.index.json with its shards)"


class Gemma3LoraConfig(StrictModel):
    """Every constructor argument of :class:`Gemma3LoraTextEncoder` (= its saved ``config.json``)."""

    base_path: str | None = Field(None, description=f"local Gemma 3 folder: {REQUIRED}")
    base_sha256: dict[str, str] | None = Field(
        None, description="fingerprint of the base (file name -> sha256); filled in when built, checked when given")
    base_config: dict[str, Any] | None = Field(
        None, description="Gemma3TextConfig fields: the architecture without a folder (random base, meta count); "
                          "with a folder, the shape fields it must match")
    random_base: bool = Field(False, description="no folder: build the base with seeded random weights (tests)")
    base_seed: int = Field(0, description="seed of the random base")
    lora_rank: int = Field(32, ge=1)
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scale is alpha / rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS),
                                    description="Linear module names of Gemma 3 that get LoRA")
    hidden_layers: list[int] | None = Field(None, description="hidden-state indices to mix (0 = embeddings, "
                                                              "i = output of layer i); None = 1..N")
    connector_layers: int = Field(2, ge=0, description="bidirectional transformer blocks at the base width")
    connector_heads: int = Field(8, ge=1)
    connector_mlp_ratio: float = Field(4.0, gt=0)
    out_dim: int = Field(4096, ge=1, description="SHDT text width")
    max_length: int = Field(512, ge=2, description="tokens per prompt (with <bos>); longer prompts are truncated")
    add_bos: bool = True

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one module name (e.g. q_proj)")
        return v



#: transformers' ``Gemma3TextConfig`` defaults of the fields that set tensor shapes (a test compares them)
GEMMA3_SHAPE_DEFAULTS = {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                         "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                         "head_dim": 256, "attention_bias": False}
#: ``base_config`` fields that set no tensor shape; any other field makes :func:`state_dict_shapes` defer to a build
_SHAPELESS = frozenset({
    "query_pre_attn_scalar", "max_position_embeddings", "sliding_window", "layer_types", "sliding_window_pattern",
    "rope_theta", "rope_local_base_freq", "rope_scaling", "rms_norm_eps", "pad_token_id", "bos_token_id",
    "eos_token_id", "hidden_activation", "attention_dropout", "final_logit_softcapping", "attn_logit_softcapping",
    "use_cache", "initializer_range", "tie_word_embeddings", "torch_dtype", "model_type",
})
_LINEARS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
            "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def state_dict_shapes(cfg: Gemma3LoraConfig) -> Shapes | None:
    """State-dict key -> shape of ``Gemma3LoraTextEncoder(**cfg.model_dump())`` built on the meta device (the
    Gemma 3 base, peft's LoRA layers, the projection); no torch. None when the base comes from a folder (its
    ``config.json`` decides) or ``base_config`` / ``lora_targets`` hold something this function does not model:
    the check then builds the module."""
    from aiprod_core.errors import AiprodError

    if cfg.base_path is not None or set(cfg.base_config or {}) - set(GEMMA3_SHAPE_DEFAULTS) - _SHAPELESS:
        return None
    if any(t not in _LINEARS for t in cfg.lora_targets):
        return None
    g = {**GEMMA3_SHAPE_DEFAULTS, **(cfg.base_config or {})}
    sizes = [g[k] for k in GEMMA3_SHAPE_DEFAULTS if k != "attention_bias"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        return None
    if not isinstance(g["attention_bias"], bool):
        return None
    if g.get("layer_types") is not None and len(g["layer_types"]) != g["num_hidden_layers"]:
        return None
    d, n, hd, r = g["hidden_size"], g["num_hidden_layers"], g["head_dim"], cfg.lora_rank
    # the same refusals as the constructor, before anything is built
    if cfg.hidden_layers is not None and any(not -(n + 1) <= i <= n for i in cfg.hidden_layers):
        raise AiprodError(f"hidden_layers: {cfg.hidden_layers} out of range for a {n}-layer base (0..{n})")
    if d % cfg.connector_heads:
        raise AiprodError(f"connector_heads: {cfg.connector_heads} does not divide the base width {d}")
    q, kv, inter = g["num_attention_heads"] * hd, g["num_key_value_heads"] * hd, g["intermediate_size"]
    dims = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, inter), "up_proj": (d, inter), "down_proj": (inter, d)}
    s, m = Shapes(), "text_model.base_model.model"
    s.embedding(f"{m}.embed_tokens", g["vocab_size"], d)
    for i in range(n):
        for name, (fin, fout) in dims.items():
            key = f"{m}.layers.{i}.{_LINEARS[name]}.{name}"
            bias = g["attention_bias"] and _LINEARS[name] == "self_attn"
            if name in cfg.lora_targets:  # peft: the Linear moves to base_layer, A [r, in] and B [out, r]
                s.linear(f"{key}.base_layer", fin, fout, bias=bias)
                s.param(f"{key}.lora_A.default.weight", r, fin).param(f"{key}.lora_B.default.weight", fout, r)
            else:
                s.linear(key, fin, fout, bias=bias)
        s.param(f"{m}.layers.{i}.self_attn.q_norm.weight", hd).param(f"{m}.layers.{i}.self_attn.k_norm.weight", hd)
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            s.param(f"{m}.layers.{i}.{norm}.weight", d)
    s.param(f"{m}.norm.weight", d)
    layers = n if cfg.hidden_layers is None else len(cfg.hidden_layers)
    hidden = int(d * cfg.connector_mlp_ratio)
    s.param("projection.mix.logits", layers).param("projection.mix.gamma", 1)
    for i in range(cfg.connector_layers):
        b = f"projection.blocks.{i}"
        s.param(f"{b}.norm1.weight", d).linear(f"{b}.qkv", d, 3 * d, bias=False).linear(f"{b}.out", d, d, bias=False)
        s.param(f"{b}.norm2.weight", d).linear(f"{b}.mlp.0", d, hidden).linear(f"{b}.mlp.2", hidden, d)
    s.linear("projection.proj.0", d, cfg.out_dim).linear("projection.proj.2", cfg.out_dim, cfg.out_dim)
    return s.param("projection.norm.weight", cfg.out_dim)
