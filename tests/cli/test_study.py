"""``sslunet_study`` on the command line (in process): schedules passed through, an unknown
dataset refused with one line (exit 2)."""

from __future__ import annotations

import pytest

from sslunet.cli import study as study_cli
from tests.helpers.cli import refusal_line, run_main
from tests.helpers.datasets import DATASET, tiny_home

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _study_cli(monkeypatch, capsys, argv, home):
    for k in ("SSLUNET_RAW", "SSLUNET_PREPROCESSED", "SSLUNET_RESULTS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SSLUNET_HOME", str(home))
    return run_main(study_cli.main, argv, capsys)


def test_cli_passes_schedules_through_to_finetuning_and_pretraining(
        tmp_path_factory, tmp_path, monkeypatch, capsys):
    tiny_home(tmp_path_factory, tmp_path / "home")
    seen = {}

    def fake_run_study(p, opts):
        seen["opts"] = opts
        out = p.results / opts.dataset / "study" / opts.study_name
        out.mkdir(parents=True)
        (out / "study.md").write_text("TABLE\n")
        return out

    monkeypatch.setattr(study_cli, "run_study", fake_run_study)
    code, out, _ = _study_cli(monkeypatch, capsys, [
        "-d", DATASET, "--inits", "random", "mae", "--labeled", "1", "all", "--folds", "0", "1",
        "--seeds", "3", "--epochs", "7", "--iters-per-epoch", "5", "--val-iters", "2",
        "--optimizer", "adamw", "--lr", "0.003", "--warmup-epochs", "0",
        "--pretrain-epochs", "4", "--pretrain-batch-size", "6", "--num-workers", "1",
        "--disable-tta", "--no-test", "--device", "cpu"], tmp_path / "home")
    assert code == 0 and "TABLE" in out
    o = seen["opts"]
    assert (o.inits, o.budgets, o.folds, o.seeds) == (("random", "mae"), ("1", "all"),
                                                      ("0", "1"), (3,))
    assert o.finetune_overrides.set_fields() == {"epochs": 7, "iters_per_epoch": 5, "val_iters": 2,
                                    "optimizer": "adamw", "lr": 0.003, "warmup_epochs": 0,
                                    "num_workers": 1}
    assert o.pretrain_overrides.set_fields() == {"epochs": 4, "batch_size": 6, "num_workers": 1}
    assert not o.tta and not o.evaluate_test and o.device == "cpu"


def test_cli_unknown_dataset_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "home" / "preprocessed").mkdir(parents=True)
    code, out, err = _study_cli(monkeypatch, capsys, ["-d", "NoSuchSet"], tmp_path / "home")
    refusal_line(code, out, err, "NoSuchSet")


def test_cli_sparse_budgets_from_flags_and_bad_ones_refused(tmp_path_factory, tmp_path,
                                                            monkeypatch, capsys):
    tiny_home(tmp_path_factory, tmp_path / "home")
    seen = {}

    def fake_run_study(p, opts):
        seen["budgets"] = opts.budgets
        out = p.results / opts.dataset / "study" / opts.study_name
        out.mkdir(parents=True, exist_ok=True)
        (out / "study.md").write_text("TABLE\n")
        return out

    monkeypatch.setattr(study_cli, "run_study", fake_run_study)
    code, _, _ = _study_cli(monkeypatch, capsys, [
        "-d", DATASET, "--inits", "random", "--labeled", "2", "6slall", "--labeled-slices", "4",
        "8", "--slice-volumes", "3"], tmp_path / "home")
    assert code == 0 and seen["budgets"] == ("2", "6slall", "4sl3", "8sl3")
    for argv, what in ((["--labeled", "0sl2"], "0sl2"), (["--slice-volumes", "2sl2"], "2sl2")):
        code, out, err = _study_cli(monkeypatch, capsys, ["-d", DATASET, *argv],
                                    tmp_path / "home")
        refusal_line(code, out, err, what, own=False)


def test_too_few_slices_for_the_volumes_is_one_line_exit_2(tmp_path_factory, tmp_path,
                                                            monkeypatch, capsys):
    tiny_home(tmp_path_factory, tmp_path / "home")
    code, out, err = _study_cli(monkeypatch, capsys, [
        "-d", DATASET, "--inits", "random", "--labeled", "2sl3"], tmp_path / "home")
    refusal_line(code, out, err, "2sl3")
