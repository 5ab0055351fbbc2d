"""The TrainingConfig flags that ``finetune``, ``pretrain`` and ``study`` share, declared once.

Each flag's dest is the TrainingConfig field it overrides. An unset flag is left out of the
overrides, so whatever default the library applies (fine-tuning's, pretraining's, an
objective's, a study's schedule) stays in force.
"""

from __future__ import annotations

import argparse

from sslunet.cli._common import nonnegative_int, positive_float, positive_int, seed_int
from sslunet.utils.engine import COMPILE_MODES

# TrainingConfig field -> argparse keywords (the flag is the field with '-' for '_')
SCHEDULE_FLAGS = {
    "epochs": dict(type=positive_int),
    "iters_per_epoch": dict(type=positive_int),
    "val_iters": dict(type=nonnegative_int, help="0: no validation loss"),
    "batch_size": dict(type=positive_int, help="default: the plan's"),
    "lr": dict(type=positive_float),
    "warmup_epochs": dict(type=nonnegative_int),
    "optimizer": dict(choices=["sgd", "adamw"]),
    "num_workers": dict(type=nonnegative_int,
                        help="background augmentation processes (0: in the main process; "
                             "default: 2 on a CPU, on a GPU nnU-Net's 12, capped by the cores)"),
}
# how fine-tuning treats pretrained weights (see sslunet/training/param_groups.py)
RECIPE_FLAGS = {
    "freeze_encoder_epochs": dict(type=nonnegative_int,
                                  help="keep the encoder frozen for the first N epochs (decoder "
                                       "and heads learn first), then train everything"),
    "pretrained_lr_scale": dict(type=positive_float,
                                help="learning-rate multiplier for the tensors loaded from the "
                                     "checkpoint"),
}
# how a run computes, never what (sslunet/utils/acceleration.py)
ENGINE_FLAGS = {
    "compile": dict(choices=list(COMPILE_MODES),
                    help="torch.compile the network: auto = on CUDA only (default), on, off; "
                         "a failed compilation falls back to eager mode"),
    "channels_last": dict(action="store_true", default=None,
                          help="channels-last memory format for weights and inputs (GPU)"),
}
DEVICES = ["auto", "cuda", "cpu"]


def add_overrides(container, flags: dict, helps: dict | None = None) -> None:
    """Declare ``flags`` on a parser or argument group.

    Args:
        container: an ``ArgumentParser`` or one of its groups.
        flags: TrainingConfig field -> argparse keywords (:data:`SCHEDULE_FLAGS`, ...).
        helps: field -> help, where a command means something narrower than the shared help.
    """
    for name, kwargs in flags.items():
        if helps and name in helps:
            kwargs = {**kwargs, "help": helps[name]}
        container.add_argument("--" + name.replace("_", "-"), **kwargs)


def add_device_arg(container) -> None:
    container.add_argument("--device", default="auto", choices=DEVICES)


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The schedule flags of one training run (finetune and pretrain) and how it runs."""
    g = p.add_argument_group("training schedule (defaults: nnU-Net's)")
    add_overrides(g, SCHEDULE_FLAGS)
    g.add_argument("--no-amp", action="store_true",
                   help="compute in fp32 (default: mixed precision where the device does it "
                        "natively: bf16/fp16 on CUDA, bf16 on CPUs with AMX)")
    add_overrides(g, ENGINE_FLAGS)
    add_device_arg(g)
    g.add_argument("--seed", type=seed_int, default=0)
    g.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume an interrupted run from its latest checkpoint")


def add_recipe_args(p: argparse.ArgumentParser, helps: dict | None = None) -> None:
    """Fine-tuning recipe flags for pretrained weights (finetune and study)."""
    g = p.add_argument_group("fine-tuning recipe for pretrained weights")
    add_overrides(g, RECIPE_FLAGS, helps)


def training_overrides(args: argparse.Namespace) -> dict:
    """``{TrainingConfig field: value}`` of the flags that were set (``--no-amp``: amp False)."""
    names = (*SCHEDULE_FLAGS, *RECIPE_FLAGS, *ENGINE_FLAGS)
    out = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if getattr(args, "no_amp", False):
        out["amp"] = False
    return out
