"""CLI: malformed YAML gives exit 2 and one line per problem, without a traceback."""

import json

import pytest
import torch
import toy
from click.testing import CliRunner

from aiprod_core import registry
from aiprod_core.cli import cli
from aiprod_core.errors import AiprodError


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


# -- issue 19: malformed inputs give exit 2 and one line per problem, found before any weight is read ---------
def _lines(res):
    assert "Traceback" not in res.output + res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines and all(ln.startswith("aiprod: error: ") and len(ln) < 1100 for ln in lines), res.stderr
    return lines


def test_billion_laughs_and_huge_inputs_fail_fast_with_short_lines(tmp_path):
    from test_yamlio import LAUGHS

    y = tmp_path / "laughs.yaml"
    y.write_text("pipeline: toy\n" + LAUGHS)
    for cmd in ("validate", "run"):
        res = invoke(cmd, y)
        assert res.exit_code == 2 and len(_lines(res)) == 1 and "anchor &a is not allowed" in res.stderr
    y.write_text("pipeline: toy\nmodel: {name: toy, preset: tiny}\noutput: o.txt\nsteps: [" + "7, " * 100_000 + "7]\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and len(res.stderr) < 400 and "steps" in _lines(res)[0]


def test_bytes_and_nesting_and_duplicates_are_one_line(tmp_path):
    y = tmp_path / "p.yaml"
    for content, expect in ((b"pipeline: toy\noutput: \xff\xfe\n", "not UTF-8"),
                            (b"pipeline: toy\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n", "levels deep"),
                            (b"pipeline: toy\nsteps: 1\nsteps: 2\n", "duplicate key 'steps'")):
        y.write_bytes(content)
        res = invoke("validate", y)
        assert res.exit_code == 2 and expect in _lines(res)[0] and len(_lines(res)) == 1


def test_every_set_problem_is_listed_with_the_documents_own(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("pipeline: toy\nmodel: {name: toy, preset: tiny}\ncolour: red\noutput: o.txt\n")
    res = invoke("validate", y, "--set", "steps=[", "--set", "nokey", "--set", "output.x=1")
    lines = _lines(res)
    assert res.exit_code == 2 and len(lines) == 4, lines
    assert all(ln.startswith(f"aiprod: error: {y}: ") for ln in lines)  # every line names the YAML
    assert "--set steps: line 1, column 2: invalid YAML value" in lines[0] and "colour: unknown key" in lines[3]


def test_outputs_that_cannot_be_written_are_found_before_running(tmp_path, monkeypatch):
    import aiprod_core.pipeline as pipeline_mod

    blocker = tmp_path / "file"
    blocker.write_text("x")
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, preset: tiny}}\noutput: {blocker / 'sub' / 'o.txt'}\n")
    monkeypatch.setattr(pipeline_mod.ComponentRef, "load", lambda *a: pytest.fail("a component was loaded"))
    for cmd in ("validate", "run"):
        res = invoke(cmd, y)
        assert res.exit_code == 2 and f"output: cannot create folder {blocker / 'sub'}: {blocker} is a file" in res.stderr
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, preset: tiny}}\noutput: {tmp_path}\n")
    assert "is a folder" in _lines(invoke("run", y))[0]
    (tmp_path / "exists.txt").write_text("old")
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, preset: tiny}}\noutput: {tmp_path / 'exists.txt'}\n")
    assert invoke("validate", y).exit_code == 0  # validate does not know --overwrite
    assert "already exists; pass --overwrite" in _lines(invoke("run", y))[0]
    import os

    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        y.write_text(f"pipeline: toy\nmodel: {{name: toy, preset: tiny}}\noutput: {ro / 'o.txt'}\n")
        assert "not writable" in _lines(invoke("validate", y))[0]


def test_train_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    y = tmp_path / "r.yaml"
    y.write_text(f"recipe: toy\ntrain: {{output_dir: {f}, max_steps: 1}}\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and _lines(res) == [f"aiprod: error: {y}: train.output_dir: {f} is a file; expected a folder"]


def test_config_together_with_weights_is_refused_by_validate(tmp_path):
    folder = toy.Toy(dim=8).save_pretrained(tmp_path / "w")
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, weights: {folder}, config: {{dim: 4}}}}\noutput: o.txt\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and "'config' overrides apply to presets only" in _lines(res)[0]


def test_preset_too_large_for_memory_is_refused_before_building(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("pipeline: toy\nmodel: {name: toy, preset: tiny, config: {dim: 100000000}}\noutput: o.txt\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and "needs at least" in _lines(res)[0] and "model:" in res.stderr
    y.write_text("pipeline: toy\nmodel: {name: toy, preset: tiny, config: {dim: -3}}\noutput: o.txt\n")
    res = invoke("validate", y)  # the constructor refuses it: found by validate, not by run
    assert res.exit_code == 2 and "cannot be built with this config" in _lines(res)[0]


def _remanifest(folder):
    from aiprod_core.store import write_manifest

    write_manifest(folder, force=True)


def test_config_that_does_not_match_its_tensors(tmp_path):
    import json as _json

    folder = toy.Toy(dim=8).save_pretrained(tmp_path / "w")
    cfg = _json.loads((folder / "config.json").read_text())
    cfg["dim"] = 16
    (folder / "config.json").write_text(_json.dumps(cfg))
    _remanifest(folder)
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, weights: {folder}}}\noutput: {tmp_path / 'o.txt'}\n")
    res = invoke("validate", y)
    assert res.exit_code == 2 and "config and weights do not match" in _lines(res)[0]
    with pytest.raises(AiprodError, match="weights do not match"):  # the load path says it in one line too
        toy.Toy.from_pretrained(folder)


def test_malformed_safetensors_header_is_one_line(tmp_path):
    folder = toy.Toy(dim=8).save_pretrained(tmp_path / "w")
    st = folder / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[8:9] = b"["  # the JSON header no longer parses
    st.write_bytes(bytes(data))
    _remanifest(folder)
    y = tmp_path / "p.yaml"
    y.write_text(f"pipeline: toy\nmodel: {{name: toy, weights: {folder}}}\noutput: {tmp_path / 'o.txt'}\n")
    for cmd in ("validate", "run"):
        res = invoke(cmd, y)
        assert res.exit_code == 2 and "its header is not JSON" in _lines(res)[0]
    with pytest.raises(AiprodError, match="header is not JSON"):
        toy.Toy.from_pretrained(folder)
    st.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    _remanifest(folder)
    with pytest.raises(AiprodError, match="header length"):
        toy.Toy.from_pretrained(folder)


def test_a_broken_register_commands_is_one_line_under_strict(monkeypatch, capsys):
    import types

    from aiprod_core import cli as cli_mod
    from aiprod_core import hookimpl

    @hookimpl
    def aiprod_register_commands(cli):
        raise KeyError("boom")

    reg = registry.Registry()
    reg.register_module(types.SimpleNamespace(aiprod_register_commands=aiprod_register_commands, __name__="bad"),
                        "bad", distribution="bad-dist")
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    monkeypatch.setenv("AIPROD_STRICT_PLUGINS", "1")
    with pytest.raises(SystemExit) as exit_:
        cli_mod.main(["plugins"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad-dist" in err and "KeyError" in err and "Traceback" not in err


@pytest.mark.parametrize("field,value", [("max_steps", -5), ("batch_size", 0), ("keep_checkpoints", -1),
                                         ("checkpoint_every", 0), ("lr", -1), ("lr", ".inf"), ("log_every", 0),
                                         ("grad_accum_steps", 0), ("betas", "[0.9, 1.5]"), ("ema_decay", 1.0)])
def test_train_values_that_would_fail_or_be_silently_accepted(tmp_path, field, value):
    y = tmp_path / "r.yaml"
    y.write_text(f"recipe: toy\ntrain: {{output_dir: {tmp_path / 'out'}, max_steps: 3}}\n")
    assert invoke("validate", y).exit_code == 0
    for cmd in ("validate", "train"):
        res = invoke(cmd, y, "--set", f"train.{field}={value}")
        lines = _lines(res)
        assert res.exit_code == 2 and len(lines) == 1 and f"{y}: train.{field}" in lines[0], lines
