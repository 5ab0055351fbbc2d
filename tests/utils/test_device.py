"""Which device a command runs on and how many augmentation workers feed it."""

from __future__ import annotations

import pytest
import torch

from sslunet.errors import InputError
from sslunet.utils.device import GPU_DATA_WORKERS, default_data_workers, resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda")


def test_data_workers_follow_the_device_and_the_cores():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert default_data_workers(cpu, cpu_count=64) == 2  # the network is the bottleneck
    assert default_data_workers(cpu, cpu_count=64, cpu_default=0) == 0
    assert default_data_workers(gpu, cpu_count=16) == GPU_DATA_WORKERS == 12  # nnU-Net's
    assert default_data_workers(gpu, cpu_count=8) == 7  # one core for the training process
    assert default_data_workers(gpu, world_size=4, cpu_count=16) == 3  # (16 - 4) / 4 per rank
    assert default_data_workers(gpu, cpu_count=1) == 1
