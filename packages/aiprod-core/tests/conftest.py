import sys
from pathlib import Path

import pytest

# the helper modules beside the tests (toy.py) import by name under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own verified-stamp cache."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / ".aiprod-cache"))
