"""Property test: ``aiprod validate`` on random YAML documents and ``--set`` strings never crashes or hangs.

Whatever the input: exit code 0 (a valid document) or 2, each stderr line one problem
(``aiprod: error: ...``, bounded length), no traceback, and each example well under a second;
and what validate accepts, ``aiprod run`` runs.
"""

import contextlib
import tempfile
import time
from pathlib import Path

import pytest
import toy
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiprod_core import registry
from aiprod_core.cli import MAX_LINE, cli


@pytest.fixture(scope="module", autouse=True)
def toy_registry():
    reg = registry.Registry()
    reg.register_module(toy, "toy", distribution="toy-dist")
    old, registry._REGISTRY = registry._REGISTRY, reg
    yield reg
    registry._REGISTRY = old


KEYS = ["pipeline", "recipe", "model", "steps", "output", "train", "name", "preset", "weights", "config", "dim",
        "depth", "kind", "max_steps", "output_dir", "lr", "x"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.integers(-3, 64),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["toy", "tiny", "wide", "o.txt", "/", "/nonexistent/x", "", "~", "a" * 300]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=4)),
    max_leaves=20,
)
# mostly well-formed toy documents with random parts, so that every validation layer is reached
documents = st.fixed_dictionaries(
    {"pipeline": st.sampled_from(["toy", "toy", "nope", 3])},
    optional={
        "model": st.one_of(
            st.fixed_dictionaries({"name": st.sampled_from(["toy", "nope"]), "preset": st.sampled_from(["tiny", "x"])},
                                  optional={"config": st.fixed_dictionaries(
                                      {}, optional={"dim": st.integers(-4, 10**12), "depth": st.integers(-2, 4)})}),
            values),
        "steps": values, "output": st.one_of(st.just("o.txt"), values), "extra": values,
    },
)
SNIPPETS = ["&a ", "*a", "<<: {x: 1}\n", "steps: 2\n", "[" * 200, "]", "{", ": ", "- ", "\t", "\x00", "\ufeff",
            "!!python/object:os.system ", "? ", "%YAML 1.1\n", "---\n", "'", '"', "\\", "\n  "]


valid_documents = st.fixed_dictionaries(
    {"pipeline": st.just("toy"), "output": st.sampled_from(["o.txt", "sub/o.txt"]),
     "model": st.fixed_dictionaries({"name": st.just("toy"), "preset": st.sampled_from(["tiny", "wide"])},
                                    optional={"config": st.fixed_dictionaries(
                                        {}, optional={"dim": st.integers(1, 64), "depth": st.integers(0, 3)})})},
    optional={"steps": st.integers(1, 3)},
)


@st.composite
def yaml_texts(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 3:  # a valid document (random --set strings may still break it)
        return yaml.safe_dump(draw(valid_documents))
    text = yaml.safe_dump(draw(documents if kind == 1 else values), allow_unicode=True, width=1000)
    for _ in range(draw(st.integers(0, 3))):  # splice broken bits into a well-formed dump
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(SNIPPETS)) + text[pos:]
    return text


set_strings = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["steps", "model.preset", "model.config.dim", "output", "x.y",
                                                         "", "a..b", "pipeline"]),
              st.one_of(st.text(max_size=20), st.sampled_from(["[", "&a 1", "*a", "{a: 1, a: 2}", "3", "tiny"]))),
)


@settings(max_examples=100, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=yaml_texts(), sets=st.lists(set_strings, max_size=3), raw=st.booleans())
def test_validate_never_crashes_and_reports_one_line_per_problem(text, sets, raw):
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):  # relative outputs land in a fresh folder
        path = Path(d) / "doc.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if not raw else text.encode("latin-1", "replace"))
        args = [str(path), *(f"--set={s}" for s in sets)]
        t0 = time.perf_counter()
        res = runner.invoke(cli, ["--quiet", "validate", *args])
        elapsed = time.perf_counter() - t0
        event(f"exit {res.exit_code}")
        if res.exit_code == 0:  # what validate accepts, run runs
            ran = runner.invoke(cli, ["--quiet", "run", *args])
            assert ran.exit_code == 0, ran.output + ran.stderr
    out = res.output + res.stderr
    assert "Traceback" not in out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in (0, 2), out
    assert elapsed < 2.5
    if res.exit_code == 0:
        assert res.stdout.startswith(f"{path}: ok (pipeline toy)") and not res.stderr
    else:
        lines = res.stderr.splitlines()
        assert lines, out
        for line in lines:
            assert line.startswith("aiprod: error: "), line
            assert len(line) <= len("aiprod: error: ") + MAX_LINE


@st.composite
def safetensors_blobs(draw):
    """Random bytes, or a JSON header (random entries) with a random length prefix and data."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    import json

    entry = st.fixed_dictionaries({}, optional={
        "dtype": st.sampled_from(["F32", "BF16", "I8", "X9", 3]),
        "shape": st.lists(st.integers(-2, 2**40), max_size=3),
        "data_offsets": st.lists(st.integers(-1, 2**40), max_size=3)})
    header = json.dumps(draw(st.dictionaries(st.text(max_size=5), st.one_of(entry, st.integers()), max_size=3)))
    raw = header.encode()
    n = draw(st.one_of(st.just(len(raw)), st.integers(0, 2**64 - 1)))
    return n.to_bytes(8, "little") + raw + draw(st.binary(max_size=32))


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=safetensors_blobs())
def test_malformed_safetensors_are_one_line(blob):
    from aiprod_core.errors import AiprodError
    from aiprod_core.weights import load_state_dict

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "model.safetensors").write_bytes(blob)
        try:
            load_state_dict(d)
        except AiprodError as err:
            assert "\n" not in str(err) and len(str(err)) < 600
