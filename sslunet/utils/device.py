"""Which torch device a command runs on (``--device auto|cuda|cpu``)."""

from __future__ import annotations

import os

import torch

from sslunet.errors import InputError


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; under DDP each rank takes its local GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if spec == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown --device {spec!r} (auto, cuda or cpu)")


# nnU-Net v2's default number of augmentation processes for one GPU
GPU_DATA_WORKERS = 12


def default_data_workers(device: torch.device, world_size: int = 1, cpu_count: int | None = None,
                         cpu_default: int = 2) -> int:
    """Augmentation processes per training process when ``--num-workers`` is not given.

    On a GPU the network consumes batches far faster than one CPU core augments them (a 2d
    batch of 21 256x256 patches takes ~0.2 s to augment, issue 12), so each GPU process gets
    nnU-Net's 12 workers, capped by the cores left after one per training process. On a CPU the
    network is the bottleneck and ``cpu_default`` workers keep up.
    """
    if device.type != "cuda":
        return cpu_default
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    spare = (cores - world_size) // max(1, world_size)
    return max(1, min(GPU_DATA_WORKERS, spare))
