"""``sslunet_study``: how much labelling does pretraining save, how much faster does it converge."""

from __future__ import annotations

import argparse

from sslunet.cli._common import (
    fold, folder_name, label_budget, paths_from_env, positive_int, run, seed_int, volume_budget,
)
from sslunet.planning.splits import budget_tag, parse_budget
from sslunet.cli._training_flags import (
    ENGINE_FLAGS, SCHEDULE_FLAGS, add_device_arg, add_overrides, add_recipe_args,
    training_overrides,
)
from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.runs.layout import STUDY_REPORT
from sslunet.study.api import STUDY_SCHEDULE, StudyOptions, run_study

# where the study's fine-tuning flags mean more than the shared help says
STUDY_HELPS = {
    "epochs": "fine-tuning epochs",
    "iters_per_epoch": "fine-tuning iterations per epoch",
    "val_iters": "validation iterations per epoch (the pseudo-Dice curve that convergence is "
                 "measured on)",
    "optimizer": f"fine-tuning optimiser for every init (default: {STUDY_SCHEDULE['optimizer']})",
    "lr": f"fine-tuning learning rate for every init (default: {STUDY_SCHEDULE['lr']:g})",
    "warmup_epochs": "fine-tuning warm-up epochs for every init (default: "
                     f"{STUDY_SCHEDULE['warmup_epochs']})",
    "num_workers": "background augmentation processes of every fine-tuning and pretraining run "
                   "(0: in the main process)",
}
RECIPE_HELPS = {
    "freeze_encoder_epochs": "pretrained inits: encoder frozen for the first N fine-tuning epochs",
    "pretrained_lr_scale": "pretrained inits: learning-rate multiplier for the loaded tensors",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_study",
        description="Pretrain each objective once, fine-tune every (init, label budget, fold, "
                    "seed), evaluate, and tabulate Dice against labelled volumes and the "
                    "convergence speed against random init. Re-running resumes.")
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("-c", "--configuration", default="2d")
    p.add_argument("--inits", nargs="+", default=["random", "regression", "contrastive"],
                   help="'random', pretraining objectives, or checkpoint paths")
    p.add_argument("--labeled", nargs="+", type=label_budget, default=["1", "2", "5", "all"],
                   help="label budgets: numbers of labelled volumes, 'all', or sparse budgets "
                        "<slices>sl<volumes|all> (20sl10: 20 slices spread over 10 volumes)")
    p.add_argument("--labeled-slices", nargs="+", type=positive_int, default=[],
                   help="add sparse budgets of this many annotated slices, spread over "
                        "--slice-volumes volumes (the other slices are ignored), to compare "
                        "with whole volumes")
    p.add_argument("--slice-volumes", type=volume_budget, default="10",
                   help="volumes the --labeled-slices budgets are spread over (default 10; "
                        "'all' = every training volume of the fold)")
    p.add_argument("--folds", nargs="+", type=fold, default=["0"])
    p.add_argument("--seeds", nargs="+", type=seed_int, default=[0])
    p.add_argument("--name", type=folder_name,
                   help="study folder name (default: from configuration and inits)")
    add_overrides(p.add_argument_group("fine-tuning schedule (every run)"), SCHEDULE_FLAGS,
                  STUDY_HELPS)
    add_recipe_args(p, RECIPE_HELPS)
    p.add_argument("--pretrain-epochs", type=positive_int)
    p.add_argument("--pretrain-iters-per-epoch", type=positive_int)
    p.add_argument("--pretrain-batch-size", type=positive_int)
    add_device_arg(p)
    p.add_argument("--no-amp", action="store_true",
                   help="every run in fp32 (default: mixed precision where the device does it "
                        "natively: CUDA, CPUs with AMX)")
    add_overrides(p.add_argument_group("how every run computes (fine-tuning and pretraining)"),
                  ENGINE_FLAGS)
    p.add_argument("--no-test", action="store_true",
                   help="do not score imagesTs/labelsTs even when they exist")
    p.add_argument("--disable-tta", action="store_true",
                   help="no mirroring test-time augmentation when scoring (faster on CPU)")
    p.add_argument("--convergence-budget", type=label_budget,
                   help="label budget shown in convergence.png (one of --labeled; default: "
                        "the smallest)")
    return p


def _pick(args, pairs) -> dict:
    return {field: getattr(args, attr) for attr, field in pairs if getattr(args, attr) is not None}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        paths = paths_from_env()
        name = resolve_dataset_name(args.dataset, [paths.preprocessed])
        pt = _pick(args, [("pretrain_epochs", "epochs"),
                          ("pretrain_iters_per_epoch", "iters_per_epoch"),
                          ("pretrain_batch_size", "batch_size"), ("num_workers", "num_workers")])
        if args.no_amp:
            pt["amp"] = False
        pt.update(_pick(args, [("compile", "compile"), ("channels_last", "channels_last")]))
        opts = StudyOptions(
            dataset=name, configuration=args.configuration, inits=tuple(args.inits),
            budgets=tuple(args.labeled) + tuple(
                budget_tag(parse_budget(args.slice_volumes)[0], n) for n in args.labeled_slices),
            folds=tuple(str(f) for f in args.folds),
            seeds=tuple(args.seeds), name=args.name, device=args.device,
            finetune_overrides=training_overrides(args), pretrain_overrides=pt,
            evaluate_test=not args.no_test, convergence_budget=args.convergence_budget,
            tta=not args.disable_tta)
        out = run_study(paths, opts)
        print((out / STUDY_REPORT).read_text())
        print(f"study outputs: {out}")

    run(go)


if __name__ == "__main__":
    main()
