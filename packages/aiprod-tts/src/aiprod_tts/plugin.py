"""aiprod plugin hooks of aiprod-tts (hookimpls only; heavy imports stay inside the functions)."""

from __future__ import annotations

from aiprod_core import ComponentSpec, PipelineSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_tts.presets import PRESETS

    return [ComponentSpec(kind="speech-synthesizer", name="fastspeech2-hifigan",
                          factory="aiprod_tts.synthesizer:FastSpeech2HiFiGAN",
                          config_model="aiprod_tts.synthesizer:SynthesizerConfig", presets=PRESETS,
                          description="AIPROD-TTS v1: espeak-ng frontend + FastSpeech 2/ProsodyModeler + HiFi-GAN, 24 kHz")]


@hookimpl
def aiprod_register_recipes():
    return [RecipeSpec(name="tts", config_model="aiprod_tts.train:TTSTrainConfig", run="aiprod_tts.train:train",
                       description="FastSpeech 2 acoustic stage or HiFi-GAN vocoder stage on an LJSpeech/LibriTTS corpus")]


@hookimpl
def aiprod_register_pipelines():
    return [PipelineSpec(name="tts", config_model="aiprod_tts.pipeline:TTSPipelineConfig",
                         run="aiprod_tts.pipeline:run_pipeline",
                         description="text → wav with a speech-synthesizer")]


@hookimpl
def aiprod_register_commands(cli):
    from aiprod_tts.cli import tts_group

    cli.add_command(tts_group)
