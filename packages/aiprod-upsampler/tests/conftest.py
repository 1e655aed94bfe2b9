import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def repo() -> Path:
    """The monorepo root (configs/ lives there)."""
    return REPO


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """The tiny models gain nothing from a second thread, and on a shared, oversubscribed CPU the
    intra-op barrier makes 2 threads ~30x slower than 1 (measured: 2.7 s vs 0.08 s per tiny step).
    Restored after each test, so other packages' tests are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def temp_components():
    """``add(spec, ...)`` registers stand-in components for one test, removed afterwards so the
    process-wide registry other packages' tests see is left as it was."""
    from aiprod_core import hookimpl
    from aiprod_core.registry import get_registry

    reg = get_registry()
    added = []

    def add(*specs):
        plugin = types.SimpleNamespace(aiprod_register_components=hookimpl(lambda: list(specs)))
        info = reg.register_module(plugin, name=f"upsampler-tests-{len(added)}-{specs[0].name}")
        added.append((plugin, info, [(s.kind, s.name) for s in specs]))

    yield add
    for plugin, info, keys in added:
        for key in keys:
            reg.components.pop(key, None)
        reg.plugins.remove(info)
        reg.pm.unregister(plugin)
