"""CLI: malformed YAML gives exit 2 and one line per problem, without a traceback."""

import json

import pytest
import torch
import toy
from click.testing import CliRunner

from aiprod_core import registry
from aiprod_core.cli import cli


@pytest.fixture(autouse=True)
def toy_registry(monkeypatch):
    reg = registry.Registry()
    reg.register_module(toy, "toy", distribution="toy-dist")
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    return reg


def invoke(*args):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)])


def test_help_lists_commands():
    res = CliRunner().invoke(cli, ["--help"])
    for cmd in ("run", "train", "validate", "verify", "manifest", "plugins"):
        assert cmd in res.output


def test_run_pipeline_with_preset_and_override(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, preset: tiny}}\noutput: {tmp_path / 'out.txt'}\n")
    res = invoke("run", y, "--set", "steps=2", "--seed", "3")
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "out.txt").read_text().split()) == 2
    res = invoke("run", y)
    assert res.exit_code == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert invoke("run", y, "--overwrite").exit_code == 0


def test_run_pipeline_from_verified_weights(tmp_path):
    folder = toy.Toy(dim=8).save_pretrained(tmp_path / "w")
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, weights: {folder}}}\noutput: {tmp_path / 'o.txt'}\n")
    assert invoke("run", y).exit_code == 0
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    res = invoke("run", y, "--overwrite")
    assert res.exit_code == 2 and "sha256" in res.stderr and "Traceback" not in res.stderr


def test_malformed_yaml_reports_every_problem_at_once(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text(
        "pipeline: toy\n"
        "model: {name: no-such-model, preset: tiny}\n"
        "steps: many\n"
        "colour: red\n"
        "output: out.txt\n"
    )
    res = invoke("run", y)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 3, res.stderr  # the wrong type, the unknown key and the unknown component, together
    assert any("model.name" in ln and "no-such-model" in ln for ln in lines)
    assert any("steps" in ln and "many" in ln for ln in lines)
    assert any("colour" in ln and "unknown key" in ln for ln in lines)
    assert all(ln.startswith(f"aiprod: error: {y}:") for ln in lines)
    assert "Traceback" not in res.output + res.stderr

    y.write_text(
        "pipeline: toy\n"
        "model: {name: no-such-model, preset: tiny}\n"
        f"output: {tmp_path / 'o.txt'}\n"
    )
    res = invoke("run", y)
    assert res.exit_code == 2 and "model.name" in res.stderr and "installed: toy (toy)" in res.stderr


def test_missing_weights_and_bad_override_listed_together(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text(
        "pipeline: toy\n"
        "model: {name: toy, weights: /nonexistent/folder}\n"
        "output: o.txt\n"
    )
    res = invoke("validate", y)
    assert res.exit_code == 2 and "model.weights" in res.stderr and "/nonexistent/folder" in res.stderr
    y.write_text("pipeline: toy\nmodel: {name: toy, preset: tiny, config: {dim: wide}}\noutput: o.txt\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and "model.config.dim" in res.stderr


def test_missing_file_and_invalid_yaml(tmp_path):
    res = invoke("run", tmp_path / "nope.yaml")
    assert res.exit_code == 2 and "file not found" in res.stderr
    y = tmp_path / "broken.yaml"
    y.write_text("pipeline: toy\nmodel: {name: [\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and "invalid YAML" in res.stderr and "line" in res.stderr


def test_train_and_run_are_not_confused(tmp_path):
    y = tmp_path / "r.yaml"
    y.write_text("recipe: toy\ntrain: {output_dir: x, max_steps: 1}\n")
    res = invoke("run", y)
    assert res.exit_code == 2 and "aiprod train" in res.stderr
    assert invoke("validate", y).exit_code == 0


def test_verify_and_manifest_commands(tmp_path):
    root = tmp_path / "store"
    toy.Toy(dim=8).save_pretrained(root / "a", manifest=False)
    res = invoke("verify", root)
    assert res.exit_code == 2 and "aiprod manifest" in res.stderr
    assert invoke("manifest", root).exit_code == 0
    assert invoke("verify", root).exit_code == 0
    assert json.loads((root / "MANIFEST.json").read_text())["components"][0]["kind"] == "toy"
    (root / "a" / "config.json").write_text("{}")
    res = invoke("verify", root, "--force")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1


def test_device_and_dtype_are_chosen(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, preset: tiny}}\noutput: {tmp_path / 'o.txt'}\n")
    assert invoke("run", y, "--device", "cpu", "--dtype", "bfloat16").exit_code == 0
    res = invoke("run", y, "--dtype", "float7", "--overwrite")
    assert res.exit_code == 2 and "float7" in res.stderr
    if not torch.cuda.is_available():
        res = invoke("run", y, "--device", "cuda", "--overwrite")
        assert res.exit_code == 2 and "CUDA is not available" in res.stderr
