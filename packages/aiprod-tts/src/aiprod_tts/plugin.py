"""aiprod plugin hooks of aiprod-tts (hookimpls only; heavy imports stay inside the functions)."""

from __future__ import annotations

from aiprod_core import ComponentSpec, PipelineSpec, RecipeSpec, hookimpl


@hookimpl
def aiprod_register_components():
    from aiprod_tts.presets import PRESETS

    return [ComponentSpec(kind="speech-synthesizer", name="fastspeech2-hifigan",
                          factory="aiprod_tts.synthesizer:FastSpeech2HiFiGAN",
                          config_model="aiprod_tts.config:SynthesizerConfig", presets=PRESETS,
                          shapes="aiprod_tts.config:state_dict_shapes",
                          description="AIPROD-TTS v1: CMUdict + G2P frontend + FastSpeech 2/ProsodyModeler + HiFi-GAN, "
                                      "24 kHz"),
            ComponentSpec(kind="grapheme-to-phoneme", name="transformer-g2p", factory="aiprod_tts.g2p:G2PModel",
                          config_model="aiprod_tts.g2p:G2PConfig", presets={"tiny": {}},
                          description="letters -> ARPAbet phones for words outside CMUdict (the TTS frontend)"),
            ComponentSpec(kind="phoneme-recogniser", name="ctc-conv", factory="aiprod_tts.recogniser:PhonemeRecogniser",
                          config_model="aiprod_tts.recogniser:RecogniserConfig", presets={"tiny": {}},
                          description="speech -> the voices' phones (log-mel convolutions, CTC): the offline "
                                      "intelligibility measure of aiprod eval")]


@hookimpl
def aiprod_register_recipes():
    return [RecipeSpec(name="tts", config_model="aiprod_tts.train:TTSTrainConfig", run="aiprod_tts.train:train",
                       description="FastSpeech 2 acoustic stage or HiFi-GAN vocoder stage on an LJSpeech/LibriTTS corpus"),
            RecipeSpec(name="g2p", config_model="aiprod_tts.g2p:G2PTrainConfig", run="aiprod_tts.g2p:train",
                       description="the frontend's G2P model on CMUdict (held-out words: phoneme error rate)"),
            RecipeSpec(name="phoneme_recogniser", config_model="aiprod_tts.recogniser:RecogniserTrainConfig",
                       run="aiprod_tts.recogniser:train",
                       description="the CTC phoneme recogniser on an LJSpeech corpus (held-out phoneme error rate)")]


@hookimpl
def aiprod_register_pipelines():
    return [PipelineSpec(name="tts", config_model="aiprod_tts.pipeline:TTSPipelineConfig",
                         run="aiprod_tts.pipeline:run_pipeline",
                         description="text → wav with a speech-synthesizer")]


@hookimpl
def aiprod_register_commands(cli):
    from aiprod_tts.cli import tts_group

    cli.add_command(tts_group)
