"""Every hookspec is documented, in its docstring and in docs/plugins.md."""

import inspect
from pathlib import Path

import pytest

from aiprod_core import hookspecs

DOC = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"
SPECS = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("aiprod_")]


def test_there_are_hookspecs():
    assert len(SPECS) >= 4


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_documented(name):
    fn = getattr(hookspecs, name)
    assert hasattr(fn, "aiprod_spec"), f"{name} is not marked with @hookspec"
    assert fn.__doc__ and "Example" in fn.__doc__, f"{name} needs a docstring with an example"
    if not DOC.is_file():
        pytest.skip("docs/ not shipped with this installation")
    assert f"### `{name}`" in DOC.read_text(), f"{name} has no section in docs/plugins.md"
