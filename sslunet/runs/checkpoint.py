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


def _state_dict(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and torch.is_tensor(t)
                                       for k, t in v.items())


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


# field -> (check, what it must be). Checked whenever the field is present (whatever the use),
# and required by the uses listed in REQUIRED.
FIELDS = {
    "kind": (lambda v: v in ("finetune", "pretrain"), "'finetune' or 'pretrain'"),
    "network_weights": (_state_dict, "a mapping of tensor names to tensors"),
    "objective_weights": (_state_dict, "a mapping of tensor names to tensors"),
    "plans": (lambda v: isinstance(v, dict), "a plans object"),
    "configuration": (lambda v: isinstance(v, str) and bool(v), "a configuration name"),
    "num_input_channels": (_count, "an integer >= 1"),
    "num_classes": (_count, "an integer >= 1"),
    "transferable_prefixes": (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(x, str) for x in v), "a list of names"),
    "objective": (lambda v: isinstance(v, dict), "an object"),
    "optimizer": (lambda v: isinstance(v, dict) and "state" in v and "param_groups" in v,
                  "an optimiser state"),
    "grad_scaler": (lambda v: isinstance(v, dict), "a gradient scaler state"),
    "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "an integer >= 0"),
    "ema_metric": (_number_or_none, "a number"),
    "best_metric": (_number_or_none, "a number"),
    "rng": (lambda v: isinstance(v, dict) and {"python", "torch", "numpy"} <= set(v),
            "random generator states"),
}
# what each use of a checkpoint reads
REQUIRED = {
    None: (),
    "init": ("network_weights", "configuration"),  # --init: pretrained weights
    "model": ("network_weights", "plans", "configuration", "num_input_channels",
              "num_classes"),  # prediction, scoring
    "resume": ("network_weights", "objective_weights", "optimizer", "grad_scaler", "epoch",
               "ema_metric", "best_metric", "rng"),  # --continue
    "stage": ("network_weights", "objective_weights"),  # a finished pretraining stage
}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    purpose: str | None = None) -> dict:
    """Load a checkpoint safely and check its structure.

    Args:
        path: the ``.pt`` file.
        map_location: where tensors go.
        purpose: what the caller reads (a key of :data:`REQUIRED`): those fields must be there.
            Every known field that is present must have its type (:data:`FIELDS`) anyway.

    Raises:
        InputError: a missing, empty, corrupt, foreign or unsupported file, or one that lacks
            a field the purpose needs or has a field of the wrong type; the message names the
            file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint file does not exist", path)
    if path.stat().st_size == 0:
        raise InputError("checkpoint file is empty (0 bytes; an interrupted copy?)", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/unsafe files
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise InputError(f"cannot load checkpoint ({type(e).__name__}"
                         f"{': ' + first if first else ''})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError("not an sslunet checkpoint", path)
    if ckpt.get("version") != VERSION:
        raise InputError(f"checkpoint version {ckpt.get('version')} is not supported "
                         f"(expects {VERSION})", path)
    check_structure(ckpt, path, purpose)
    return ckpt


def check_structure(ckpt: dict, path: Path, purpose: str | None = None) -> None:
    """The schema check of :func:`load_checkpoint` (see there)."""
    missing = [k for k in REQUIRED[purpose] if k not in ckpt]
    if missing:
        raise InputError(f"checkpoint lacks {', '.join(missing)} (damaged, or written by "
                         "something else than sslunet training)", path)
    for key, (ok, what) in FIELDS.items():
        if key in ckpt and not ok(ckpt[key]):
            value = ckpt[key]
            shown = repr(value)[:40] if not isinstance(value, dict) else "an object"
            raise InputError(f"checkpoint field {key} must be {what}, got {shown}", path)


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


# A model's state dict holds the network under ``network.`` and the objective's own tensors
# (projection heads, ...) beside it; checkpoints keep the two apart so that what transfers to
# fine-tuning (``network_weights``) is stored once and needs no prefix stripping.
NETWORK_PREFIX = "network."


def split_weights(state: dict) -> tuple[dict, dict]:
    """A model's ``state_dict()`` -> ``(network_weights, objective_weights)``."""
    net = {k[len(NETWORK_PREFIX):]: v for k, v in state.items() if k.startswith(NETWORK_PREFIX)}
    own = {k: v for k, v in state.items() if not k.startswith(NETWORK_PREFIX)}
    return net, own


def joined_weights(ckpt: dict) -> dict:
    """The model ``state_dict()`` a checkpoint's two weight fields make together."""
    net = {NETWORK_PREFIX + k: v for k, v in ckpt["network_weights"].items()}
    return {**net, **ckpt.get("objective_weights", {})}
