"""benchmarks/gpu_check.py --tiny: the one-command GPU check runs end to end on the CPU with the tiny
presets (the same code path the GPU run takes, at toy sizes) and reports every measurement."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_check(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert list(checks) == ["build", "forward_bf16", "forward_fp8", "train_step", "vae_decode"]
    for name, c in checks.items():
        assert "error" not in c, (name, c)
        assert c["seconds"] > 0 and c["peak_memory_gib"] > 0, name
    assert checks["build"]["parameters"] == 473_216  # the tiny preset, materialised from meta
    assert checks["forward_bf16"]["video_tokens"] == 32 and checks["forward_bf16"]["tflop"] > 0
    # FP8 weights change the output a little, not at all would mean nothing was quantized
    assert 0 < checks["forward_fp8"]["rel_l2_vs_bf16"] < 0.2 and checks["forward_fp8"]["fp8_linears"] > 0
    assert checks["train_step"]["loss"] > 0
    assert checks["vae_decode"]["output_shape"] == [1, 3, 5, 64, 64]
