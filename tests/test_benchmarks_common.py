"""benchmarks/_common.py: interleaved rounds keep one row per case, and refuse two cases of one name (their
samples would be pooled into one row, silently)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_run_cases_one_row_per_case_and_refuses_repeated_names():
    import torch

    c = _common()
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    rows = c.run_cases([c.Case("a", make("a"), group="g", ours=True), c.Case("b", make("b"), group="g")],
                       torch.device("cpu"), repeats=3, warmup=1)
    assert [r["name"] for r in rows] == ["a", "b"] and calls == {"a": 4, "b": 4}
    assert all(len(r["wall_all"]) == 3 for r in rows) and "ours_over_this" in rows[1]
    with pytest.raises(ValueError, match="repeated: a"):
        c.run_cases([c.Case("a", make("a")), c.Case("a", make("b"))], torch.device("cpu"), repeats=1)
