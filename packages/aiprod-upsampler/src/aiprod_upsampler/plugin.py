"""aiprod entry point of aiprod-upsampler: hookimpls only, heavy imports deferred."""

from __future__ import annotations

from aiprod_core import ComponentSpec, PipelineSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components() -> list[ComponentSpec]:
    from aiprod_upsampler.presets import PRESETS

    return [
        ComponentSpec(
            kind="latent-upsampler",
            name="latent-x2",
            factory="aiprod_upsampler.model:LatentUpsampler",
            config_model="aiprod_upsampler.config:LatentUpsamplerConfig",
            shapes="aiprod_upsampler.config:state_dict_shapes",
            presets=PRESETS,
            description="AIPROD-Upsampler v1: spatial x2 of normalised video latents (3D res blocks, "
            "ICNR sub-pixel conv, residual on bilinear)",
        )
    ]


@hookimpl
def aiprod_register_recipes() -> list[RecipeSpec]:
    return [
        RecipeSpec(
            name="upsampler",
            config_model="aiprod_upsampler.train:UpsamplerTrainConfig",
            run="aiprod_upsampler.train:train",
            description="train the latent x2 upsampler on (half-res, full-res) latent pairs",
        )
    ]


@hookimpl
def aiprod_register_pipelines() -> list[PipelineSpec]:
    return [
        PipelineSpec(
            name="upsample",
            config_model="aiprod_upsampler.pipeline:UpsamplePipelineConfig",
            run="aiprod_upsampler.pipeline:run",
            description="latents file in, x2 latents out; optional re-noise + refine with a video-denoiser",
        )
    ]
