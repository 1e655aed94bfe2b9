"""Shared fixtures of the aiprod-pipelines tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# helper modules beside the tests (dummies.py) import by name under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own verified-stamp cache."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / ".aiprod-cache"))


@pytest.fixture
def repo() -> Path:
    """The monorepo root (examples/ and tools/ live there)."""
    return REPO
