"""Post-processing as nnU-Net does it: keep only the largest connected component, for the
foreground as a whole and per class, wherever the cross-validation Dice says it helps.

A segmentation network sometimes predicts small islands far from the organ; an organ that is
one connected piece in every training case can drop them. Whether that helps is decided on
the model's own cross-validation predictions (``fold_K/validation/``, the cases each fold
never trained on), never assumed, in two steps as nnU-Net v2 does:

1. all foreground labels together: keep the largest connected foreground component (every
   voxel of the other components becomes background); kept if the mean foreground Dice over
   the validation cases improves;
2. then each class on its own, on top of step 1's result: keep the class's largest component;
   kept if that class's mean Dice improves.

Our choices where nnU-Net's description leaves room: "improves" is strictly better (ties keep
the raw prediction: doing nothing is the safer default); components use full connectivity
(26 neighbours in 3D, voxels touching by a corner are connected, as scikit-image's default that
nnU-Net uses); Dice of a case whose reference and prediction are both empty is 1 (as
``sslunet_evaluate`` scores it). The decision is ``postprocessing.json`` in the model folder;
``sslunet_predict`` applies it unless ``--no-postprocessing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from sslunet.dataset.labels import foreground_labels, ignore_value
from sslunet.dataset.imageio import read_array
from sslunet.errors import InputError
from sslunet.evaluation.metrics import dice
from sslunet.runs.layout import POSTPROCESSING, VALIDATION_DIR, fold_dirs, fold_name
from sslunet.utils.atomic import read_json, write_json
from sslunet.utils.serialization import from_dict, to_dict

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PostprocessingPlan:
    """What to apply to a predicted label map, and the evidence for it."""

    foreground_largest: bool = False
    largest_per_class: tuple[int, ...] = ()  # label values reduced to their largest component
    # mean Dice over the validation cases: "raw", then after the decided steps ("final");
    # per class name, and "foreground" (the mean over classes)
    dice: dict = field(default_factory=dict)
    num_cases: int = 0
    folds: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if not isinstance(self.foreground_largest, bool):
            raise ValueError(f"foreground_largest must be true or false, got "
                             f"{self.foreground_largest!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for v in self.largest_per_class):
            raise ValueError(f"largest_per_class must hold label values > 0, got "
                             f"{self.largest_per_class!r}")

    @property
    def is_noop(self) -> bool:
        return not self.foreground_largest and not self.largest_per_class

    def save(self, path: Path) -> None:
        write_json(path, to_dict(self))

    @classmethod
    def load(cls, path: Path) -> "PostprocessingPlan":
        try:
            plan = from_dict(cls, read_json(path))
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"not a post-processing plan ({e}); delete it, or predict with "
                             "--no-postprocessing", path) from None
        if plan.schema_version != SCHEMA_VERSION:
            raise InputError(f"post-processing plan version {plan.schema_version} is not "
                             f"supported (expects {SCHEMA_VERSION})", path)
        return plan


def model_postprocessing(model_dir: Path) -> PostprocessingPlan | None:
    """The plan stored with a model, or None when it has none."""
    path = Path(model_dir) / POSTPROCESSING
    return PostprocessingPlan.load(path) if path.exists() else None


def keep_largest_component(seg: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """``seg`` with only the largest connected component of ``seg in values`` kept; the voxels
    of the other components become background (0). A copy; ``seg`` is untouched."""
    mask = np.isin(seg, list(values))
    components, n = ndimage.label(mask, structure=np.ones((3,) * seg.ndim, bool))
    out = seg.copy()
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0  # background is not a component
        out[(components != 0) & (components != int(np.argmax(sizes)))] = 0
    return out


def apply_postprocessing(seg: np.ndarray, plan: PostprocessingPlan | None,
                         foreground: Sequence[int]) -> np.ndarray:
    """Apply ``plan`` (None or a no-op plan: ``seg`` unchanged) to a label map."""
    if plan is None or plan.is_noop:
        return seg
    if plan.foreground_largest:
        seg = keep_largest_component(seg, foreground)
    for value in plan.largest_per_class:
        seg = keep_largest_component(seg, (value,))
    return seg


def _mean_dice(pairs: Sequence[tuple[np.ndarray, np.ndarray]], value: int,
               ignore: int | None = None) -> float:
    """Mean Dice of class ``value``; voxels whose reference is ``ignore`` are not scored."""
    return float(np.mean([dice(ref == value, (pred == value) & (ref != ignore))
                          for ref, pred in pairs]))


def _scores(pairs, labels: Mapping[str, int], ignore: int | None = None) -> dict:
    per_class = {name: _mean_dice(pairs, v, ignore) for name, v in labels.items()}
    return {**per_class, "foreground": float(np.mean(list(per_class.values())))}


def determine_postprocessing(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                             labels: Mapping[str, int], folds: Sequence[str] = ()
                             ) -> PostprocessingPlan:
    """Decide the plan from ``(reference, prediction)`` label maps of validation cases.

    Args:
        pairs: one ``(reference, prediction)`` pair of equal-shape integer arrays per case.
        labels: class name -> label value (background and an ignore label are not scored;
            reference voxels carrying the ignore label count for no class).
        folds: the folds the cases come from (recorded only).
    """
    ignore = ignore_value(labels)
    labels = foreground_labels(labels)
    raw = _scores(pairs, labels, ignore)
    current, scores = list(pairs), raw
    fg = list(labels.values())
    trial = [(ref, keep_largest_component(pred, fg)) for ref, pred in current]
    trial_scores = _scores(trial, labels, ignore)
    foreground_largest = trial_scores["foreground"] > scores["foreground"]
    if foreground_largest:
        current, scores = trial, trial_scores
    per_class = []
    for name, value in labels.items():
        trial = [(ref, keep_largest_component(pred, (value,))) for ref, pred in current]
        if _mean_dice(trial, value, ignore) > scores[name]:
            per_class.append(value)
            current, scores = trial, _scores(trial, labels, ignore)
    return PostprocessingPlan(foreground_largest, tuple(per_class),
                              {"raw": raw, "final": scores}, len(pairs), tuple(folds))


def validation_pairs(model_dir: Path, ref_dir: Path, file_ending: str
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """``(reference, prediction)`` label maps of every finished fold's validation cases, and
    the folds they come from."""
    pairs, folds = [], []
    for run_dir in fold_dirs(model_dir):
        preds = sorted((run_dir / VALIDATION_DIR).glob(f"*{file_ending}"))
        if not preds:
            continue
        folds.append(fold_name(run_dir))
        for pred in preds:
            ref, _ = read_array(Path(ref_dir) / pred.name, dtype=None)
            out, _ = read_array(pred, dtype=None)
            pairs.append((ref.astype(np.int64), out.astype(np.int64)))
    return pairs, folds


def update_model_postprocessing(model_dir: Path, ref_dir: Path, labels: Mapping[str, int],
                                file_ending: str) -> PostprocessingPlan | None:
    """Decide the plan from the validation predictions of every fold finished so far and store
    it as ``postprocessing.json`` beside the folds (replacing an older decision)."""
    pairs, folds = validation_pairs(model_dir, ref_dir, file_ending)
    if not pairs:
        return None
    plan = determine_postprocessing(pairs, labels, folds)
    plan.save(Path(model_dir) / POSTPROCESSING)
    return plan


def describe(plan: PostprocessingPlan, labels: Mapping[str, int]) -> str:
    """One line for logs: what is applied and the validation Dice it gave."""
    names = {int(v): k for k, v in labels.items()}
    steps = (["largest foreground component"] if plan.foreground_largest else []) + [
        f"largest {names.get(v, v)} component" for v in plan.largest_per_class]
    raw, final = plan.dice.get("raw", {}), plan.dice.get("final", {})
    what = ", ".join(steps) if steps else "nothing (no step improved the validation Dice)"
    return (f"post-processing: {what}; validation Dice {raw.get('foreground', 0):.4f} -> "
            f"{final.get('foreground', 0):.4f} over {plan.num_cases} case(s) of fold(s) "
            f"{', '.join(plan.folds)}")
