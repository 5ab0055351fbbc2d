"""Tests for sslunet.inference.postprocessing: largest connected components, decided on
validation cases, stored with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslunet.dataset.imageio import Geometry, write_array
from sslunet.errors import InputError
from sslunet.inference.postprocessing import (
    PostprocessingPlan,
    apply_postprocessing,
    determine_postprocessing,
    keep_largest_component,
    model_postprocessing,
    update_model_postprocessing,
)

LABELS = {"background": 0, "a": 1, "b": 2}


def _volume() -> np.ndarray:
    return np.zeros((6, 12, 12), np.uint8)


def test_keep_largest_component_uses_full_connectivity_and_keeps_the_input():
    seg = _volume()
    seg[1:4, 1:4, 1:4] = 1  # 27 voxels
    seg[4, 4, 4] = 2  # touches the cube only by a corner: same component (26-neighbourhood)
    seg[0, 10, 10] = 1  # an island
    out = keep_largest_component(seg, (1, 2))
    assert out[4, 4, 4] == 2 and out[0, 10, 10] == 0 and (out[1:4, 1:4, 1:4] == 1).all()
    assert seg[0, 10, 10] == 1  # a copy
    # per class: the corner voxel of class 2 is its own (only) component, kept
    assert keep_largest_component(seg, (2,))[4, 4, 4] == 2
    assert keep_largest_component(_volume(), (1,)).sum() == 0  # nothing to keep, no error


def _pair(island_label: int | None, touching_b_island: bool = False):
    ref = _volume()
    ref[1:5, 2:7, 2:7] = 1
    ref[1:5, 7:9, 2:7] = 2
    pred = ref.copy()
    if island_label is not None:
        pred[0, 10:12, 10:12] = island_label  # far from everything: a false positive
    if touching_b_island:
        pred[2, 3, 1] = 2  # touches the class-1 organ: only the per-class step can drop it
    return ref, pred


def test_islands_that_hurt_are_removed_and_the_decision_says_why():
    pairs = [_pair(1), _pair(2), _pair(None)]
    plan = determine_postprocessing(pairs, LABELS, folds=("0",))
    assert plan.foreground_largest
    assert plan.dice["final"]["foreground"] > plan.dice["raw"]["foreground"]
    assert plan.num_cases == 3 and plan.folds == ("0",)
    for ref, pred in pairs:
        np.testing.assert_array_equal(apply_postprocessing(pred, plan, [1, 2]), ref)


def test_per_class_step_runs_on_top_of_the_foreground_step():
    plan = determine_postprocessing([_pair(None, touching_b_island=True)] * 2, LABELS)
    assert not plan.foreground_largest  # one foreground component: nothing to gain
    assert plan.largest_per_class == (2,)


def test_anatomy_in_two_pieces_is_left_alone():
    ref = _volume()
    ref[1:3, 1:4, 1:4] = 1
    ref[4:6, 8:11, 8:11] = 1  # the reference organ has two parts
    plan = determine_postprocessing([(ref, ref.copy())], LABELS)
    assert plan.is_noop and plan.dice["final"] == plan.dice["raw"]
    assert apply_postprocessing(ref, plan, [1, 2]) is ref


def test_model_folder_round_trip_and_bad_file(tmp_path):
    geometry = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), (12, 12, 6))
    ref_dir, model_dir = tmp_path / "gt", tmp_path / "model"
    ref_dir.mkdir()
    for fold, case in (("0", "c1"), ("1", "c2")):
        ref, pred = _pair(1)
        val = model_dir / f"fold_{fold}" / "validation"
        val.mkdir(parents=True)
        write_array(ref_dir / f"{case}.nii.gz", ref, geometry)
        write_array(val / f"{case}.nii.gz", pred, geometry)
    assert model_postprocessing(model_dir) is None
    plan = update_model_postprocessing(model_dir, ref_dir, LABELS, ".nii.gz")
    assert plan.foreground_largest and plan.folds == ("0", "1") and plan.num_cases == 2
    assert model_postprocessing(model_dir) == plan
    (model_dir / "postprocessing.json").write_text(json.dumps({"foreground_largest": "x y"}))
    with pytest.raises(InputError, match="postprocessing.json"):
        model_postprocessing(model_dir)
    (model_dir / "postprocessing.json").write_text(json.dumps({"schema_version": 7}))
    with pytest.raises(InputError, match="version 7"):
        model_postprocessing(model_dir)


def test_no_validation_predictions_no_plan(tmp_path):
    (tmp_path / "model" / "fold_0").mkdir(parents=True)
    assert update_model_postprocessing(tmp_path / "model", tmp_path, LABELS, ".nii.gz") is None
    assert not (tmp_path / "model" / "postprocessing.json").exists()


def test_plan_survives_json(tmp_path):
    plan = PostprocessingPlan(True, (2,), {"raw": {"foreground": 0.5}}, 3, ("0",))
    plan.save(tmp_path / "p.json")
    assert PostprocessingPlan.load(tmp_path / "p.json") == plan


def test_islands_inside_ignored_reference_voxels_are_not_scored():
    pairs = []
    for _ in range(2):
        ref, pred = _pair(1)
        ref[0] = 3  # nobody annotated slice 0, where the island lies
        pairs.append((ref, pred))
    sparse = determine_postprocessing(pairs, {**LABELS, "ignore": 3})
    assert not sparse.foreground_largest and set(sparse.dice["raw"]) == {"a", "b", "foreground"}
    assert sparse.dice["raw"]["foreground"] == 1.0  # the island is where nothing is scored
    assert determine_postprocessing(pairs, LABELS).foreground_largest  # scored: it hurts
