"""Commands that compute nothing must not import torch (issue 21: ``aiprod --help``, ``plugins`` and
``validate`` within 0.5 s; importing torch alone costs seconds).

Each probe runs in a fresh interpreter: the CLI with every plugin's commands (``build_cli``), driven
by click's test runner, reports its exit code, its stderr lines and which heavy modules it imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.yaml"))
MODEL_CODE = ("aiprod_audio.model", "aiprod_hwvae.model", "aiprod_shdt.model", "aiprod_textenc.model",
              "aiprod_tts.synthesizer", "aiprod_upsampler.model")

PROBE = """
import json, sys
from click.testing import CliRunner
from aiprod_core.cli import build_cli
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(build_cli(), args)
    out.append({"code": r.exit_code, "err": r.stderr.splitlines(), "exc": repr(r.exception)})
heavy = sorted(m for m in ("torch", "transformers", "peft", "safetensors", "numpy", *json.loads(sys.argv[2]))
               if m in sys.modules)
print(json.dumps({"runs": out, "heavy": heavy}))
"""


def probe(*runs: list[str], cache: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if cache is not None:
        env["AIPROD_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(runs)), json.dumps(MODEL_CODE)],
                         capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout)


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"], ["run", "--help"],
                                  ["train", "--help"], ["validate", "--help"], ["eval", "--help"]])
def test_light_commands_do_not_import_torch(args):
    res = probe(args)
    assert res["runs"][0]["code"] == 0, res
    # eval's own help loads its module (numpy); listing it among the commands does not
    allowed = {"numpy"} if args[0] == "eval" else set()
    assert set(res["heavy"]) <= allowed, f"aiprod {' '.join(args)} imported {res['heavy']}"


def _reverse_a_shape(st: Path) -> str:
    """Reverse the shape of one tensor in a safetensors header (same bytes: only the shape is wrong)."""
    raw = st.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = next(k for k, e in header.items() if k != "__metadata__" and e["shape"] != e["shape"][::-1])
    header[name]["shape"] = header[name]["shape"][::-1]
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    st.write_bytes(raw[:8] + text.ljust(n, b" ") + raw[8 + n:])
    return name


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_first_validate_of_each_example_imports_no_torch(example, tmp_path):
    """With an empty cache (nothing remembered: a fresh install, or the first run after a code change), each
    component config is validated by its torch-free config module and its shapes come from the family's
    ``shapes`` function: neither torch nor model code is imported."""
    res = probe(["validate", example], cache=tmp_path / "cache")
    assert res["runs"][0]["code"] == 0 and res["runs"][0]["err"] == [], res
    allowed = {"numpy"} if "text_to_video" in example else set()  # its output check (aiprod_pipelines.media)
    assert set(res["heavy"]) <= allowed, f"a first validate of {example} imported {res['heavy']}"


def test_a_first_validate_still_refuses_weights_that_do_not_match_their_config(tmp_path):
    weights = tmp_path / "upsampler"
    weights.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ROOT / "weights/tiny/upsampler" / name, weights / name)
    tensor = _reverse_a_shape(weights / "model.safetensors")
    res = probe(["validate", "examples/upsample.yaml", "--set", f"upsampler.weights={weights}"], cache=tmp_path / "c")
    run = res["runs"][0]
    assert run["code"] == 2 and len(run["err"]) == 1 and tensor in run["err"][0], run
    assert "config and weights do not match" in run["err"][0], run
    assert res["heavy"] == [], res


def test_validate_of_the_examples_does_not_import_torch_and_still_refuses_bad_input(tmp_path):
    """A first ``validate`` remembers what each config builds; later ones check every example from that
    record, without torch, and still find a wrong tensor shape in a weights folder and a missing input,
    each as one line and exit code 2."""
    cache = tmp_path / "cache"
    first = probe(["validate", *EXAMPLES], cache=cache)
    assert first["runs"][0]["code"] == 0, first
    weights = tmp_path / "upsampler"
    weights.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ROOT / "weights/tiny/upsampler" / name, weights / name)
    tensor = _reverse_a_shape(weights / "model.safetensors")
    res = probe(
        ["validate", *EXAMPLES],
        ["validate", "examples/upsample.yaml", "--set", f"upsampler.weights={weights}"],
        ["validate", "examples/upsample.yaml", "--set", f"input={tmp_path / 'gone.safetensors'}"],
        cache=cache,
    )
    # numpy (0.1 s) is allowed: text-to-video checks its output's extension with aiprod_pipelines.media
    assert set(res["heavy"]) <= {"numpy"}, f"validate imported {res['heavy']}"
    ok, bad_shape, missing = res["runs"]
    assert ok["code"] == 0 and ok["err"] == [], ok
    assert bad_shape["code"] == 2 and len(bad_shape["err"]) == 1, bad_shape
    line = bad_shape["err"][0]
    assert "upsampler.weights" in line and tensor in line and "config and weights do not match" in line, line
    assert missing["code"] == 2 and len(missing["err"]) == 1, missing
    assert "input" in missing["err"][0] and "gone.safetensors" in missing["err"][0] and "not found" in missing["err"][0]
