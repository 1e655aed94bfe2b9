"""The torch-free config module: ``state_dict_shapes`` equals a meta build, for every preset and the demo weights."""

import json
from pathlib import Path

import pytest

from aiprod_core.shapes import assert_shapes_match
from aiprod_tts.config import SynthesizerConfig, state_dict_shapes
from aiprod_tts.presets import PRESETS
from aiprod_tts.synthesizer import FastSpeech2HiFiGAN

DEMO = Path(__file__).resolve().parents[3] / "weights" / "tiny" / "tts" / "config.json"
CASES = {**{f"preset-{k}": v for k, v in PRESETS.items()},
         "speakers-postnet": {"frontend": {"mode": "character"}, "audio": {"hop_length": 64, "n_mels": 20},
                              "acoustic": {"hidden": 16, "heads": 2, "ffn_dim": 24, "encoder_layers": 1,
                                           "decoder_layers": 1, "predictor_channels": 8, "postnet_channels": 12,
                                           "postnet_layers": 3, "aligner_channels": 8, "n_speakers": 3},
                              "vocoder": {"upsample_initial_channel": 16, "upsample_rates": (4, 4, 4),
                                          "upsample_kernel_sizes": (8, 8, 8), "resblock_kernel_sizes": (3, 5),
                                          "resblock_dilations": ((1,), (1, 2))}}}
if DEMO.exists():
    CASES["demo"] = {k: v for k, v in json.loads(DEMO.read_text()).items() if k != "_aiprod"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_equal_the_built_model(name):
    assert_shapes_match(state_dict_shapes, FastSpeech2HiFiGAN, SynthesizerConfig(**CASES[name]))


def test_model_module_reexports_the_config():
    from aiprod_tts import audio, model, synthesizer, vocoder

    assert synthesizer.SynthesizerConfig is SynthesizerConfig
    assert (audio.AudioConfig, model.AcousticConfig, vocoder.VocoderConfig) == (
        synthesizer.AudioConfig, synthesizer.AcousticConfig, synthesizer.VocoderConfig)
