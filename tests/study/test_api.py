"""Tests for sslunet.study.api (sslunet_study's library entry) on the tiny dataset: failure
isolation, resumption, table/CSV consistency, studies with other settings, study names."""

from __future__ import annotations

import csv
import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

import sslunet.ssl.api as pretrain_mod
import sslunet.study.api as run_mod
from sslunet.study.api import StudyOptions, run_study
from sslunet.training.trainer import Trainer
from sslunet.utils.atomic import read_json
from tests.helpers.datasets import DATASET, tiny_home, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _add_test_cases(paths):
    """Give the tiny raw dataset imagesTs/labelsTs (copies of two training cases)."""
    raw = paths.raw / DATASET
    for i in (0, 1):
        (raw / "imagesTs").mkdir(exist_ok=True)
        (raw / "labelsTs").mkdir(exist_ok=True)
        shutil.copy(raw / "imagesTr" / f"case_00{i}_0000.nii.gz",
                    raw / "imagesTs" / f"test_00{i}_0000.nii.gz")
        shutil.copy(raw / "labelsTr" / f"case_00{i}.nii.gz", raw / "labelsTs" / f"test_00{i}.nii.gz")


@contextmanager
def _simulated_failures():
    """A pretraining and a fine-tuning that fail while running (what no up-front check of the
    study's arguments can know; invalid arguments refuse the whole study instead)."""
    original = run_mod._finetune_one

    def failing_pretrain(*args, **kwargs):
        raise RuntimeError("simulated pretraining failure")

    def finetune_one(paths, opts, init, budget, fold, seed):
        if budget == "2":
            raise RuntimeError("simulated run failure")
        return original(paths, opts, init, budget, fold, seed)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(pretrain_mod, "pretrain", failing_pretrain)
        m.setattr(run_mod, "_finetune_one", finetune_one)
        yield


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    paths = tiny_home(tmp_path_factory, tmp_path_factory.mktemp("study") / "home")
    _add_test_cases(paths)
    opts = StudyOptions(DATASET, "2d", inits=("random", "regression"),
                        budgets=("1", "all", "2"), folds=("0",), seeds=(0,),
                        name="t", device="cpu", finetune_overrides=tiny_overrides())
    with _simulated_failures():
        out = run_study(paths, opts)
    return paths, opts, out


@pytest.mark.slow
def test_study_writes_all_outputs(study):
    _, _, out = study
    for name in ("study.csv", "study.md", "dice_vs_labels.png", "convergence.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_failing_runs_do_not_stop_the_others(study):
    _, _, out = study
    rows = {(r["init"], r["budget"]): r for r in csv.DictReader(open(out / "study.csv"))}
    assert rows[("random", "1")]["status"] == "ok"
    assert rows[("random", "all")]["status"] == "ok"
    assert rows[("random", "2")]["status"].startswith("failed")
    assert "simulated run failure" in rows[("random", "2")]["status"]
    assert rows[("regression", "1")]["status"].startswith("pretraining failed")
    assert "Failed runs" in (out / "study.md").read_text()


@pytest.mark.slow
def test_csv_and_table_agree_with_run_summaries(study):
    paths, _, out = study
    rows = [r for r in csv.DictReader(open(out / "study.csv")) if r["status"] == "ok"]
    md = (out / "study.md").read_text()
    for r in rows:
        run_dir = paths.results / r["run_dir"]  # study.csv paths are relative to the results
        assert not Path(r["run_dir"]).is_absolute()
        val = read_json(run_dir / "validation" / "summary.json")
        assert float(r["dice_mean"]) == pytest.approx(val["foreground_mean"]["dice"]["mean"]
                                                      if isinstance(val["foreground_mean"]["dice"], dict)
                                                      else val["foreground_mean"]["dice"])
        test = read_json(run_dir / "test" / "summary.json")
        assert test["num_cases"] == 2
        shown = f"{float(r['test_dice_mean']):.3f} (n=1)"  # one seed, one fold: no spread
        assert shown in md
        assert int(r["n_labeled"]) == (1 if r["budget"] == "1" else 4)
    assert "± 0.000" not in md and str(paths.results) not in md


@pytest.mark.slow
def test_rerun_skips_finished_work(study):
    paths, opts, out = study
    rows = [r for r in csv.DictReader(open(out / "study.csv")) if r["status"] == "ok"]
    stamps = {r["run_dir"]: (paths.results / r["run_dir"] / "checkpoint_final.pt").stat().st_mtime_ns
              for r in rows}
    with _simulated_failures():
        run_study(paths, opts)
    for run_dir, stamp in stamps.items():
        assert (paths.results / run_dir / "checkpoint_final.pt").stat().st_mtime_ns == stamp
    again = [r for r in csv.DictReader(open(out / "study.csv")) if r["status"] == "ok"]
    assert [r["test_dice_mean"] for r in again] == [r["test_dice_mean"] for r in rows]
    assert not any(math.isnan(float(r["dice_mean"])) for r in again)


@pytest.mark.slow
def test_rerun_on_a_subset_keeps_the_other_runs_in_the_report(study):
    paths, opts, out = study
    before = list(csv.DictReader(open(out / "study.csv")))
    subset = StudyOptions(DATASET, "2d", inits=("random",), budgets=("1",), folds=("0",),
                          seeds=(0,), name="t", device="cpu",
                          finetune_overrides=tiny_overrides())
    run_study(paths, subset)
    after = list(csv.DictReader(open(out / "study.csv")))
    key = ("init", "budget", "fold", "seed", "status")
    assert [tuple(r[k] for k in key) for r in after] == [tuple(r[k] for k in key) for r in before]
    assert len(json.loads((out / "runs.json").read_text())) == len(before) == 6
    md = (out / "study.md").read_text()
    assert "Runs: 6" in md and "regression" in md and "simulated run failure" in md


class _Killed(Exception):
    """Stands in for a kill: the trainer stops in the middle of a run."""


@pytest.mark.slow
def test_killed_run_is_reported_then_continued_on_rerun(tmp_path_factory, tmp_path, monkeypatch):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    opts = StudyOptions(DATASET, "2d", inits=("random",), budgets=("1", "all"), name="k",
                        device="cpu", evaluate_test=False,
                        finetune_overrides=tiny_overrides(epochs=3))
    original = Trainer._run_epoch

    def dies_at_epoch_2_of_the_first_run(self, *args, **kwargs):
        if self.epoch == 2 and "__1" in str(self.out_dir):
            raise _Killed("simulated kill")
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_run_epoch", dies_at_epoch_2_of_the_first_run)
        out = run_study(paths, opts)
    rows = {r["budget"]: r for r in csv.DictReader(open(out / "study.csv"))}
    assert rows["1"]["status"].startswith("failed") and "simulated kill" in rows["1"]["status"]
    assert rows["all"]["status"] == "ok"  # the kill did not stop the next run
    killed = next((out / "finetune").glob("random__2d__1*/fold_0"))
    assert (killed / "checkpoint_latest.pt").exists()
    finished = next((out / "finetune").glob("random__2d__all*/fold_0"))
    stamp = (finished / "checkpoint_final.pt").stat().st_mtime_ns

    run_study(paths, opts)  # the same command again
    rows = {r["budget"]: r for r in csv.DictReader(open(out / "study.csv"))}
    assert rows["1"]["status"] == "ok" and rows["all"]["status"] == "ok"
    epochs = [json.loads(ln)["epoch"] for ln in (killed / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]  # continued from the checkpoint after epoch 1, not restarted
    assert (finished / "checkpoint_final.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_studies_with_other_settings_never_reuse_each_others_runs(tmp_path_factory, tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    pre = {"epochs": 1, "iters_per_epoch": 1, "val_iters": 1, "batch_size": 2, "num_workers": 0}
    base = StudyOptions(DATASET, "2d", inits=("random", "regression"), budgets=("1",), name="a",
                        device="cpu", evaluate_test=False, tta=False,
                        finetune_overrides=tiny_overrides(), pretrain_overrides=pre)
    out_a = run_study(paths, base)
    ckpts = sorted(out_a.glob("finetune/*/fold_0/checkpoint_final.pt"))
    assert len(ckpts) == 2
    stamps = [p.stat().st_mtime_ns for p in ckpts]

    # the same study asked for another schedule: refused per run, nothing retrained
    import dataclasses
    longer = tiny_overrides(epochs=3)
    run_study(paths, dataclasses.replace(base, finetune_overrides=longer))
    rows = list(csv.DictReader(open(out_a / "study.csv")))
    assert all(r["status"].startswith("failed") and "other settings" in r["status"]
               and "epochs 2 (asked 3)" in r["status"] for r in rows), rows
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps

    # another study with that schedule trains its own runs and says the pretraining differs
    out_b = run_study(paths, dataclasses.replace(base, name="b", finetune_overrides=longer,
                                                 pretrain_overrides={**pre, "epochs": 2}))
    rows = list(csv.DictReader(open(out_b / "study.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["epochs"] == "3" for r in rows)
    assert all((paths.results / r["run_dir"]).is_relative_to(out_b)
               and not Path(r["run_dir"]).is_absolute() for r in rows)
    md = (out_b / "study.md").read_text()
    assert "regression: 1 epochs x 1 iterations" in md
    assert "other settings: epochs 1 (asked 2)" in md
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps


def test_default_study_name_never_holds_a_path(tmp_path):
    opts = StudyOptions(DATASET, inits=("random", "../../../../elsewhere/x.pt"))
    assert "/" not in opts.study_name and ".." not in opts.study_name.split("-")
