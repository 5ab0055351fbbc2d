"""The label scheme of a dataset: classes, background and the optional ignore label.

One home for what nnU-Net users write in ``dataset.json``'s ``labels``: names mapped to
consecutive integers from 0 (background). A label named ``"ignore"`` (nnU-Net v2's sparse-label
convention) marks voxels nobody annotated: it must have the highest value; the network predicts
no channel for it, and the loss, the foreground sampling, the pseudo-Dice and the evaluation
skip its voxels. Every stage asks this module instead of testing names or values itself.
"""

from __future__ import annotations

from collections.abc import Mapping

IGNORE_NAME = "ignore"


def ignore_value(labels: Mapping[str, int]) -> int | None:
    """The ignore label's value, or None when the dataset labels every voxel."""
    value = labels.get(IGNORE_NAME)
    return None if value is None else int(value)


def class_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """The classes the network predicts (background included, the ignore label left out)."""
    return {str(k): int(v) for k, v in labels.items() if k != IGNORE_NAME}


def foreground_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """The scored classes: every class but the background and the ignore label."""
    return {k: v for k, v in class_labels(labels).items() if v != 0}


def num_classes(labels: Mapping[str, int]) -> int:
    """Output channels of a network for ``labels``: background plus every foreground class."""
    return max(class_labels(labels).values()) + 1


def ignore_problem(labels: Mapping[str, int]) -> str:
    """Why the ignore label of ``labels`` is unusable ("" when it is fine or absent)."""
    value = ignore_value(labels)
    if value is None:
        return ""
    others = [int(v) for k, v in labels.items() if k != IGNORE_NAME]
    if value <= max(others, default=0):
        return (f"the \"{IGNORE_NAME}\" label must have the highest value (got {value}, "
                f"classes go up to {max(others, default=0)})")
    return ""
