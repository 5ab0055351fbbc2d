"""A model that is real in every respect but training: a planned dataset's plans, shrunk, saved
with seeded random weights in the results layout that fine-tuning writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sslunet.networks import build_network
from sslunet.plans import Plans
from sslunet.runs.checkpoint import save_checkpoint
from sslunet.training.config import TrainingConfig


def save_fake_model(model_dir: Path, plans: Plans, name: str, folds: dict[str, int],
                    channels: int = 1) -> Plans:
    """Shrink configuration ``name`` and save one seeded random network per fold."""
    config = plans.configuration(name)
    small = dataclasses.replace(config, features_per_stage=tuple(
        min(4 * 2 ** i, 16) for i in range(config.num_stages)))
    # per-channel entries repeated: plans with inconsistent channel counts are refused
    configs = {k: dataclasses.replace(c, normalization_schemes=c.normalization_schemes[:1]
                                      * channels, use_mask_for_norm=c.use_mask_for_norm[:1]
                                      * channels)
               for k, c in {**plans.configurations, name: small}.items()}
    plans = plans.replace(configurations=configs, num_input_channels=channels,
                          channel_names={str(c): plans.channel_names["0"] for c in range(channels)},
                          intensity_stats=plans.intensity_stats[:1] * channels)
    model_dir.mkdir(parents=True)
    plans.save(model_dir / "plans.json")
    for fold, seed in folds.items():
        net = build_network(small, plans.num_input_channels, plans.num_classes, True, seed=seed)
        save_checkpoint(model_dir / f"fold_{fold}" / "checkpoint_final.pt", {
            "kind": "finetune", "network_weights": net.state_dict(), "plans": plans.to_dict(),
            "configuration": name, "num_input_channels": plans.num_input_channels,
            "num_classes": plans.num_classes,
            "training_config": dataclasses.asdict(TrainingConfig())})
    return plans
