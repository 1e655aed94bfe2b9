import contextlib
import os

import pytest
import torch

from aiprod_textenc.testing_utils import make_tiny_gemma3


@contextlib.contextmanager
def one_thread():
    """Tiny matmuls on shared cores: one intra-op thread avoids OpenMP spin contention (10x faster
    here under load). Restored afterwards, so other packages' tests are not affected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny random Gemma 3 folder (weights + trained BPE tokenizer.json + config.json)."""
    with one_thread():
        return make_tiny_gemma3(tmp_path_factory.mktemp("gemma3") / "tiny-gemma3", seed=0)


@pytest.fixture(scope="session")
def other_base(tmp_path_factory):
    """Same architecture and tokenizer, other weights (seed 1)."""
    with one_thread():
        return make_tiny_gemma3(tmp_path_factory.mktemp("gemma3") / "other-gemma3", seed=1)


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """Hash stamps of this module's files go to a temporary cache, never to ~/.cache."""
    before = os.environ.get("AIPROD_CACHE_DIR")
    os.environ["AIPROD_CACHE_DIR"] = str(tmp_path_factory.mktemp("aiprod-cache"))
    yield
    if before is None:
        os.environ.pop("AIPROD_CACHE_DIR", None)
    else:
        os.environ["AIPROD_CACHE_DIR"] = before
