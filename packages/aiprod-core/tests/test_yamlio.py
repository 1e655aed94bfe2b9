"""The one YAML reader: aliases, duplicate keys, depth, size and encoding are refused in one short line."""

import time

import pytest

from aiprod_core.config import apply_overrides, format_validation_error, load_yaml
from aiprod_core.errors import ConfigError
from aiprod_core.yamlio import MAX_DEPTH, excerpt, load_file, loads

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def _one(err: pytest.ExceptionInfo, max_len: int = 300) -> str:
    lines = err.value.lines()
    assert len(lines) == 1, lines
    assert len(lines[0]) <= max_len and "\n" not in lines[0]
    return lines[0]


def test_billion_laughs_is_refused_at_once(tmp_path):
    assert len(LAUGHS) < 700
    p = tmp_path / "laughs.yaml"
    p.write_text("pipeline: toy\n" + LAUGHS)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_yaml(p)
    assert time.perf_counter() - t0 < 1.0
    line = _one(err)
    assert line == f"{p}: line 2, column 4: anchor &a is not allowed (write the value out)"
    with pytest.raises(ConfigError, match="line 1, column 5: alias \\*a is not allowed"):
        loads("b: [*a]\n", "doc")  # an alias is refused even without its anchor


def test_anchor_alone_and_merge_keys_are_refused():
    with pytest.raises(ConfigError, match="anchor &x is not allowed"):
        loads("a: &x 1\n", "doc")
    with pytest.raises(ConfigError, match="merge key"):
        loads("a: {b: 1}\nc:\n  <<: {d: 2}\n", "doc")


def test_duplicate_keys_are_refused_at_any_depth():
    with pytest.raises(ConfigError) as err:
        loads("steps: 1\nsteps: 2\n", "doc.yaml")
    assert "line 2, column 1: duplicate key 'steps'" in _one(err)
    with pytest.raises(ConfigError, match="duplicate key 'dim'"):
        loads("model: {name: toy, config: {dim: 8, dim: 16}}\n", "doc.yaml")
    assert loads("a: {x: 1}\nb: {x: 1}\n", "doc") == {"a": {"x": 1}, "b": {"x": 1}}  # same key, other maps


def test_deep_nesting_is_one_line_not_a_recursion_error():
    for opener, closer in (("[", "]"), ("{a: ", "}")):
        text = "x: " + opener * 5000 + "1" + closer * 5000 + "\n"
        with pytest.raises(ConfigError) as err:
            loads(text, "deep.yaml")
        assert f"nested more than {MAX_DEPTH} levels deep" in _one(err)
    assert loads("x: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1), "ok")  # the limit itself is fine


def test_size_limit_and_non_utf8(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text("pipeline: toy\nsteps: [" + "1, " * 2_000_000 + "1]\n")  # ~6 MB
    with pytest.raises(ConfigError) as err:
        load_file(big)
    assert "bytes; a YAML config is at most" in _one(err)
    small = tmp_path / "small.yaml"
    small.write_text("steps: [" + "1, " * 100 + "1]\n")
    assert len(load_file(small)["steps"]) == 101
    monkeypatch.setenv("AIPROD_MAX_YAML_BYTES", "100")
    with pytest.raises(ConfigError, match="at most 100 bytes"):
        load_file(small)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"pipeline: toy\nprompt: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_file(bad)
    assert _one(err) == f"{bad}: line 2: not UTF-8 text (byte 0xe9 at offset 25)"


def test_other_parser_failures_are_one_line():
    for text in ("a: [\n", "a: b: c\n", "- 1\n--- \n- 2\n", "x: " + "9" * 5000 + "\n", "\x00\n", "? [1]\n: 2\n"):
        with pytest.raises(ConfigError) as err:
            loads(text, "doc")
        assert _one(err).startswith("doc: ")


def test_excerpt_cuts_long_values():
    assert "..." in excerpt("x" * 10_000) and len(excerpt("x" * 10_000)) <= 80
    assert len(excerpt(list(range(1_000_000)))) <= 80
    assert excerpt("short") == "'short'"


def test_validation_messages_quote_only_an_excerpt():
    from pydantic import ValidationError

    from aiprod_core.config import StrictModel

    class M(StrictModel):
        steps: int

    try:
        M.model_validate({"steps": list(range(500_000))})
    except ValidationError as e:
        lines = format_validation_error(e, "doc.yaml")
    assert len(lines) == 1 and len(lines[0]) < 200 and lines[0].startswith("doc.yaml: steps:")


def test_every_set_problem_is_reported_together():
    data = {"model": {"name": "toy"}, "steps": 1}
    with pytest.raises(ConfigError) as err:
        apply_overrides(data, ["noequals", "steps=[", "=3", "a..b=1", "steps.x=1", "model.preset=tiny"], "p.yaml")
    lines = err.value.lines()
    assert len(lines) == 5, lines
    assert all(ln.startswith("p.yaml: --set ") for ln in lines)
    assert "expected KEY=VALUE" in lines[0] and "invalid YAML value" in lines[1]
    assert "steps is not a mapping" in lines[4]
    assert data["model"]["preset"] == "tiny"  # the good one still applied
    with pytest.raises(ConfigError, match="p.yaml: --set a: line 1, column 2: anchor &x is not allowed"):
        apply_overrides({}, ["a=[&x 1, *x]"], "p.yaml")
