"""``sslunet_finetune`` as a library call: supervised training from random or pretrained weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sslunet.data.augmentation import (
    patch_size_before_augmentation,
    training_transforms,
    validation_transforms,
)
from sslunet.data.loader import make_loader, stream_pair_factory
from sslunet.data.sampling import PatchDataLoader
from sslunet.inference.postprocessing import describe, update_model_postprocessing
from sslunet.inference.validation import validate_run
from sslunet.networks import build_network
from sslunet.paths import Paths, check_writable_folder
from sslunet.planning.splits import choose_labeled, fold_cases
from sslunet.plans import ConfigurationPlan
from sslunet.preprocessing.storage import load_plans, preprocessed_dir
from sslunet.runs.layout import (
    DATASET_FILE,
    LABELED_CASES,
    LOADED_WEIGHTS,
    PLANS_FILE,
    RUN_CONFIG,
    check_resumable,
    check_run_state,
    finetune_model_dir,
    fold_dir,
    resolve_init,
)
from sslunet.runs.nnunet import load_init_checkpoint
from sslunet.training.config import (
    TrainingConfig,
    TrainingOverrides,
    finetune_defaults,
    options_record,
    scaled_warmup,
)
from sslunet.training.distributed import DistContext, barrier, init_distributed
from sslunet.training.param_groups import finetune_groups
from sslunet.training.pretrained import load_pretrained
from sslunet.training.segmentation import SegmentationModel
from sslunet.training.sparse import RunLabels, run_labels, sparse_record
from sslunet.training.trainer import Trainer
from sslunet.utils.atomic import read_json, write_json
from sslunet.utils.device import default_data_workers, resolve_device


@dataclass(frozen=True)
class FinetuneOptions:
    dataset: str
    configuration: str = "2d"
    fold: int | str = 0
    init: str = "random"  # "random", a pretraining objective name, or a checkpoint path
    num_labeled: int | None = None
    seed: int = 0
    device: str = "auto"
    continue_training: bool = False
    validate: bool = True  # full sliding-window validation in original geometry at the end
    tta: bool = True  # mirroring test-time augmentation in that validation
    save_probabilities: bool = False  # keep validation probabilities (CASE.npz) for ensembling
    # TrainingConfig fields to change (a {field: value} dict is converted; unknown fields and
    # out-of-range values are refused here, at construction)
    overrides: TrainingOverrides = field(default_factory=TrainingOverrides)
    # the model folder (holding fold_K/); default results/<dataset>/finetune/<init>__<config>__
    # <N|all>[__seedS]. Studies keep their runs in their own folder through this.
    model_dir: str | None = None
    # sparse labels: this many slices, spread over the num_labeled volumes (the other slices
    # of those volumes are ignored); None = every slice of every labelled volume
    labeled_slices: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "overrides", TrainingOverrides.of(self.overrides))


def training_config(opts: FinetuneOptions, pretrained: bool) -> TrainingConfig:
    cfg = opts.overrides.apply(finetune_defaults(pretrained).replace(seed=opts.seed))
    if opts.overrides.warmup_epochs is None:
        cfg = scaled_warmup(cfg)
    return cfg


def make_loader_factory(folder: Path, train_ids, val_ids, config: ConfigurationPlan,
                        cfg: TrainingConfig, pin: bool, labels: RunLabels | None = None):
    """``seed -> (train stream, val stream, close)`` for segmentation patches."""
    batch = cfg.batch_size or config.batch_size
    patch = tuple(config.patch_size)
    read = patch_size_before_augmentation(patch)
    labels = labels or RunLabels(None, None)

    def train(seed: int):
        loader = PatchDataLoader(folder, train_ids, patch, batch, config.ndim,
                                 cfg.oversample_foreground, seed, True, read,
                                 ignore_label=labels.ignore, annotated_slices=labels.slices)
        return make_loader(loader, training_transforms(patch, config.ndim), cfg.num_workers,
                           pin, seed)

    def val(seed: int):
        loader = PatchDataLoader(folder, val_ids, patch, batch, config.ndim,
                                 cfg.oversample_foreground, seed, True,
                                 ignore_label=labels.dataset_ignore)
        return make_loader(loader, validation_transforms(), min(cfg.num_workers, 1), pin, seed)

    return stream_pair_factory(train, val)


def finetune(paths: Paths, opts: FinetuneOptions, dist_ctx: DistContext = DistContext()) -> Path:
    """Train a segmentation network; returns the fold's run folder."""
    plans = load_plans(paths, opts.dataset)
    config = plans.configuration(opts.configuration)
    pre = preprocessed_dir(paths, opts.dataset)
    train_ids, val_ids = fold_cases(pre, opts.fold)
    labeled = choose_labeled(train_ids, opts.num_labeled, opts.seed)
    model_dir = Path(opts.model_dir) if opts.model_dir else finetune_model_dir(
        paths, opts.dataset, opts.init, opts.configuration, opts.num_labeled, opts.seed,
        opts.labeled_slices)
    run_dir = fold_dir(model_dir, opts.fold)
    if check_run_state(run_dir, opts.continue_training, "run", "choose another --seed/"
                       "--num-labeled/--labeled-slices/-f, or delete the folder to retrain"):
        return run_dir
    check_writable_folder(run_dir, "run folder")
    labels = run_labels(plans, pre / config.data_identifier, labeled, opts.labeled_slices,
                        opts.seed)
    init_ckpt = resolve_init(paths, opts.dataset, opts.init, opts.configuration)
    cfg = training_config(opts, init_ckpt is not None)  # a bad setting stops here
    if opts.continue_training:
        check_resumable(run_dir)
    device = resolve_device(opts.device, dist_ctx.local_rank)
    if opts.overrides.num_workers is None:
        cfg = cfg.replace(num_workers=default_data_workers(device, dist_ctx.world_size,
                                                           cpu_default=cfg.num_workers))
    init_distributed(dist_ctx, device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    network = build_network(config, plans.num_input_channels, plans.num_classes,
                            cfg.deep_supervision, seed=opts.seed)
    report = None
    if init_ckpt is not None:
        report = load_pretrained(network, load_init_checkpoint(init_ckpt), config, init_ckpt)
    if dist_ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        plans.save(model_dir / PLANS_FILE)
        # the model folder is self-contained: prediction needs the file ending and labels
        write_json(model_dir / DATASET_FILE, read_json(pre / "dataset.json"))
        write_json(run_dir / LABELED_CASES, {"num_labeled": len(labeled), "seed": opts.seed,
                                             "cases": labeled, "validation": val_ids,
                                             **sparse_record(labels)})
        write_json(run_dir / RUN_CONFIG, {"options": options_record(opts),
                                          "training": dataclasses.asdict(cfg)})
        if report is not None:
            write_json(run_dir / LOADED_WEIGHTS, report)
    barrier()
    meta = {"kind": "finetune", "plans": plans.to_dict(), "configuration": config.name,
            "num_input_channels": plans.num_input_channels, "num_classes": plans.num_classes,
            "init": opts.init, "fold": str(opts.fold), "labeled_cases": labeled}
    model = SegmentationModel(network, config.batch_dice, labels.ignore)
    factory = make_loader_factory(pre / config.data_identifier, labeled, val_ids, config, cfg,
                                  device.type == "cuda", labels)
    groups = finetune_groups(model, report["loaded"] if report else (), cfg)
    trainer = Trainer(cfg, model, factory, run_dir, device, dist_ctx, meta, param_groups=groups)
    sparse = f" ({opts.labeled_slices} labelled slices)" if labels.slices else ""
    trainer.log.log(f"fine-tuning {opts.dataset} {config.name} fold {opts.fold}: init "
                    f"{opts.init}, {len(labeled)} labelled case(s){sparse}, {len(val_ids)} "
                    "validation, "
                    f"device {device}, {cfg.epochs} epochs x {cfg.iters_per_epoch} iterations")
    trainer.fit(resume=opts.continue_training)
    if opts.validate and dist_ctx.is_main:
        validate_run(network, plans, config, pre, val_ids, run_dir, device, opts.tta,
                     opts.save_probabilities, amp=cfg.amp)
        post = update_model_postprocessing(model_dir, pre / "gt_segmentations", plans.labels,
                                           read_json(pre / "dataset.json")["file_ending"])
        if post is not None:
            trainer.log.log(describe(post, plans.labels))
    barrier()
    return run_dir
