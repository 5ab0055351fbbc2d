"""``sslunet_pretrain`` as a library call: self-supervised pretraining of the planned U-Net.

Images: every preprocessed image of the configuration (``imagesTr`` with labels ignored, plus
``imagesUnlabeled``; ``imagesTs`` only on request), minus a seeded held-out share (5 %, at least
one image) that gives a validation loss. The objective (a registered module, see
:mod:`sslunet.ssl.objectives`) is trained by the same :class:`~sslunet.training.trainer.Trainer`
as fine-tuning, one run per stage. Output: ``SSLUNET_RESULTS/<dataset>/pretrain/
<objective>__<configuration>/`` with ``pretrain_config.json``, the trainer's files (in
``stageN_*/`` sub-folders for multi-stage objectives) and ``checkpoint_final.pt``, which
``sslunet_finetune --init <objective>`` loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sslunet.data.loader import stream_pair_factory
from sslunet.errors import InputError
from sslunet.paths import Paths, check_writable_folder
from sslunet.preprocessing.storage import list_cases, load_plans, preprocessed_dir
from sslunet.runs.checkpoint import joined_weights, load_checkpoint, save_checkpoint
from sslunet.runs.layout import (
    PRETRAIN_CONFIG,
    check_resumable,
    check_run_state,
    checkpoint_path,
    pretrain_dir,
)
from sslunet.ssl.objectives import PretrainObjective, PretrainSetup, Stage, get_objective
from sslunet.training.config import TrainingConfig, TrainingOverrides, options_record
from sslunet.training.distributed import DistContext, barrier, init_distributed
from sslunet.training.trainer import Trainer
from sslunet.utils.atomic import write_json
from sslunet.utils.device import default_data_workers, resolve_device

SOURCES = ("imagesTr", "imagesUnlabeled")
# Pretraining differs from fine-tuning's defaults here; objectives add their own on top.
PRETRAIN_DEFAULTS = {"val_iters": 10, "oversample_foreground": 0.0, "deep_supervision": False}


@dataclass(frozen=True)
class PretrainOptions:
    """What ``sslunet_pretrain`` was asked to do.

    Attributes:
        dataset: dataset folder name (``DatasetXXX_Name``).
        objective: registered objective name.
        configuration: ``2d`` or ``3d_fullres`` (any planned configuration).
        include_test: also pretrain on the preprocessed ``imagesTs``.
        val_fraction: held-out share of the images for the validation loss (0: none).
        seed: seeds the network, the heads, the split and the data streams.
        device: ``auto``, ``cuda`` or ``cpu``.
        continue_training: resume an interrupted run.
        objective_options: the objective's options that were given (``{field: value}``).
        overrides: TrainingConfig fields to change (a ``{field: value}`` dict is converted).
    """

    dataset: str
    objective: str
    configuration: str = "2d"
    include_test: bool = False
    val_fraction: float = 0.05
    seed: int = 0
    device: str = "auto"
    continue_training: bool = False
    objective_options: dict = field(default_factory=dict)
    overrides: TrainingOverrides = field(default_factory=TrainingOverrides)

    def __post_init__(self):
        object.__setattr__(self, "overrides", TrainingOverrides.of(self.overrides))


def pretrain_images(folder: Path, include_test: bool) -> list[str]:
    """Case ids of every preprocessed image to pretrain on (labels are never read).

    Raises:
        InputError: no image, or ``include_test`` without preprocessed test images.
    """
    ids = list_cases(folder, SOURCES)
    if include_test:
        test = list_cases(folder, ("imagesTs",))
        if not test:
            raise InputError("--include-test: no preprocessed test image (run sslunet_plan "
                             "--include-test first)", folder)
        ids = sorted(ids + test)
    if not ids:
        raise InputError("no preprocessed image for this configuration (run sslunet_plan)",
                         folder)
    return ids


def split_holdout(case_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded ``(train, val)`` split: ``round(fraction * N)`` held out, at least 1 when
    ``fraction > 0`` and N >= 2; a single image is never held out."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {fraction}")
    ids = sorted(case_ids)
    if fraction == 0.0 or len(ids) < 2:
        return ids, []
    n_val = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    order = np.random.default_rng([seed, 4241]).permutation(len(ids))
    held = {ids[i] for i in order[:n_val]}
    return [i for i in ids if i not in held], sorted(held)


def training_config(objective_cls: type, opts: PretrainOptions) -> TrainingConfig:
    """Pretraining defaults, then the objective's, then the CLI's overrides."""
    base = TrainingConfig(**{**PRETRAIN_DEFAULTS, **objective_cls.default_training})
    return opts.overrides.apply(base.replace(seed=opts.seed))


def stage_epochs(total: int, stages: tuple[Stage, ...]) -> list[int]:
    """Split ``total`` epochs by each stage's share; every stage gets at least one."""
    out = [max(1, round(total * s.epoch_share)) for s in stages[:-1]]
    return out + [max(1, total - sum(out))]


def finetune_command(opts: PretrainOptions) -> str:
    """The command that fine-tunes from this pretraining."""
    return (f"sslunet_finetune -d {opts.dataset} -c {opts.configuration} "
            f"--init {opts.objective}")


def checkpoint_meta(objective: PretrainObjective, setup: PretrainSetup, stage: Stage,
                    num_images: dict) -> dict:
    """Self-describing checkpoint fields (plain data: loadable with ``weights_only=True``)."""
    return {
        "kind": "pretrain", "dataset": setup.dataset, "plans": setup.plans.to_dict(),
        "configuration": setup.config.name, "num_input_channels": setup.num_input_channels,
        "objective": {"name": objective.name, "hyperparameters": objective.hyperparameters()},
        "stage": stage.name, "stages": [s.name for s in objective.stages()],
        "trained_modules": list(objective.trained_modules()),
        "transferable_prefixes": list(objective.transferable_prefixes()),
        "num_images": dict(num_images),
    }


def load_weights(objective: PretrainObjective, ckpt: dict) -> None:
    """Load a checkpoint's network and objective tensors into ``objective``."""
    objective.load_state_dict(joined_weights(ckpt))


def _loader_factory(objective, train_ids, val_ids, batch: int, cfg: TrainingConfig, pin: bool):
    """``seed -> (train stream, val stream or None, close)`` for the current stage."""
    def train(seed: int):
        return objective.make_stream(train_ids, batch, seed, True, cfg.num_workers, pin)

    def val(seed: int):
        return objective.make_stream(val_ids, batch, seed, False, min(cfg.num_workers, 1), pin)

    return stream_pair_factory(train, val if val_ids else None)


@dataclass(frozen=True)
class _Run:
    """What every stage of one pretraining shares."""

    setup: PretrainSetup
    run_dir: Path
    train_ids: list[str]
    val_ids: list[str]
    batch: int
    device: torch.device
    dist_ctx: DistContext
    resume: bool


def _run_stage(objective: PretrainObjective, stage: Stage, cfg: TrainingConfig, run: _Run) -> Path:
    """Train one stage (or reload it when an interrupted run had finished it)."""
    objective.set_stage(stage.name)
    out = run.run_dir / stage.folder if stage.folder else run.run_dir
    if stage.folder and checkpoint_path(out).exists():
        load_weights(objective, load_checkpoint(checkpoint_path(out), purpose="stage"))
        return checkpoint_path(out)
    if run.dist_ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier()
    counts = {"train": len(run.train_ids), "val": len(run.val_ids)}
    meta = checkpoint_meta(objective, run.setup, stage, counts)
    factory = _loader_factory(objective, run.train_ids, run.val_ids, run.batch, cfg,
                              run.device.type == "cuda")
    trainer = Trainer(cfg, objective, factory, out, run.device, run.dist_ctx, meta)
    trainer.log.log(
        f"pretraining {run.setup.dataset} {run.setup.config.name} with '{objective.name}' "
        f"(stage {stage.name}): {counts['train']} images, {counts['val']} held out, batch "
        f"{run.batch}, device {run.device}, {cfg.epochs} epochs x {cfg.iters_per_epoch} "
        f"iterations, {cfg.optimizer} lr {cfg.lr:g}; trains "
        f"{', '.join(objective.trainable_modules())}")
    return trainer.fit(resume=run.resume)


def _write_config(run: _Run, opts, objective, cfg, stages, epochs) -> None:
    write_json(run.run_dir / PRETRAIN_CONFIG, {
        "options": options_record(opts),
        "objective": {"name": objective.name, "hyperparameters": objective.hyperparameters()},
        "training": dataclasses.asdict(cfg), "batch_size": run.batch,
        "stages": [{"name": s.name, "folder": s.folder, "epochs": e}
                   for s, e in zip(stages, epochs)],
        "images": {"train": run.train_ids, "val": run.val_ids},
    })


def pretrain(paths: Paths, opts: PretrainOptions, dist_ctx: DistContext = DistContext()) -> Path:
    """Pretrain the planned network with one objective; returns the objective's run folder.

    Raises:
        InputError: unplanned dataset or configuration, no images, unknown objective or
            option, a finished run (without ``continue_training``) or an interrupted one
            (without ``continue_training``).
    """
    plans = load_plans(paths, opts.dataset)
    config = plans.configuration(opts.configuration)
    objective_cls = get_objective(opts.objective)
    run_dir = pretrain_dir(paths, opts.dataset, opts.objective, opts.configuration)
    if check_run_state(run_dir, opts.continue_training, "pretraining",
                       "delete the folder to pretrain again"):
        return run_dir
    folder = preprocessed_dir(paths, opts.dataset) / config.data_identifier
    train_ids, val_ids = split_holdout(pretrain_images(folder, opts.include_test),
                                       opts.val_fraction, opts.seed)
    setup = PretrainSetup(opts.dataset, plans, config, folder, paths, opts.seed, dist_ctx.enabled)
    objective = objective_cls.create(setup, opts.objective_options)
    stages = objective.stages()
    check_run_state(run_dir, opts.continue_training, "pretraining",
                    "delete the folder to pretrain again", [s.folder for s in stages])
    check_writable_folder(run_dir, "pretraining folder")
    cfg = training_config(objective_cls, opts)  # a bad setting stops here
    epochs = stage_epochs(cfg.epochs, stages)
    stage_cfgs = [cfg.replace(epochs=n) for n in epochs]  # ... or one a stage's share breaks
    if opts.continue_training:
        check_resumable(run_dir, [s.folder for s in stages])
    batch = cfg.batch_size or config.batch_size
    objective.check_batch_size(batch)
    device = resolve_device(opts.device, dist_ctx.local_rank)
    if opts.overrides.num_workers is None:
        workers = default_data_workers(device, dist_ctx.world_size, cpu_default=cfg.num_workers)
        cfg = cfg.replace(num_workers=workers)
        stage_cfgs = [c.replace(num_workers=workers) for c in stage_cfgs]
    init_distributed(dist_ctx, device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    run = _Run(setup, run_dir, train_ids, val_ids, batch, device, dist_ctx,
               opts.continue_training)
    if dist_ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run, opts, objective, cfg, stages, epochs)
    barrier()
    last = None
    for stage, stage_cfg in zip(stages, stage_cfgs):
        last = _run_stage(objective, stage, stage_cfg, run)
    if last != checkpoint_path(run_dir) and dist_ctx.is_main:
        ckpt = load_checkpoint(last)
        save_checkpoint(checkpoint_path(run_dir), {k: v for k, v in ckpt.items()
                                          if k not in ("format", "version")})
    barrier()
    return run_dir
