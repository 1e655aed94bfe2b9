import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own verified-stamp cache."""
    monkeypatch.setenv("AIPROD_CACHE_DIR", str(tmp_path / ".aiprod-cache"))
