"""``sslunet_study``: how much labelling does pretraining save, how much faster does it converge."""

from __future__ import annotations

import argparse

from sslunet.cli._common import (
    fold, folder_name, label_budget, nonnegative_int, paths_from_env, positive_float,
    positive_int, run, seed_int,
)
from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.study.run import StudyOptions, run_study


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
                   help="label budgets: numbers of labelled volumes, or 'all'")
    p.add_argument("--folds", nargs="+", type=fold, default=["0"])
    p.add_argument("--seeds", nargs="+", type=seed_int, default=[0])
    p.add_argument("--name", type=folder_name,
                   help="study folder name (default: from configuration and inits)")
    p.add_argument("--epochs", type=positive_int, help="fine-tuning epochs")
    p.add_argument("--iters-per-epoch", type=positive_int,
                   help="fine-tuning iterations per epoch")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--val-iters", type=nonnegative_int, help="validation iterations per epoch "
                   "(the pseudo-Dice curve that convergence is measured on)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"],
                   help="fine-tuning optimiser for every init (default: adamw)")
    p.add_argument("--lr", type=positive_float,
                   help="fine-tuning learning rate for every init (default: 3e-3)")
    p.add_argument("--warmup-epochs", type=nonnegative_int,
                   help="fine-tuning warm-up epochs for every init (default: 0)")
    p.add_argument("--freeze-encoder-epochs", type=nonnegative_int,
                   help="pretrained inits: encoder frozen for the first N fine-tuning epochs")
    p.add_argument("--pretrained-lr-scale", type=positive_float,
                   help="pretrained inits: learning-rate multiplier for the loaded tensors")
    p.add_argument("--pretrain-epochs", type=positive_int)
    p.add_argument("--pretrain-iters-per-epoch", type=positive_int)
    p.add_argument("--pretrain-batch-size", type=positive_int)
    p.add_argument("--num-workers", type=nonnegative_int)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
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
        ft = _pick(args, [("epochs", "epochs"), ("iters_per_epoch", "iters_per_epoch"),
                          ("batch_size", "batch_size"), ("num_workers", "num_workers"),
                          ("val_iters", "val_iters"), ("optimizer", "optimizer"), ("lr", "lr"),
                          ("warmup_epochs", "warmup_epochs"),
                          ("freeze_encoder_epochs", "freeze_encoder_epochs"),
                          ("pretrained_lr_scale", "pretrained_lr_scale")])
        pt = _pick(args, [("pretrain_epochs", "epochs"),
                          ("pretrain_iters_per_epoch", "iters_per_epoch"),
                          ("pretrain_batch_size", "batch_size"), ("num_workers", "num_workers")])
        opts = StudyOptions(name, args.configuration, tuple(args.inits), tuple(args.labeled),
                            tuple(str(f) for f in args.folds), tuple(args.seeds), args.name,
                            args.device, ft, pt, not args.no_test, args.convergence_budget,
                            not args.disable_tta)
        out = run_study(paths, opts)
        print((out / "study.md").read_text())
        print(f"study outputs: {out}")

    run(go)


if __name__ == "__main__":
    main()
