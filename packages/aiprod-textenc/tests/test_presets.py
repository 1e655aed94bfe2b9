import pytest
import torch

from aiprod_core.errors import AiprodError
from aiprod_textenc.model import Gemma3LoraTextEncoder
from aiprod_textenc.presets import GEMMA3_1B, PRESETS


def gemma3_1b_count(c=GEMMA3_1B) -> int:
    """Gemma-3-1B parameters from its config, by hand (tied embeddings, no lm_head)."""
    d, h, kv, hd, f = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"]
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d + 2 * hd  # q, k, v, o + q_norm, k_norm
    layer = attn + 3 * d * f + 4 * d  # gated MLP + 4 RMSNorms
    return c["vocab_size"] * d + c["num_hidden_layers"] * layer + d


def test_v1_on_meta_counts():
    with torch.device("meta"):
        model = Gemma3LoraTextEncoder(**PRESETS["v1"])
    counts = model.trainable_parameters()
    print(f"\nv1: base {counts['base']:,}  LoRA {counts['lora']:,}  projection {counts['projection']:,}  "
          f"trainable {counts['lora'] + counts['projection']:,}  total {model.num_parameters():,}")
    assert counts["base"] == gemma3_1b_count() == 999_885_952  # the card's "~1B"
    # LoRA r=32 on q,k,v,o,gate,up,down of 26 layers: r * (in + out) each
    d, f, r = 1152, 6912, 32
    per_layer = r * ((d + 1024) * 2 + (d + 256) * 2 + 3 * (d + f))
    assert counts["lora"] == 26 * per_layer == 26_091_520
    assert counts["projection"] == 53_374_747
    assert model.num_parameters(trainable_only=True) == counts["lora"] + counts["projection"]
    assert model.out_dim == 4096 and len(model.layer_ids) == 26


def test_v1_without_base_folder_is_refused():
    with pytest.raises(AiprodError, match="base_path: required"):
        Gemma3LoraTextEncoder(**PRESETS["v1"])


def test_v1_refuses_a_base_of_another_shape(tiny_base):
    with pytest.raises(AiprodError, match="does not match the preset's architecture: vocab_size") as exc:
        Gemma3LoraTextEncoder(**{**PRESETS["v1"], "base_path": str(tiny_base)})
    assert "\n" not in str(exc.value)
