"""Context parallelism (Ulysses) on 2 CPU processes (gloo): outputs and gradients equal the
single-process ones, with padded text masks and uneven heads per rank; sampling across processes."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from aiprod_shdt.parallel import check_tokens, data_parallel_rank, head_splits

sys.path.insert(0, str(Path(__file__).parent))
from cp_worker import worker  # noqa: E402


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("cp")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(2, f"file://{tmp / 'store'}", str(tmp)), nprocs=2, join=True)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [0, 1])
def test_forward_backward_equal_single_process(reports, checkpointing):
    for r in reports:
        assert r["tokens_per_rank"] * 2 == r["tokens"] == 32  # each rank really held half the video tokens
        assert r["out_scale"] > 0.1 and r["grad_scale"] > 1.0
        assert r[f"out_ckpt{checkpointing}"] < 1e-5 * r["out_scale"], r
        assert r[f"grad_ckpt{checkpointing}"] < 1e-5 * r["grad_scale"], r
        assert r["grad_local"] > 1e-2 * r["grad_scale"]  # the average over ranks is what makes them equal


@pytest.mark.slow
def test_sampling_across_processes_equals_one_process(reports):
    for r in reports:
        assert r["sample_scale"] > 0.1
        assert r["sample"] < 1e-5 * r["sample_scale"], r


def test_head_splits_and_token_check():
    assert head_splits(30, 8) == [4, 4, 4, 4, 4, 4, 3, 3]
    assert head_splits(30, 2) == [15, 15]
    with pytest.raises(ValueError, match="between 1 and the number of heads"):
        head_splits(2, 3)
    check_tokens(57_600, 8)
    with pytest.raises(ValueError, match="not a multiple"):
        check_tokens(57_600, 7)
    assert [data_parallel_rank(r, 2) for r in range(4)] == [0, 0, 1, 1]
