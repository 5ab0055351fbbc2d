"""Bad command-line values, output folders, plans and checkpoints, through the real CLIs.

Each class of the issue is run through ``python -m sslunet.cli.<command>`` in subprocesses and
must end with exit status 2, exactly one ``error:`` line (argparse's, or ours) naming the flag or
the file, no traceback, no run folder, and the user's folders unchanged:

- output folders that cannot be written (a file in the way, an immutable folder);
- numeric values and study arguments that cannot work (every numeric flag of every command is
  also checked in process, through each command's parser);
- hand-edited ``plans.json`` (patch not divisible by the downsampling, batch 0);
- malformed checkpoints (empty file, tagged but without weights, non-integer channels) in
  ``--init``, ``--continue`` and ``predict -m``;
- names that would become folders outside their root.

(That worker processes die with a parent killed by ``kill -9`` is checked in
tests/utils/test_processes.py; hand-edited plans loaded in process in tests/test_plans.py.)

The subprocesses are started once, two at a time, by the module fixture ``runs`` (each is mostly
interpreter and torch start-up); the tests then check their results class by class, with the
CLI-probe harness of :mod:`tests.helpers.cli`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sslunet.runs import checkpoint as ckpt_mod
from tests.helpers.cli import Probe, check_probes, refusal_line, run_main, run_probes
from tests.helpers.damage import edit_plans
from tests.helpers.datasets import DATASET, tiny_home, trained_home


# --------------------------------------------------------------------------- helpers


def chattr_works(tmp: Path) -> bool:
    """Whether ``chattr +i`` can make a folder immutable here (tests run as root, whom
    permission bits do not stop)."""
    probe = tmp / "chattr_probe"
    probe.mkdir()
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        return False
    try:
        (probe / "x").touch()
        return False
    except OSError:
        return True
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)


def save_raw_checkpoint(path: Path, payload: dict) -> None:
    """A checkpoint with the sslunet tag but any content (what a damaged file can hold)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION, **payload}, path)


TINY = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--batch-size", "2",
        "--num-workers", "0", "--device", "cpu"]


# --------------------------------------------------------------------------- the runs


def _scenarios(base: Path, factory) -> dict[str, Probe]:
    out: dict[str, Probe] = {}
    homes = iter(range(100))

    def planned() -> Path:
        home = base / f"planned{next(homes)}"
        tiny_home(factory, home)
        return home

    def trained() -> tuple[Path, Path]:
        home = base / f"trained{next(homes)}"
        _, run_dir = trained_home(factory, home)
        return home, run_dir

    a_file = base / "a_file"
    a_file.write_text("not a folder\n")

    # -- class 2: output locations that cannot be written
    home = planned()
    out["home_is_file"] = Probe("finetune", ["-d", "42", *TINY], a_file,
                                   (str(a_file), "is a file, not a folder"), keep=[a_file])
    out["results_is_file"] = Probe(
        "finetune", ["-d", "42", *TINY], home, (str(a_file), "results root",
                                                "not a folder"),
        keep=[home, a_file], env={"SSLUNET_RESULTS": str(a_file)})
    home, run_dir = trained()
    model = run_dir.parent
    images = home / "raw" / DATASET / "imagesTr"
    out["predict_output_under_file"] = Probe(
        "predict", ["-i", images, "-o", a_file / "masks", "-m", model, "--device", "cpu"],
        home, (str(a_file / "masks"), "output folder (-o)", f"{a_file} is a file"),
        keep=[home, a_file])
    out["evaluate_output_under_file"] = Probe(
        "evaluate", ["-r", home / "raw" / DATASET / "labelsTr", "-p",
                     home / "raw" / DATASET / "labelsTr", "-o", a_file / "scores"],
        home, (str(a_file / "scores"), "output folder", f"{a_file} is a file"),
        keep=[home, a_file])
    if chattr_works(base):
        frozen = base / "frozen"  # an immutable, empty folder (root cannot write into it)
        frozen.mkdir()
        subprocess.run(["chattr", "+i", str(frozen)], check=True)
        out["plan_into_immutable"] = Probe(
            "plan", ["-d", home / "raw" / DATASET, "-c", "2d", "-np", "1"], base / "unused",
            (str(frozen / DATASET), "preprocessed folder", "not writable"),
            keep=[home], env={"SSLUNET_PREPROCESSED": str(frozen)})
        out["predict_into_immutable"] = Probe(
            "predict", ["-i", images, "-o", frozen / "masks", "-m", model, "--device", "cpu"],
            home, (str(frozen / "masks"), f"{frozen} is not writable"), keep=[home])

    # -- class 3: numeric values and study arguments
    home = planned()
    results = home / "results" / DATASET
    out["fold_abc"] = Probe("finetune", ["-d", "42", "-f", "abc", *TINY], home,
                               ("-f/--fold", "'abc'"), keep=[home], absent=[results])
    out["freeze_beyond_epochs"] = Probe(
        "finetune", ["-d", "42", *TINY[2:], "--epochs", "2", "--freeze-encoder-epochs", "5"],
        home, ("--freeze-encoder-epochs", "epochs = 2"), keep=[home], absent=[results])
    out["pretrain_epochs_0"] = Probe("pretrain", ["-d", "42", "-l", "mae", "--epochs", "0"],
                                        home, ("--epochs", "'0'"), keep=[home], absent=[results])
    out["study_labeled_0"] = Probe("study", ["-d", "42", "--inits", "random", "--labeled",
                                                "0", *TINY], home, ("--labeled", "'0'"),
                                      keep=[home], absent=[results])
    out["study_unknown_init"] = Probe(
        "study", ["-d", "42", "--inits", "random", "no_such_objective", "--labeled", "1",
                  *TINY], home, ("--inits", "no_such_objective", "contrastive"), keep=[home],
        absent=[results])
    out["study_budget_beyond_fold"] = Probe(
        "study", ["-d", "42", "--inits", "random", "--labeled", "1", "99", *TINY], home,
        ("--labeled 99", "4 training case(s)"), keep=[home], absent=[results])

    # -- class 5: hand-edited plans.json
    home = planned()
    out["plans_patch_not_divisible"] = Probe(
        "finetune", ["-d", "42", *TINY], home, (str(edit_plans(home, patch_size=[30, 32])),
                                                "not divisible", "axis 0"),
        keep=[home], absent=[home / "results" / DATASET])
    home = planned()
    out["plans_batch_0"] = Probe(
        "pretrain", ["-d", "42", "-l", "mae", *TINY[:-6], "--device", "cpu"], home,
        (str(edit_plans(home, batch_size=0)), "batch_size 0"), keep=[home],
        absent=[home / "results" / DATASET])

    # -- class 6: malformed checkpoints
    home = planned()
    empty = base / "ckpts" / "empty.pt"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    no_weights = base / "ckpts" / "no_weights.pt"
    save_raw_checkpoint(no_weights, {"kind": "pretrain", "configuration": "2d", "plans": {}})
    out["init_empty_checkpoint"] = Probe(
        "finetune", ["-d", "42", "--init", empty, *TINY], home, (str(empty), "empty"),
        keep=[home, empty.parent], absent=[home / "results" / DATASET])
    out["init_without_weights"] = Probe(
        "finetune", ["-d", "42", "--init", no_weights, *TINY], home,
        (str(no_weights), "lacks network_weights"), keep=[home, empty.parent],
        absent=[home / "results" / DATASET])
    home, run_dir = trained()
    ckpt = run_dir / "checkpoint_final.pt"
    payload = torch.load(ckpt, weights_only=True)
    save_raw_checkpoint(ckpt, {**payload, "num_input_channels": "one"})
    out["predict_non_integer_channels"] = Probe(
        "predict", ["-i", home / "raw" / DATASET / "imagesTr", "-o", base / "masks_channels",
                    "-m", run_dir.parent, "--device", "cpu"], home,
        (str(ckpt), "num_input_channels", "'one'"), keep=[home],
        absent=[base / "masks_channels"])
    home, run_dir = trained()
    (run_dir / "checkpoint_final.pt").unlink()  # an interrupted run with a damaged latest one
    (run_dir / "checkpoint_latest.pt").write_bytes(b"")
    out["continue_empty_latest"] = Probe(
        "finetune", ["-d", "42", "--continue", *TINY], home,
        (str(run_dir / "checkpoint_latest.pt"), "empty"), keep=[home])

    # -- class 9: names that become folders
    home = planned()
    out["study_name_escapes"] = Probe(
        "study", ["-d", "42", "--inits", "random", "--labeled", "1", "--name", "../../../x",
                  *TINY], home, ("--name", "'../../../x'"), keep=[home],
        absent=[home / "results" / DATASET, base / "x", home / "x"])
    out["synth_name_escapes"] = Probe(
        "synth", ["-o", base / "synth_root", "--name", "../escaped", "--labeled", "1",
                  "--unlabeled", "0", "--test", "0", "-np", "1"], home,
        ("dataset name", "'../escaped'"), keep=[home],
        absent=[base / "synth_root", base / "escaped"])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Probe]:
    base = tmp_path_factory.mktemp("bad_input_cli")
    scenarios = _scenarios(base, tmp_path_factory)
    try:
        run_probes(scenarios.values(), workers=2)
    finally:
        if (base / "frozen").exists():
            subprocess.run(["chattr", "-i", str(base / "frozen")], capture_output=True)
    return scenarios


def _check_all(runs: dict[str, Probe], names: list[str]) -> None:
    check_probes(runs, [name for name in names if name in runs])


# --------------------------------------------------------------------------- the classes


@pytest.mark.slow
def test_unwritable_output_locations_are_refused_up_front(runs):
    _check_all(runs, ["home_is_file", "results_is_file", "predict_output_under_file",
                      "evaluate_output_under_file", "plan_into_immutable",
                      "predict_into_immutable"])


@pytest.mark.slow
def test_invalid_numbers_and_study_arguments_are_refused_before_any_run(runs):
    _check_all(runs, ["fold_abc", "freeze_beyond_epochs", "pretrain_epochs_0",
                      "study_labeled_0", "study_unknown_init", "study_budget_beyond_fold"])


@pytest.mark.slow
def test_hand_edited_plans_are_refused_when_loaded(runs):
    _check_all(runs, ["plans_patch_not_divisible", "plans_batch_0"])


@pytest.mark.slow
def test_malformed_checkpoints_are_refused(runs):
    _check_all(runs, ["init_empty_checkpoint", "init_without_weights",
                      "predict_non_integer_channels", "continue_empty_latest"])


@pytest.mark.slow
def test_names_that_would_leave_their_root_are_refused(runs):
    _check_all(runs, ["study_name_escapes", "synth_name_escapes"])


# --------------------------------------------------------------------------- in process


# every numeric flag of every command, with a value it must refuse (argparse: exit 2)
BAD_VALUES = {
    "finetune": ["-f abc", "-f -1", "--num-labeled 0", "--epochs 0", "--iters-per-epoch 0",
                 "--val-iters -1", "--batch-size -2", "--lr -1", "--lr nan", "--warmup-epochs -1",
                 "--num-workers -1", "--seed -1", "--freeze-encoder-epochs -1",
                 "--pretrained-lr-scale 0"],
    "pretrain": ["--val-fraction 1", "--temperature 0", "--proj-dim 0", "--proj-hidden 0",
                 "--crop-min 0", "--mask-ratio 1", "--block-size 0", "--block-size a",
                 "--num-swaps 0", "--swap-size 2,-1", "--p-nonlinear 1.5", "--p-local-shuffle -1",
                 "--p-paint 2", "--p-outpaint inf", "--partitions 0",
                 "--local-epochs-fraction 1", "--local-level -1", "--local-negatives -1",
                 "--region-size 0", "--lambda-ref -1", "--lambda-gm -1", "--match-stages 0",
                 "--epochs 0", "--batch-size 0", "--seed abc"],
    "study": ["--labeled abc", "--labeled 0", "--folds x", "--seeds -1", "--epochs 0",
              "--iters-per-epoch 0", "--batch-size 0", "--val-iters -1", "--lr 0",
              "--warmup-epochs -1", "--freeze-encoder-epochs -2", "--pretrained-lr-scale -1",
              "--pretrain-epochs 0", "--pretrain-iters-per-epoch 0", "--pretrain-batch-size 0",
              "--num-workers -1", "--convergence-budget 0", "--name ..", "--name a/b"],
    "predict": ["-f x", "--step-size 0", "--step-size 1.5", "-np -1"],
    "plan": ["--gpu-memory-gb 0", "--base-features 0", "--max-features -8", "-np 0",
             "--target-spacing 1 0 1"],
    "synth": ["--labeled -1", "--unlabeled x", "--test -1", "--seed -1", "--id 0", "--id 1000",
              "-np 0"],
    "demo": ["--num-workers -1", "--seed -1"],
    "evaluate": ["-np 0"],
}
REQUIRED = {"finetune": ["-d", "x"], "pretrain": ["-d", "x", "-l", "mae"], "study": ["-d", "x"],
            "predict": ["-i", "x", "-o", "y"], "plan": ["-d", "x"], "synth": [], "demo": [],
            "evaluate": ["-r", "x", "-p", "y"]}


@pytest.mark.parametrize("command", sorted(BAD_VALUES))
def test_every_numeric_flag_is_checked_by_its_parser(command, capsys, monkeypatch):
    import importlib

    main = importlib.import_module(f"sslunet.cli.{command}").main
    monkeypatch.setenv("SSLUNET_HOME", "/nonexistent/never/used")
    for bad in BAD_VALUES[command]:
        code, out, err = run_main(main, REQUIRED[command] + bad.split(), capsys)
        try:
            refusal_line(code, out, err, bad.split()[0], own=False)
        except AssertionError as e:
            raise AssertionError(f"{bad}: {e}") from None
