"""Commands that compute nothing must not import torch (issue 21: ``aiprod --help`` within 0.5 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from click.testing import CliRunner
from aiprod_core.cli import cli
r = CliRunner().invoke(cli, {args!r})
assert r.exit_code == 0, r.output
heavy = sorted(m for m in ("torch", "transformers", "aiprod_hwvae.model", "aiprod_textenc.model",
                           "aiprod_upsampler.model", "aiprod_audio.model") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"]])
def test_light_commands_do_not_import_torch(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"aiprod {' '.join(args)} imported {out.stdout.strip()}"
