"""aiprod hookimpls of aiprod-shdt (heavy imports stay inside the functions)."""

from aiprod_core import ComponentSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_shdt.presets import PRESETS

    return [
        ComponentSpec(
            kind="video-denoiser",
            name="shdt",
            factory="aiprod_shdt.model:SHDT",
            config_model="aiprod_shdt.model:SHDTConfig",
            presets=PRESETS,
            description="SHDT: dual-stream then single-stream DiT, 3D RoPE, AdaLN-zero, rectified flow (v1: 19B)",
        )
    ]


@hookimpl
def aiprod_register_recipes():
    return [RecipeSpec(name="shdt", config_model="aiprod_shdt.train:SHDTTrainConfig", run="aiprod_shdt.train:train")]
