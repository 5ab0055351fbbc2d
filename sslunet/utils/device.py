"""Which torch device a command runs on (``--device auto|cuda|cpu``)."""

from __future__ import annotations

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
