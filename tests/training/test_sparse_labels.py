"""Sparse labels end to end: a dataset whose ``dataset.json`` has an ``"ignore"`` label (planned,
fine-tuned, validated, post-processed) and a sparse-slice budget (``labeled_slices``) on a
densely labelled dataset; then the study with a ``<slices>sl<volumes>`` budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslunet.errors import InputError
from sslunet.paths import Paths
from sslunet.preprocessing.storage import load_properties
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.study.api import StudyOptions, run_study
from sslunet.training.api import FinetuneOptions, finetune
from tests.helpers.datasets import (
    DATASET, FEATURES, SPACING, blob_case, plan_dataset, tiny_home, tiny_overrides,
    write_raw_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPARSE = "Dataset043_Sparse"
LABELS = {"background": 0, "left": 1, "right": 2, "ignore": 3}


def _sparse_home(home) -> Paths:
    """The tiny dataset's blobs, annotated on slices 2-5 of 8 only (the rest is "ignore")."""
    def case(index: int):
        image, label = blob_case((8, 48, 40), index)
        label = label.copy()
        label[:2], label[6:] = 3, 3
        return image[None], label

    paths = Paths.under(home)
    raw = write_raw_dataset(paths.raw, SPARSE, 6, 0, spacing=SPACING, labels=LABELS, case=case)
    plan_dataset(raw, paths, ("2d",), shrink=dict(features=FEATURES))
    return paths


def test_dataset_ignore_label_trains_predicts_and_scores_without_it(tmp_path):
    paths = _sparse_home(tmp_path / "home")
    folder = next((paths.preprocessed / SPARSE).glob("*_2d"))
    assert "annotated" in load_properties(folder, "case_000").class_locations
    run_dir = finetune(paths, FinetuneOptions(SPARSE, "2d", overrides=tiny_overrides(),
                                              tta=False))
    ckpt = load_checkpoint(run_dir / "checkpoint_final.pt")
    assert ckpt["num_classes"] == 3  # background, left, right: no "ignore" channel
    heads = [v for k, v in ckpt["network_weights"].items() if "seg_layers" in k and
             k.endswith("weight")]
    assert heads and all(w.shape[0] == 3 for w in heads)
    summary = json.loads((run_dir / "validation" / "summary.json").read_text())
    assert summary["ignore_label"] == 3 and set(summary["labels"]) == {"left", "right"}
    post = json.loads((run_dir.parent / "postprocessing.json").read_text())
    assert "ignore" not in post["dice"]["raw"]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["pseudo_dice"] <= 1 for r in records)


def test_sparse_slice_budget_records_its_slices(tmp_path_factory, tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    opts = FinetuneOptions(DATASET, "2d", num_labeled=2, labeled_slices=3, validate=False,
                           overrides=tiny_overrides())
    run_dir = finetune(paths, opts)
    assert run_dir.parent.name == "random__2d__3sl2"
    record = json.loads((run_dir / "labeled_cases.json").read_text())
    assert record["labeled_slices"] == 3 and sorted(record["slices"]) == record["cases"]
    assert sorted(len(v) for v in record["slices"].values()) == [1, 2]
    assert record["ignore_value"] == 3  # the tiny dataset has classes 0-2
    with pytest.raises(InputError, match="already finished"):  # outputs kept, not retrained
        finetune(paths, opts)


@pytest.mark.slow
def test_study_compares_whole_volumes_with_the_same_slices_spread_over_more(tmp_path_factory,
                                                                           tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    out = run_study(paths, StudyOptions(DATASET, "2d", ("random",), ("1", "4sl2"), seeds=(0,),
                                        finetune_overrides=tiny_overrides(), tta=False))
    rows = json.loads((out / "runs.json").read_text())
    by_budget = {r["budget"]: r for r in rows}
    assert by_budget["4sl2"]["status"] == "ok" and by_budget["4sl2"]["labeled_slices"] == 4
    assert by_budget["4sl2"]["n_labeled"] == 2 and by_budget["1"]["labeled_slices"] == ""
    assert "N=4sl2" in (out / "study.md").read_text()
