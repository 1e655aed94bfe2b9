"""Entry point ``textenc``: registers the ``gemma3-lora`` text encoder and its training recipe."""

from aiprod_core import ComponentSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_textenc.presets import PRESETS

    return [ComponentSpec(
        kind="text-encoder", name="gemma3-lora",
        factory="aiprod_textenc.model:Gemma3LoraTextEncoder",
        config_model="aiprod_textenc.config:Gemma3LoraConfig",
        shapes="aiprod_textenc.config:state_dict_shapes",
        presets=PRESETS,
        description="Gemma 3 (local folder, frozen) + LoRA + layer-mix connector to SHDT's text width",
        license="LoRA + projection: AIPROD proprietary; Gemma 3 base under its own licence",
    )]


@hookimpl
def aiprod_register_recipes():
    return [RecipeSpec(name="text-encoder", config_model="aiprod_textenc.train:TextEncoderTrainConfig",
                       run="aiprod_textenc.train:run",
                       description="LoRA + projection: short prompt -> what the frozen base sees in the long caption")]
