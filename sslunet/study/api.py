"""``sslunet_study``: pretrain once per objective, fine-tune per (init, label budget, fold, seed),
evaluate, and summarise label efficiency and convergence speed.

Every step reuses finished work: a finished pretraining or fine-tuning is skipped, an
interrupted one is continued, a failed one is reported in the table and the others go on.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sslunet.errors import InputError
from sslunet.paths import (
    Paths,
    check_folder_name,
    check_inside,
    check_writable_folder,
)
from sslunet.planning.splits import fold_cases, parse_budget
from sslunet.preprocessing.storage import load_plans, preprocessed_dir
from sslunet.runs.layout import (
    PRETRAIN_CONFIG,
    RUN_CONFIG,
    STUDY_OPTIONS,
    checkpoint_path,
    finetune_model_dir,
    fold_dir,
    init_tag,
    is_checkpoint_path,
    pretrain_dir,
)
from sslunet.runs.nnunet import load_init_checkpoint
from sslunet.ssl import api as ssl_api  # the module: tests replace ssl_api.pretrain
from sslunet.ssl.objectives import get_objective, list_objectives
from sslunet.study.collect import (
    collect_run,
    prepare_test_cases,
    run_row,
    with_earlier_rows,
    write_outputs,
)
from sslunet.training.api import FinetuneOptions, finetune, training_config
from sslunet.training.config import TrainingOverrides, options_record
from sslunet.training.pretrained import check_compatible
from sslunet.utils.atomic import read_json, write_json


@dataclass(frozen=True)
class StudyOptions:
    dataset: str
    configuration: str = "2d"
    inits: tuple[str, ...] = ("random", "regression", "contrastive")
    # labelled volumes, or "all"; a sparse budget "<S>sl<N|all>": S slices over N volumes
    budgets: tuple[str, ...] = ("1", "2", "5", "all")
    folds: tuple[str, ...] = ("0",)
    seeds: tuple[int, ...] = (0,)
    name: str | None = None
    device: str = "auto"
    finetune_overrides: TrainingOverrides = field(default_factory=TrainingOverrides)
    pretrain_overrides: TrainingOverrides = field(default_factory=TrainingOverrides)
    evaluate_test: bool = True
    convergence_budget: str | None = None  # default: the smallest budget
    tta: bool = True  # mirroring test-time augmentation when scoring validation/test cases

    def __post_init__(self):
        for name in ("finetune_overrides", "pretrain_overrides"):
            object.__setattr__(self, name, TrainingOverrides.of(getattr(self, name)))

    @property
    def study_name(self) -> str:
        # checkpoint paths enter the default name as a short hash (never as path components)
        return self.name or f"{self.configuration}__{'-'.join(init_tag(i) for i in self.inits)}"


def _log(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr)


def is_objective(init: str) -> bool:
    return init != "random" and not is_checkpoint_path(init)


# TrainingConfig fields that do not change what a run learns: a finished run is reused whatever
# they were.
NEUTRAL_SETTINGS = ("num_workers",)


def settings_mismatch(recorded: dict, requested: dict) -> list[str]:
    """Requested TrainingConfig fields that a recorded run was trained with differently."""
    return [f"{k} {recorded[k]!r} (asked {v!r})" for k, v in requested.items()
            if k not in NEUTRAL_SETTINGS and k in recorded and recorded[k] != v]


def ensure_pretrained(paths: Paths, opts: StudyOptions, objective: str) -> str:
    """Run (or continue) the pretraining of ``objective`` unless it already finished; returns
    a line for ``study.md`` saying which pretraining the study used."""
    out = pretrain_dir(paths, opts.dataset, objective, opts.configuration)
    reused = checkpoint_path(out).exists()
    if not reused:
        _log(f"pretraining {objective} -> {out}")
        ssl_api.pretrain(paths, ssl_api.PretrainOptions(
            dataset=opts.dataset, objective=objective, configuration=opts.configuration,
            device=opts.device, continue_training=True,
            overrides=opts.pretrain_overrides))
    cfg = _pretrain_config(out)
    t = cfg.get("training", {})
    note = ""
    if reused:
        diffs = settings_mismatch(t, opts.pretrain_overrides.set_fields())
        note = (f" (finished earlier with other settings: {', '.join(diffs)})" if diffs
                else " (finished earlier, reused)")
        _log(f"pretraining {objective}: reused {out}{note}" + (
            "; delete that folder to pretrain with this study's settings" if diffs else ""))
    what = (f"{t['epochs']} epochs x {t['iters_per_epoch']} iterations, batch "
            f"{cfg.get('batch_size')}, {t['optimizer']} lr {t['lr']:g}") if t else "settings unknown"
    return f"{objective}: {what}{note} ({out})"


def _pretrain_config(out: Path) -> dict:
    path = out / PRETRAIN_CONFIG
    return read_json(path) if path.exists() else {}


def study_model_dir(paths: Paths, opts: StudyOptions, init: str, budget: str, seed: int) -> Path:
    """The study's own copy of a fine-tuning's model folder: studies with other schedules on
    the same dataset never share (or silently reuse) each other's runs."""
    n, slices = parse_budget(budget)
    tag = finetune_model_dir(paths, opts.dataset, init, opts.configuration, n, seed,
                             slices).name
    return study_dir(paths, opts) / "finetune" / tag


def study_dir(paths: Paths, opts: StudyOptions) -> Path:
    """``SSLUNET_RESULTS/<dataset>/study/<name>/``."""
    return paths.results / opts.dataset / "study" / opts.study_name


# recipe parts for pretrained weights: a random init keeps its own recipe (fair to both)
PRETRAINED_ONLY = ("freeze_encoder_epochs", "pretrained_lr_scale")


# One optimiser schedule for every init unless the user gives one: the comparison is fair, and
# on the ACDC bench (docs/payoff.md) it is the best schedule measured for random init at short
# budgets, while nnU-Net's pretrained recipe (SGD 1e-3 + warm-up) collapsed to background.
STUDY_SCHEDULE = {"optimizer": "adamw", "lr": 3e-3, "warmup_epochs": 0}


def init_overrides(opts: StudyOptions, init: str) -> TrainingOverrides:
    """The fine-tuning overrides that apply to ``init``: the study's schedule, then the user's
    flags; recipe parts for pretrained weights never apply to random init."""
    merged = TrainingOverrides.of({**STUDY_SCHEDULE, **opts.finetune_overrides.set_fields()})
    if init == "random":
        merged = dataclasses.replace(merged, **{k: None for k in PRETRAINED_ONLY})
    return merged


def _finetune_one(paths: Paths, opts: StudyOptions, init: str, budget: str, fold: str,
                  seed: int) -> Path:
    model_dir = study_model_dir(paths, opts, init, budget, seed)
    recorded = fold_dir(model_dir, fold) / RUN_CONFIG
    overrides = init_overrides(opts, init)
    if recorded.exists():
        diffs = settings_mismatch(read_json(recorded)["training"], overrides.set_fields())
        if diffs:
            raise InputError(f"this study's run was trained with other settings "
                             f"({', '.join(diffs)}); use another --name, or delete the "
                             f"folder to retrain", recorded.parent)
    fold_v = "all" if fold == "all" else int(fold)
    n, slices = parse_budget(budget)
    fo = FinetuneOptions(opts.dataset, opts.configuration, fold_v, init, n,
                         seed, opts.device, continue_training=True, validate=True,
                         tta=opts.tta, overrides=overrides,
                         model_dir=str(model_dir), labeled_slices=slices)
    return finetune(paths, fo)


def run_study(paths: Paths, opts: StudyOptions,
              finetune_fn: Callable[..., Path] | None = None) -> Path:
    """Run the whole study; returns ``SSLUNET_RESULTS/<dataset>/study/<name>/``."""
    finetune_fn = finetune_fn or _finetune_one
    check_study(paths, opts)
    pre = preprocessed_dir(paths, opts.dataset)
    out = study_dir(paths, opts)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / STUDY_OPTIONS, options_record(opts))
    failed_pretraining: dict[str, str] = {}
    pretrainings: list[str] = []
    for init in opts.inits:
        if is_objective(init):
            try:
                pretrainings.append(ensure_pretrained(paths, opts, init))
            except Exception as e:  # noqa: BLE001 - reported, the rest continues
                failed_pretraining[init] = _short(e)
                _log(f"pretraining {init} FAILED: {failed_pretraining[init]}")
    test = prepare_test_cases(paths, opts.dataset, opts.configuration, pre) \
        if opts.evaluate_test else None
    rows = []
    grid = [(i, b, f, s) for i in opts.inits for b in opts.budgets for f in opts.folds
            for s in opts.seeds]
    for k, (init, budget, fold, seed) in enumerate(grid, 1):
        planned_dir = fold_dir(study_model_dir(paths, opts, init, budget, seed), fold)
        _log(f"run {k}/{len(grid)}: init {init}, N={budget}, fold {fold}, seed {seed} -> "
             f"{planned_dir}")
        n_all = len(fold_cases(pre, "all" if fold == "all" else int(fold))[0])
        if init in failed_pretraining:
            rows.append(run_row(init, budget, fold, seed, n_all, None,
                                f"pretraining failed: {failed_pretraining[init]}"))
            continue
        t0 = time.time()
        try:
            run_dir = finetune_fn(paths, opts, init, budget, fold, seed)
            rows.append(collect_run(opts, pre, init, budget, fold, seed, n_all, run_dir, test))
        except Exception as e:  # noqa: BLE001 - a failing run must not stop the others
            _log(f"run FAILED after {time.time() - t0:.0f} s: {_short(e)} (folder "
                 f"{planned_dir})")
            rows.append(run_row(init, budget, fold, seed, n_all, None, f"failed: {_short(e)}"))
    write_outputs(out, with_earlier_rows(out, rows), opts, pretrainings, paths.results)
    _log(f"study outputs: {out}")
    return out


def check_study(paths: Paths, opts: StudyOptions) -> None:
    """Refuse a study whose arguments cannot work, before anything runs or is written.

    Runs fail one by one (and the study goes on) only for what cannot be known up front; an
    unknown init, an unplanned configuration, a fold or label budget the splits do not have, a
    study name that is not a plain folder name or a setting out of range stop the study here
    (an :class:`InputError`, exit status 2 on the command line).
    """
    config = load_plans(paths, opts.dataset).configuration(opts.configuration)
    pre = preprocessed_dir(paths, opts.dataset)
    check_folder_name(opts.study_name, "study name (--name)")
    check_inside(paths.results, study_dir(paths, opts), "study folder")
    for what, values in (("--inits", opts.inits), ("--labeled", opts.budgets),
                         ("--folds", opts.folds), ("--seeds", opts.seeds)):
        if not values:
            raise InputError(f"{what}: give at least one value")
    objectives = list_objectives()
    for init in opts.inits:
        if init == "random" or (is_objective(init) and init in objectives):
            continue
        if is_objective(init):
            raise InputError(f"--inits: unknown init {init!r}; use 'random', a pretraining "
                             f"objective ({', '.join(objectives)}) or a checkpoint path")
        check_compatible(load_init_checkpoint(init), config, Path(init))
    for fold in opts.folds:
        n_train = len(fold_cases(pre, "all" if fold == "all" else _fold_number(fold))[0])
        for budget in opts.budgets:
            n, slices = _budget_number(budget)
            if n is not None and not 1 <= n <= n_train:
                raise InputError(f"--labeled {budget}: fold {fold} has {n_train} training "
                                 f"case(s); budgets must be 1..{n_train} or 'all'")
            if slices is not None and slices < (n or n_train):
                raise InputError(f"--labeled {budget}: {slices} slice(s) cannot be spread over "
                                 f"{n or n_train} volume(s); give at least one per volume")
    if any(not isinstance(s, int) or s < 0 for s in opts.seeds):
        raise InputError(f"--seeds must be integers >= 0, got {opts.seeds}")
    if opts.convergence_budget is not None and opts.convergence_budget not in opts.budgets:
        raise InputError(f"--convergence-budget {opts.convergence_budget} is not one of "
                         f"--labeled {' '.join(opts.budgets)}")
    for init in opts.inits:  # every run's training settings (a SettingError names the flag)
        training_config(FinetuneOptions(opts.dataset, opts.configuration, seed=opts.seeds[0],
                                        overrides=init_overrides(opts, init)),
                        pretrained=init != "random")
        if is_objective(init) and not checkpoint_path(
                pretrain_dir(paths, opts.dataset, init, opts.configuration)).exists():
            cls = get_objective(init)
            cfg = ssl_api.training_config(cls, ssl_api.PretrainOptions(
                opts.dataset, init, opts.configuration, overrides=opts.pretrain_overrides))
            batch = cfg.batch_size or config.batch_size
            if batch < cls.min_batch_size:
                raise InputError(f"objective '{init}' needs --pretrain-batch-size >= "
                                 f"{cls.min_batch_size}, got {batch}")
    check_writable_folder(study_dir(paths, opts), "study folder")


def _budget_number(budget: str) -> tuple[int | None, int | None]:
    try:
        return parse_budget(budget)
    except ValueError:
        raise InputError(f"--labeled: {budget!r} is not a number of labelled volumes, 'all', "
                         "or <slices>sl<volumes|all>") from None


def _fold_number(fold: str) -> int:
    try:
        return int(fold)
    except ValueError:
        raise InputError(f"--folds: {fold!r} is not a fold number or 'all'") from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if not msg:
        msg = traceback.format_exception_only(type(e), e)[-1].strip()
    return f"{type(e).__name__}: {msg}"[:300]
