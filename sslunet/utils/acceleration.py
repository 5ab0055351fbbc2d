"""Fast-path switches for a network: mixed precision, ``torch.compile``, channels-last.

They change how a network computes, never what it computes beyond float rounding (tests check
the outputs agree within tolerance) nor its ``state_dict`` (checkpoints keep names and layout):

- **mixed precision** (``amp``, on by default; ``--no-amp`` turns it off): on CUDA, training
  autocasts to bf16 where the GPU has it, else fp16 with a gradient scaler; prediction to fp16,
  as nnU-Net v2. On a CPU with matrix units for bf16 (Intel AMX) training and prediction
  autocast to bf16: convolutions ran 2.4x faster than fp32 on a 2-core Xeon with AMX
  (``benchmarks/results/``, issue 12), and torch keeps reductions such as the normalisation
  statistics in fp32. Other CPUs compute in fp32: there bf16 is emulated, slower than fp32.

- **compile** (``"auto"``: on CUDA only, as nnU-Net v2 compiles by default on a GPU; ``"on"``;
  ``"off"``). The network's ``forward`` is replaced by a compiled version of itself, so
  parameter names, DDP and weight transfer are untouched. Compilation happens at the first call
  (and again for new input shapes); if it fails (no C++ compiler, an unsupported op, a backend
  bug) the network falls back to eager mode for good, with one warning, instead of stopping a
  run.
- **channels-last** (``NHWC`` / ``NDHWC``): weights and inputs in the layout that tensor cores
  prefer; measured per configuration before it becomes a default (off by default).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from sslunet.utils.engine import COMPILE_MODES


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has matrix units for bf16 (Intel AMX tiles), where oneDNN's bf16
    convolutions beat fp32 ones; without them bf16 is emulated and slower."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: absent in some builds
    return bool(probe()) if probe is not None else False


def autocast_dtype(device: torch.device, enabled: bool = True, training: bool = True,
                   spatial_dims: int | None = 2) -> torch.dtype | None:
    """The autocast dtype for ``device`` (None: compute in fp32); see the module docstring.

    On a CPU, 3d networks train in fp32: with torch 2.13 oneDNN's bf16 Conv3d backward
    crashed (segmentation fault) for some input shapes (a (1, 3, 3) kernel over 32 x 12 x
    256 x 256 and 32 x 10 x 256 x 256, while 32 x 16 x 256 x 256 ran); no 2d shape we tried
    crashed, nor any 3d forward pass, so 3d prediction keeps bf16.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        if not training:
            return torch.float16  # as nnU-Net v2's predictor
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16() and not (training and spatial_dims == 3):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for None."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def wants_compile(mode: str, device: torch.device) -> bool:
    """Whether ``mode`` compiles on ``device``."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def memory_format(ndim: int) -> torch.memory_format:
    """Channels-last format for a network with ``ndim`` spatial axes (2 or 3)."""
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


class _EagerFallback:
    """``forward`` that runs the compiled version and, once that fails, the original."""

    def __init__(self, eager: Callable, compiled: Callable, warn: Callable[[str], None]):
        self.eager, self.compiled, self.warn = eager, compiled, warn
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly instead
                self.give_up(e)
        return self.eager(*args, **kwargs)

    def give_up(self, error: Exception) -> None:
        """Run eagerly from now on (also called by the trainer when the backward pass, which
        torch compiles at its first call, fails)."""
        self.failed = True
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        self.warn(f"torch.compile failed ({type(error).__name__}: {first}); "
                  "continuing without compilation")


def compiled_forward(network: nn.Module) -> _EagerFallback | None:
    """The compiled forward that :func:`accelerate` installed on ``network``, if any."""
    forward = network.__dict__.get("forward")
    return forward if isinstance(forward, _EagerFallback) else None


class _ChannelsLast:
    """``forward`` that hands its first (image) argument over in channels-last layout."""

    def __init__(self, forward: Callable, fmt: torch.memory_format):
        self.forward, self.fmt = forward, fmt

    def __call__(self, x: torch.Tensor, *args, **kwargs):
        return self.forward(x.contiguous(memory_format=self.fmt), *args, **kwargs)


def _stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def spatial_dims(network: nn.Module) -> int | None:
    """2 or 3: the spatial axes of the network's first convolution (None: it has none)."""
    conv = next((m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    return None if conv is None else conv.weight.ndim - 2  # (out, in, *kernel)


def accelerate(network: nn.Module, device: torch.device, compile_mode: str = "off",
               channels_last: bool = False,
               warn: Callable[[str], None] = _stderr) -> nn.Module:
    """Apply the switches to ``network`` in place (its ``forward``); returns it.

    Args:
        network: the network (already on ``device``, weights loaded).
        device: where it runs (``"auto"`` compiles on CUDA only).
        compile_mode: ``"auto"``, ``"on"`` or ``"off"``.
        channels_last: weights and inputs in channels-last layout.
        warn: where a compilation failure is reported.
    """
    forward = network.forward
    if channels_last:
        fmt = memory_format(spatial_dims(network))
        network.to(memory_format=fmt)
        forward = _ChannelsLast(forward, fmt)
    if wants_compile(compile_mode, device):
        forward = _EagerFallback(forward, torch.compile(forward), warn)
    if forward is not network.forward:
        network.forward = forward  # an instance attribute: nn.Module.__call__ uses it
    return network
