"""The layout and state of run folders: every file and folder name a run writes, where runs
live, whether a run is new, interrupted or finished, and what ``--init`` points to.

A fine-tuning model folder is ``results/<dataset>/finetune/<init>__<config>__<N|all>[__seedS]/``
holding ``plans.json``, ``dataset.json`` and one ``fold_K/`` run folder per fold. A pretraining
run folder is ``results/<dataset>/pretrain/<objective>__<config>/``; multi-stage objectives keep
each stage's run in a sub-folder (``stage1_global/``, ...). A run folder holds the
checkpoints (:data:`CHECKPOINTS`), ``training.log``, ``metrics.jsonl`` (one JSON line per
epoch) and ``progress.png``; a fine-tuning run also ``run_config.json``,
``labeled_cases.json``, ``loaded_weights.json`` (pretrained inits) and ``validation/``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Iterable

from sslunet.errors import InputError
from sslunet.paths import Paths
from sslunet.planning.splits import budget_tag
from sslunet.runs.checkpoint import load_checkpoint

CHECKPOINTS = {"latest": "checkpoint_latest.pt", "best": "checkpoint_best.pt",
               "final": "checkpoint_final.pt"}
LOG_FILE = "training.log"
METRICS_FILE = "metrics.jsonl"
PROGRESS_PLOT = "progress.png"
RUN_CONFIG = "run_config.json"
LABELED_CASES = "labeled_cases.json"
LOADED_WEIGHTS = "loaded_weights.json"
PRETRAIN_CONFIG = "pretrain_config.json"
VALIDATION_DIR = "validation"  # sliding-window predictions + summary.json of the fold's val set
TEST_DIR = "test"  # a study's test-set predictions + summary.json
SUMMARY = "summary.json"  # what sslunet_evaluate writes into a prediction folder
FOLD_PREFIX = "fold_"
POSTPROCESSING = "postprocessing.json"  # a model folder's post-processing decision
ENSEMBLE_FILE = "ensemble.json"  # an ensemble folder's member models
ENSEMBLE_WORK = ".sslunet_ensemble"  # members' predictions inside an ensemble's output folder
FIND_BEST = "find_best.json"  # results/<dataset>/: the ranking and the predict command
PLANS_FILE = "plans.json"  # a model folder's copy of the plans it was trained with
DATASET_FILE = "dataset.json"  # ... and of its dataset.json (labels, file ending)
# a study folder (results/<dataset>/study/<name>/): its report and what it was asked
STUDY_REPORT = "study.md"
STUDY_TABLE = "study.csv"
STUDY_RUNS = "runs.json"  # one row per run, absolute run folders (merged across re-runs)
STUDY_OPTIONS = "study_options.json"
STUDY_DICE_PLOT = "dice_vs_labels.png"
STUDY_CONVERGENCE_PLOT = "convergence.png"
STUDY_OUTPUTS = (STUDY_REPORT, STUDY_TABLE, STUDY_DICE_PLOT, STUDY_CONVERGENCE_PLOT,
                 STUDY_OPTIONS)  # what a study's results are, for copying them elsewhere


# ----------------------------------------------------------------------------- where runs live
def pretrain_dir(paths: Paths, dataset: str, objective: str, configuration: str) -> Path:
    return paths.results / dataset / "pretrain" / f"{objective}__{configuration}"


def finetune_model_dir(paths: Paths, dataset: str, init: str, configuration: str,
                       num_labeled: int | None, seed: int,
                       labeled_slices: int | None = None) -> Path:
    n = budget_tag(num_labeled, labeled_slices)
    tag = f"{init_tag(init)}__{configuration}__{n}" + (f"__seed{seed}" if seed else "")
    return paths.results / dataset / "finetune" / tag


def ensemble_dir(paths: Paths, dataset: str, members: Iterable[str]) -> Path:
    """``results/<dataset>/ensembles/<A>+<B>/`` for member model folder names A, B."""
    return paths.results / dataset / "ensembles" / "+".join(members)


def fold_dir(model_dir: Path, fold: int | str) -> Path:
    return Path(model_dir) / f"{FOLD_PREFIX}{fold}"


def fold_name(run_dir: Path) -> str:
    """``fold_3`` -> ``3``."""
    return Path(run_dir).name[len(FOLD_PREFIX):]


def fold_dirs(model_dir: Path) -> list[Path]:
    return sorted(d for d in Path(model_dir).glob(f"{FOLD_PREFIX}*") if d.is_dir())


def checkpoint_path(run_dir: Path, kind: str = "final") -> Path:
    return Path(run_dir) / CHECKPOINTS[kind]


# ----------------------------------------------------------------------------- --init
def is_checkpoint_path(init: str) -> bool:
    """Whether ``--init`` names a checkpoint file (else ``random`` or an objective name)."""
    return "/" in init or "\\" in init or init.endswith((".pt", ".pth"))


def init_tag(init: str) -> str:
    """Folder-name form of ``--init``: the objective name, or a short hash of a path."""
    if not is_checkpoint_path(init):
        return init
    digest = hashlib.sha1(str(Path(init).resolve()).encode()).hexdigest()[:8]
    return f"ckpt-{digest}"


def resolve_init(paths: Paths, dataset: str, init: str, configuration: str) -> Path | None:
    """The checkpoint ``--init`` loads: None for ``random``, the file for a path, else the
    finished pretraining of that objective for this dataset and configuration."""
    if init == "random":
        return None
    if is_checkpoint_path(init):
        if not Path(init).is_file():
            raise InputError("--init checkpoint does not exist", Path(init))
        return Path(init)
    ckpt = checkpoint_path(pretrain_dir(paths, dataset, init, configuration))
    if not ckpt.is_file():
        raise InputError(f"no finished pretraining '{init}' for {dataset} {configuration} "
                         f"(run: sslunet_pretrain -d {dataset} -l {init} -c {configuration})",
                         ckpt)
    return ckpt


# ----------------------------------------------------------------------------- run state
def is_finished(run_dir: Path) -> bool:
    return checkpoint_path(run_dir).exists()


def is_interrupted(run_dir: Path, stage_folders: Iterable[str] = ("",)) -> bool:
    """A latest checkpoint of any stage, or a finished stage of an unfinished run."""
    run_dir = Path(run_dir)
    return not is_finished(run_dir) and any(
        checkpoint_path(run_dir / s, "latest").exists()
        or (s and checkpoint_path(run_dir / s).exists()) for s in stage_folders)


def check_run_state(run_dir: Path, resume: bool, what: str, rerun_hint: str,
                    stage_folders: Iterable[str] = ("",)) -> bool:
    """Refuse to overwrite a finished or interrupted run; True when the run is finished and
    ``resume`` was asked (nothing to do).

    Args:
        what: the kind of run in messages ("run", "pretraining").
        rerun_hint: how to run it again instead, for the "already finished" message.
        stage_folders: sub-folders of a multi-stage run ("" is the run folder itself).
    """
    if is_finished(run_dir):
        if resume:
            print(f"{run_dir} already finished; nothing to do", file=sys.stderr)
            return True
        raise InputError(f"this {what} already finished; its outputs are kept ({rerun_hint})",
                         run_dir)
    if not resume and is_interrupted(run_dir, stage_folders):
        raise InputError(f"an interrupted {what} exists here; add --continue to resume it (or "
                         "delete the folder to start over)", run_dir)
    return False


def check_resumable(run_dir: Path, stage_folders: Iterable[str] = ("",)) -> None:
    """Load what ``--continue`` will read (each finished stage, else the latest checkpoint),
    so that a damaged file stops the run before anything is written."""
    for s in stage_folders:
        folder = Path(run_dir) / s
        if s and checkpoint_path(folder).exists():
            load_checkpoint(checkpoint_path(folder), purpose="stage")
        elif checkpoint_path(folder, "latest").exists():
            load_checkpoint(checkpoint_path(folder, "latest"), purpose="resume")


# ----------------------------------------------------------------------------- records
def read_metrics(run_dir: Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl`` (empty before the first epoch)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
