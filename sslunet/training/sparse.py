"""Which labels of its labelled cases a fine-tuning may use: dense, or sparse (ignore label).

Two sources of sparse labels: the dataset's own ``"ignore"`` label (annotations that leave
voxels unlabelled, as in nnU-Net v2) and a sparse-slice budget (``--labeled-slices``: only some
slices of the labelled volumes count, to compare "2 whole volumes" with "the same number of
slices over 10 volumes"). Either way the unannotated voxels carry one value, ``ignore``, that
the loss, the foreground sampling and the pseudo-Dice skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslunet.errors import InputError
from sslunet.planning.splits import choose_labeled_slices
from sslunet.plans import Plans
from sslunet.preprocessing.storage import case_paths


@dataclass(frozen=True)
class RunLabels:
    ignore: int | None  # value of unannotated voxels in training batches (None: dense labels)
    slices: dict[str, list[int]] | None  # sparse-slice budget: annotated slices per case
    dataset_ignore: int | None = None  # the dataset's own ignore label (validation batches)


def run_labels(plans: Plans, folder: Path, labeled: list[str], labeled_slices: int | None,
               seed: int) -> RunLabels:
    """The run's label scheme; a sparse-slice budget without a dataset ignore label marks the
    unannotated slices with ``num_classes``, a value no class has."""
    ignore = plans.ignore_label
    if labeled_slices is None:
        return RunLabels(ignore, None, ignore)
    extents = {case: foreground_extent(folder, case, ignore) for case in labeled}
    slices = choose_labeled_slices(extents, labeled_slices, seed)
    return RunLabels(plans.num_classes if ignore is None else ignore, slices, ignore)


def foreground_extent(folder: Path, case: str, ignore: int | None) -> tuple[int, int]:
    """First and last slice (first axis of the preprocessed array) that shows foreground."""
    path = case_paths(folder, case)[1]
    seg = np.load(path, mmap_mode="r")[0]  # (1, Z, Y, X) -> (Z, Y, X)
    fg = (seg > 0) if ignore is None else (seg > 0) & (seg != ignore)
    rows = np.flatnonzero(fg.reshape(fg.shape[0], -1).any(1))  # (Z, Y*X) -> slices with fg
    if not len(rows):
        raise InputError(f"case '{case}' shows no foreground to place labelled slices on", path)
    return int(rows[0]), int(rows[-1])


def sparse_record(labels: RunLabels) -> dict:
    """What ``labeled_cases.json`` records of a sparse-slice budget (nothing for dense labels)."""
    if labels.slices is None:
        return {}
    return {"labeled_slices": sum(len(v) for v in labels.slices.values()),
            "slices": labels.slices, "ignore_value": labels.ignore}
