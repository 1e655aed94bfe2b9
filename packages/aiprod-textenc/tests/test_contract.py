import torch

from aiprod_core.testing import ComponentContract

PROMPTS = ["a red fox runs", "two dancers spin across a neon-lit alley at night"]


class TestGemma3LoraContract(ComponentContract):
    kind = "text-encoder"
    name = "gemma3-lora"
    preset = "tiny"

    def make_inputs(self, module):
        return {"prompts": list(PROMPTS)}

    def run_forward(self, module, inputs):
        return module.encode(inputs["prompts"])

    def expected_shapes(self, inputs):
        # the tiny preset's tokenizer is byte-level: one token per UTF-8 byte, plus <bos>
        length = 1 + max(len(p.encode()) for p in inputs["prompts"])
        return [(len(inputs["prompts"]), length, 32), (len(inputs["prompts"]), length)]


def test_tiny_mask_is_bool_and_padding_zero():
    from aiprod_core.registry import get_registry

    torch.manual_seed(0)
    module = get_registry().component("text-encoder", "gemma3-lora").build("tiny").eval()
    with torch.no_grad():
        emb, mask = module.encode(PROMPTS)
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [1 + len(p.encode()) for p in PROMPTS]
    assert emb[~mask].abs().max() == 0 and emb[mask].abs().amin(-1).max() > 0
