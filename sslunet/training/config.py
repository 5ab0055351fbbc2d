"""Training configuration: one typed, JSON-serialisable dataclass, overridden from the CLI.

A training variant (more epochs, another learning rate, another warm-up) is a config override,
never a subclass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sslunet.errors import SettingError
from sslunet.utils.engine import COMPILE_MODES


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters: int = 50
    batch_size: int | None = None  # None: the plan's batch size
    optimizer: str = "sgd"  # "sgd" (nnU-Net) or "adamw"
    lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    warmup_epochs: int = 0  # linear warm-up (per iteration), then polynomial decay
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    oversample_foreground: float = 0.33
    deep_supervision: bool = True
    num_workers: int = 2  # background augmentation processes (0: in the main process)
    amp: bool = True  # mixed precision where native (CUDA; CPUs with AMX): utils/acceleration
    # GPU fast path (sslunet/utils/acceleration.py): torch.compile "auto" (CUDA only, as
    # nnU-Net), "on" or "off", falling back to eager mode if compilation fails; channels-last
    # weights and inputs (off until measured on a GPU)
    compile: str = "auto"
    channels_last: bool = False
    seed: int = 0
    checkpoint_every: int = 1  # epochs between "latest" checkpoints
    ema_alpha: float = 0.9  # smoothing of the validation metric used to pick "best"
    # Fine-tuning recipe parts (see training/param_groups.py): the encoder is frozen for the
    # first epochs (decoder and heads first learn on fixed features), and tensors loaded from a
    # pretrained checkpoint learn at a multiple of the learning rate.
    freeze_encoder_epochs: int = 0
    pretrained_lr_scale: float = 1.0

    def replace(self, **changes) -> "TrainingConfig":
        return dataclasses.replace(self, **changes)

    def __post_init__(self):
        """Every field in its range (a :class:`SettingError` naming the CLI flag), so a bad
        value stops a command before any run folder exists."""
        def need(ok: bool, field: str, rule: str) -> None:
            if not ok:
                flag = "--" + field.replace("_", "-")
                raise SettingError(f"{field} ({flag}) must be {rule}, got "
                                   f"{getattr(self, field)!r}")

        for name in ("epochs", "iters_per_epoch", "checkpoint_every"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("val_iters", "warmup_epochs", "num_workers", "seed",
                     "freeze_encoder_epochs"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        need(self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1),
             "batch_size", "an integer >= 1")
        need(_is_number(self.lr) and self.lr > 0, "lr", "> 0")
        need(_is_number(self.pretrained_lr_scale) and self.pretrained_lr_scale > 0,
             "pretrained_lr_scale", "> 0")
        for name in ("momentum", "oversample_foreground", "ema_alpha"):
            need(_is_number(getattr(self, name)) and 0 <= getattr(self, name) <= 1, name,
                 "in [0, 1]")
        for name in ("weight_decay", "poly_exponent", "grad_clip"):
            need(_is_number(getattr(self, name)) and getattr(self, name) >= 0, name, ">= 0")
        need(self.freeze_encoder_epochs <= self.epochs, "freeze_encoder_epochs",
             f"in [0, epochs = {self.epochs}]")
        need(self.warmup_epochs <= self.epochs, "warmup_epochs", f"in [0, epochs = {self.epochs}]")
        need(self.optimizer in ("sgd", "adamw"), "optimizer", "'sgd' or 'adamw'")
        need(self.compile in COMPILE_MODES, "compile", " or ".join(map(repr, COMPILE_MODES)))
        need(isinstance(self.channels_last, bool), "channels_last", "true or false")


class _OverridesMethods:
    """Behaviour of :data:`TrainingOverrides` (its fields are generated from TrainingConfig)."""

    def __post_init__(self):
        self.apply(TrainingConfig())  # a value out of range is a SettingError here, at once

    def set_fields(self) -> dict:
        """``{field: value}`` of the overrides that are set (as run records store them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def apply(self, cfg: TrainingConfig) -> TrainingConfig:
        return cfg.replace(**self.set_fields())

    @classmethod
    def of(cls, value: "TrainingOverrides | dict | None") -> "TrainingOverrides":
        """From a ``{field: value}`` mapping (an unknown field is a :class:`SettingError`)."""
        if isinstance(value, cls):
            return value
        unknown = sorted(set(value or {}) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingError(f"unknown training setting(s) {', '.join(unknown)} (known: "
                               f"{', '.join(f.name for f in dataclasses.fields(cls))})")
        return cls(**(value or {}))


# Every TrainingConfig field, optional (None: keep the default of whoever applies them:
# fine-tuning, pretraining, an objective, a study). Generated from TrainingConfig so the two
# can never disagree; ``TrainingOverrides(lr=3e-3).apply(cfg)``.
TrainingOverrides = dataclasses.make_dataclass(
    "TrainingOverrides",
    [(f.name, f"{f.type} | None", dataclasses.field(default=None))
     for f in dataclasses.fields(TrainingConfig)],
    bases=(_OverridesMethods,), frozen=True, namespace={"__module__": __name__})


def options_record(opts) -> dict:
    """``dataclasses.asdict(opts)`` with each :data:`TrainingOverrides` field reduced to the
    settings given: what run records (``run_config.json``, ...) store."""
    out = dataclasses.asdict(opts)
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if isinstance(value, TrainingOverrides):
            out[f.name] = value.set_fields()
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def finetune_defaults(pretrained: bool) -> TrainingConfig:
    """From scratch: nnU-Net's SGD, lr 1e-2. From pretrained weights: AdamW, lr 3e-3, no
    warm-up.

    Why not nnU-Net's pretrained recipe (SGD lr 1e-3, linear warm-up over 5% of the epochs)?
    On the ACDC bench (docs/payoff.md, H2) it collapsed to background in all three seeds of a
    500-iteration fine-tuning (test Dice 0.000): at lr 1e-3 SGD needs far more iterations to
    move a random segmentation head away from "everything is background" than a short run has.
    AdamW 3e-3 gave pretrained inits +0.05 Dice over random init on the same data and
    schedule, and freezing the encoder for the first quarter of the epochs did not do better.
    """
    if pretrained:
        return TrainingConfig(optimizer="adamw", lr=3e-3, warmup_epochs=0)
    return TrainingConfig()


def scaled_warmup(cfg: TrainingConfig, default_epochs: int = 1000) -> TrainingConfig:
    """Keep the warm-up's share of training when the number of epochs changes."""
    if cfg.warmup_epochs == 0 or cfg.epochs == default_epochs:
        return cfg
    share = cfg.warmup_epochs / default_epochs
    return dataclasses.replace(cfg, warmup_epochs=max(1, round(share * cfg.epochs)))
