"""Optimiser parameter groups for fine-tuning: which tensors learn, when, and how fast.

A fine-tuning recipe for pretrained weights often needs more than one learning rate: the
segmentation head and any decoder block the pretraining did not train start from random
weights, and their first, large gradients would otherwise rewrite the pretrained encoder before
the head has learned anything (Kumar et al. 2022, "Fine-tuning can distort pretrained
features", show the linear-probe-then-fine-tune remedy). Two recipe parts live here, both plain
:class:`~sslunet.training.config.TrainingConfig` fields:

- ``freeze_encoder_epochs = F``: the encoder is frozen (no gradient, no update, no weight
  decay) for the first F epochs, then trains with the rest;
- ``pretrained_lr_scale = s``: tensors loaded from the checkpoint learn at ``s x lr`` for the
  whole run (layer-wise / per-part learning rates).

Each group is a ``torch.optim`` parameter-group dict with three plain extra keys: ``name``,
``lr_scale`` and ``frozen_epochs``; the :class:`~sslunet.training.trainer.Trainer` reads them
every step and epoch, so resuming restores the same state.
"""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

from sslunet.training.config import TrainingConfig


def single_group(model: nn.Module) -> list[dict]:
    """Every trainable parameter at the base learning rate (the default)."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "name": "all",
             "lr_scale": 1.0, "frozen_epochs": 0}]


def finetune_groups(model: nn.Module, loaded: Collection[str], cfg: TrainingConfig) -> list[dict]:
    """Groups of ``model`` (a SegmentationModel) by part and by origin.

    Args:
        model: the objective model; its network's tensors are named ``network.<key>``.
        loaded: network state-dict keys copied from a pretrained checkpoint (empty from random).
        cfg: supplies ``freeze_encoder_epochs`` and ``pretrained_lr_scale``.

    Returns:
        Non-empty groups among ``encoder_pretrained``, ``encoder``, ``pretrained`` (loaded
        decoder blocks) and ``new`` (random tensors outside the encoder), in that order.
    """
    loaded = {f"network.{k}" for k in loaded}
    encoder = f"network.{model.network.encoder_part}."
    names = ("encoder_pretrained", "encoder", "pretrained", "new")
    params: dict[str, list] = {n: [] for n in names}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        enc, pre = name.startswith(encoder), name in loaded
        params[names[(0 if pre else 1) if enc else (2 if pre else 3)]].append(p)
    scale = {"encoder_pretrained": cfg.pretrained_lr_scale, "pretrained": cfg.pretrained_lr_scale}
    frozen = {"encoder_pretrained": cfg.freeze_encoder_epochs,
              "encoder": cfg.freeze_encoder_epochs}
    return [{"params": params[n], "name": n, "lr_scale": scale.get(n, 1.0),
             "frozen_epochs": frozen.get(n, 0)} for n in names if params[n]]
