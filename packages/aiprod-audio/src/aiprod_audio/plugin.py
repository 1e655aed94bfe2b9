"""Hook implementations of aiprod-audio (heavy imports stay inside the functions)."""

from aiprod_core import ComponentSpec, PipelineSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_audio.presets import PRESETS

    return [
        ComponentSpec(
            kind="audio-codec",
            name="nac-rvq",
            factory="aiprod_audio.model:NACCodec",
            config_model="aiprod_audio.config:NACConfig",
            shapes="aiprod_audio.config:state_dict_shapes",
            presets=PRESETS,
            description="Audio-VAE v1: causal neural audio codec, 24 kHz, 75 Hz frames, RVQ 8 x 1024 (6 kbps)",
        )
    ]


@hookimpl
def aiprod_register_recipes():
    return [
        RecipeSpec(
            name="audio-codec",
            config_model="aiprod_audio.train:AudioCodecTrainConfig",
            run="aiprod_audio.train:train",
            description="train the nac-rvq codec (L1 + mel + RVQ + adversarial)",
        )
    ]


@hookimpl
def aiprod_register_pipelines():
    return [
        PipelineSpec(
            name="audio-encode",
            config_model="aiprod_audio.cli:EncodeConfig",
            run="aiprod_audio.cli:run_encode",
            description="wav/flac -> codes.safetensors",
        ),
        PipelineSpec(
            name="audio-decode",
            config_model="aiprod_audio.cli:DecodeConfig",
            run="aiprod_audio.cli:run_decode",
            description="codes.safetensors -> wav",
        ),
    ]


@hookimpl
def aiprod_register_commands(cli):
    from aiprod_audio.cli import audio_group

    cli.add_command(audio_group)
