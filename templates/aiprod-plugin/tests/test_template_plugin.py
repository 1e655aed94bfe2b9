"""The template passes the same contract as first-party components, and runs in a pipeline."""

import math
import subprocess
import sys

import torch

from aiprod_core.testing import ComponentContract


class TestMuLawContract(ComponentContract):
    kind = "audio-codec"
    name = "mulaw"
    preset = "tiny"

    def make_inputs(self, module):
        t = torch.arange(2400) / 24000
        return {"wav": (0.5 * torch.sin(2 * math.pi * 440 * t)).view(1, 1, -1)}

    def expected_shapes(self, inputs):
        return (1, 1, 2400)


def test_codes_roundtrip_error_is_small():
    from aiprod_plugin_template.model import MuLawCodec

    codec = MuLawCodec(bits=8)
    wav = torch.linspace(-0.9, 0.9, 1000).view(1, 1, -1)
    codes = codec.encode(wav)
    assert codes.min() >= 0 and codes.max() < 256
    assert (codec.decode(codes) - wav).abs().max() < 0.02


def test_shows_up_in_cli_and_runs_in_a_pipeline(tmp_path):
    from aiprod_plugin_template.pipelines import read_wav, write_wav

    t = torch.arange(4800) / 24000
    write_wav(tmp_path / "in.wav", 0.3 * torch.sin(2 * math.pi * 220 * t), 24000)
    (tmp_path / "p.yaml").write_text(
        f"pipeline: codec-roundtrip\ncodec: {{name: mulaw, preset: tiny}}\n"
        f"input: {tmp_path / 'in.wav'}\noutput: {tmp_path / 'out.wav'}\n"
    )
    plugins = subprocess.run([sys.executable, "-m", "aiprod_core.cli", "plugins"], capture_output=True, text=True)
    assert "audio-codec" in plugins.stdout and "mulaw" in plugins.stdout, plugins.stdout + plugins.stderr
    run = subprocess.run([sys.executable, "-m", "aiprod_core.cli", "--quiet", "run", str(tmp_path / "p.yaml")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out, rate = read_wav(tmp_path / "out.wav")
    src, _ = read_wav(tmp_path / "in.wav")
    assert rate == 24000 and out.shape == src.shape
    assert (out - src).abs().max() < 0.02
