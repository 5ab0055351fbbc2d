"""``sslunet_finetune -d DATASET``: train a segmentation network (from scratch or pretrained)."""

from __future__ import annotations

import argparse
import os

from sslunet.cli._common import fold, paths_from_env, positive_int, run
from sslunet.cli._training_flags import add_recipe_args, add_training_args, training_overrides


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
    p.add_argument("--labeled-slices", type=positive_int,
                   help="sparse labels: use only this many slices (spread evenly over the "
                        "labelled cases' foreground, seeded), ignoring the rest")
    p.add_argument("--no-validation", action="store_true",
                   help="skip the final sliding-window validation")
    p.add_argument("--disable-tta", action="store_true",
                   help="no mirroring test-time augmentation in the final validation")
    p.add_argument("--npz", action="store_true",
                   help="keep the validation cases' class probabilities (fold_K/validation/"
                        "CASE.npz): sslunet_find_best needs them to try ensembles")
    add_training_args(p)
    add_recipe_args(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        # imported here: a bad argument is reported at once, without loading torch
        from sslunet.dataset.resolve import resolve_dataset_name
        from sslunet.training.distributed import DistContext, shutdown_distributed
        from sslunet.training.api import FinetuneOptions, finetune

        paths = paths_from_env()
        dist_ctx = DistContext.from_environ(os.environ)
        name = resolve_dataset_name(args.dataset, [paths.preprocessed])
        opts = FinetuneOptions(
            dataset=name, configuration=args.configuration, fold=args.fold, init=args.init,
            num_labeled=args.num_labeled, seed=args.seed, device=args.device,
            continue_training=args.continue_training, validate=not args.no_validation,
            tta=not args.disable_tta, save_probabilities=args.npz,
            overrides=training_overrides(args), labeled_slices=args.labeled_slices)
        try:
            run_dir = finetune(paths, opts, dist_ctx)
        finally:
            shutdown_distributed()
        if dist_ctx.is_main:
            print(f"model and logs: {run_dir}")

    run(go)


if __name__ == "__main__":
    main()
