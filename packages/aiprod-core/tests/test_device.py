"""Device helpers: the device is chosen, never assumed (benchmarks time and measure through them)."""

import pytest
import torch

from aiprod_core.device import backend, device_memory, pick_device, pick_dtype, synchronize
from aiprod_core.errors import ConfigError


def test_cpu_has_no_backend_and_synchronize_is_a_no_op():
    for dev in ("cpu", torch.device("cpu"), "meta"):
        assert backend(dev) is None and device_memory(dev) is None
        synchronize(dev)


def test_accelerator_types_map_to_their_torch_module():
    assert backend("cuda:1") is torch.cuda  # looked up, not called: no GPU needed
    assert device_memory("cuda") is torch.cuda  # it tracks allocations: peak memory from it, not from RSS
    if hasattr(torch, "mps"):
        assert backend("mps") is torch.mps


def test_pick_device_and_dtype():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32 and pick_dtype("bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="expected auto, cpu"):
        pick_device("nonsense")
    with pytest.raises(ConfigError, match="expected auto, float32"):
        pick_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
