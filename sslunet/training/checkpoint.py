"""Checkpoints: tensors and plain data only, loadable with ``torch.load(weights_only=True)``.

Loading a checkpoint never executes code from it. A checkpoint is self-describing: it carries
the plans, the configuration name, the training config and (for pretraining) the objective and
which sub-modules it trained, so fine-tuning can check compatibility before loading weights.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslunet.errors import InputError
from sslunet.utils.atomic import atomic_path

FORMAT = "sslunet-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (plus format/version tags) with ``torch.save``."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely; a foreign or corrupt file is an :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint file does not exist", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/unsafe files
        raise InputError(f"cannot load checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError("not an sslunet checkpoint", path)
    if ckpt.get("version") != VERSION:
        raise InputError(f"checkpoint version {ckpt.get('version')} is not supported "
                         f"(expects {VERSION})", path)
    return ckpt


def rng_state() -> dict:
    """Python, numpy (legacy global) and torch RNG states as plain data."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
