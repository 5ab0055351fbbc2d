"""``sslunet_finetune -d DATASET``: train a segmentation network (from scratch or pretrained)."""

from __future__ import annotations

import argparse
import os

from sslunet.cli._common import (
    fold, nonnegative_int, paths_from_env, positive_float, positive_int, run, seed_int,
)


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by finetune and pretrain; each overrides one TrainingConfig field."""
    g = p.add_argument_group("training schedule (defaults: nnU-Net's)")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--iters-per-epoch", type=positive_int)
    g.add_argument("--val-iters", type=nonnegative_int, help="0: no validation loss")
    g.add_argument("--batch-size", type=positive_int, help="default: the plan's")
    g.add_argument("--lr", type=positive_float)
    g.add_argument("--warmup-epochs", type=nonnegative_int)
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--num-workers", type=nonnegative_int,
                   help="background augmentation processes (0: in the main process)")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    g.add_argument("--seed", type=seed_int, default=0)
    g.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume an interrupted run from its latest checkpoint")


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """Fine-tuning recipe flags (finetune and study); see sslunet/training/param_groups.py."""
    g = p.add_argument_group("fine-tuning recipe for pretrained weights")
    g.add_argument("--freeze-encoder-epochs", type=nonnegative_int,
                   help="keep the encoder frozen for the first N epochs (decoder and heads "
                        "learn first), then train everything")
    g.add_argument("--pretrained-lr-scale", type=positive_float,
                   help="learning-rate multiplier for the tensors loaded from the checkpoint")


def training_overrides(args) -> dict:
    keys = ("epochs", "iters_per_epoch", "val_iters", "batch_size", "lr", "warmup_epochs",
            "optimizer", "num_workers", "freeze_encoder_epochs", "pretrained_lr_scale")
    out = {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}
    if args.no_amp:
        out["amp"] = False
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_finetune",
        description="Train the planned U-Net for segmentation, from random weights or from a "
                    "pretrained checkpoint. Launch under torchrun for multi-GPU training.")
    p.add_argument("-d", "--dataset", required=True, help="dataset ID, name or folder name")
    p.add_argument("-c", "--configuration", default="2d")
    p.add_argument("-f", "--fold", type=fold, default=0, help="fold 0-4, or 'all'")
    p.add_argument("--init", default="random",
                   help="'random', a pretraining objective (uses its finished checkpoint for "
                        "this dataset and configuration), or a checkpoint path")
    p.add_argument("--num-labeled", type=positive_int,
                   help="train on N labelled cases drawn (seeded) from the fold's training split")
    p.add_argument("--no-validation", action="store_true",
                   help="skip the final sliding-window validation")
    p.add_argument("--disable-tta", action="store_true",
                   help="no mirroring test-time augmentation in the final validation")
    add_training_args(p)
    add_recipe_args(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        # imported here: a bad argument is reported at once, without loading torch
        from sslunet.dataset.resolve import resolve_dataset_name
        from sslunet.training.distributed import DistContext, shutdown_distributed
        from sslunet.training.finetune import FinetuneOptions, finetune

        paths = paths_from_env()
        dist_ctx = DistContext.from_environ(os.environ)
        name = resolve_dataset_name(args.dataset, [paths.preprocessed])
        opts = FinetuneOptions(name, args.configuration, args.fold, args.init, args.num_labeled,
                               args.seed, args.device, args.continue_training,
                               not args.no_validation, not args.disable_tta,
                               training_overrides(args))
        try:
            run_dir = finetune(paths, opts, dist_ctx)
        finally:
            shutdown_distributed()
        if dist_ctx.is_main:
            print(f"model and logs: {run_dir}")

    run(go)


if __name__ == "__main__":
    main()
