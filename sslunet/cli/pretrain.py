"""``sslunet_pretrain -d DATASET -l OBJECTIVE``: self-supervised pretraining of the U-Net."""

from __future__ import annotations

import argparse
import os

from sslunet.cli._common import (
    float_range, nonnegative_float, nonnegative_int, paths_from_env, positive_float,
    positive_int, positive_int_tuple, probability, run,
)
from sslunet.cli._training_flags import add_training_args, training_overrides
from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.errors import InputError
from sslunet.ssl.objectives import list_objectives
from sslunet.ssl.objectives.options import OptionError
from sslunet.ssl.objectives.refs import SSL_LOSSES
from sslunet.ssl.pretrain import PretrainOptions, finetune_command, pretrain
from sslunet.training.distributed import DistContext, shutdown_distributed

# objective option -> (flags, argparse keywords); only options the user sets are passed on
OBJECTIVE_FLAGS = {
    "temperature": ("--temperature", dict(type=positive_float,
                                          help="contrastive tau (default 0.1)")),
    "proj_dim": ("--proj-dim", dict(type=positive_int, help="projection output width (128)")),
    "proj_hidden": ("--proj-hidden", dict(type=positive_int,
                                          help="global head hidden width (1024)")),
    "crop_min": ("--crop-min", dict(type=float_range(0.0, 1.0, low_open=True),
                                    help="smallest in-plane crop fraction of a view (0.5)")),
    "mask_ratio": ("--mask-ratio", dict(type=float_range(0.0, 1.0, True, True),
                                        help="mae: share of masked blocks (0.6)")),
    "block_size": ("--block-size", dict(type=positive_int_tuple,
                                        help="mae: block edge, N or Z,Y,X (default patch // 8)")),
    "num_swaps": ("--num-swaps", dict(type=positive_int, help="regression: patch pairs swapped "
                                                              "per image (default: 1.36%% of "
                                                              "the patch)")),
    "swap_size": ("--swap-size", dict(type=positive_int_tuple,
                                      help="regression: swapped box edge, N or Z,Y,X (default 5 "
                                           "voxels, isotropic mm)")),
    "p_nonlinear": ("--p-nonlinear", dict(type=probability, help="genesis (0.9)")),
    "p_local_shuffle": ("--p-local-shuffle", dict(type=probability, help="genesis (0.5)")),
    "p_paint": ("--p-paint", dict(type=probability, help="genesis (0.9)")),
    "p_outpaint": ("--p-outpaint", dict(type=probability, help="genesis, given paint (0.8)")),
    "strategy": ("--strategy", dict(choices=["GD", "GD-"], help="contrastive global loss (GD)")),
    "partitions": ("--partitions", dict(type=positive_int,
                                        help="contrastive: partitions per volume (4)")),
    "local_epochs_fraction": ("--local-epochs-fraction", dict(
        type=float_range(0.0, 1.0, True, True),
        help="contrastive: share of the epochs for the local stage (0.5)")),
    "local_level": ("--local-level", dict(type=nonnegative_int,
                                          help="contrastive: decoder level of the local loss, "
                                               "0 = full resolution (default: 1/4 in-plane)")),
    "local_variant": ("--local-variant", dict(choices=["LR", "LD"],
                                              help="contrastive local loss (LR)")),
    "local_negatives": ("--local-negatives", dict(type=nonnegative_int,
                                                  help="contrastive: nearest regions as "
                                                       "negatives, 0 = all (5)")),
    "local_views": ("--local-views", dict(choices=["mirror", "intensity"],
                                          help="contrastive local stage: view 2 also mirrored, "
                                               "features mapped back (mirror, default), or "
                                               "intensity-only views as the paper")),
    "local_negatives_from": ("--local-negatives-from", dict(
        choices=["image", "batch"], help="contrastive local stage: negatives from the anchor's "
                                         "own image (image, the paper) or also every region of "
                                         "the batch's other images (batch)")),
    "region_size": ("--region-size", dict(type=positive_int,
                                          help="contrastive: local region edge (3)")),
    "reference": ("--reference", dict(help="refs: 'self' or another planned dataset (self)")),
    "ssl_loss": ("--ssl-loss", dict(choices=list(SSL_LOSSES), help="refs: SSL loss (simclr)")),
    "lambda_ref": ("--lambda-ref", dict(type=nonnegative_float,
                                        help="refs: reference loss weight (1)")),
    "lambda_gm": ("--lambda-gm", dict(type=nonnegative_float,
                                      help="refs: gradient matching weight (1)")),
    "match_stages": ("--match-stages", dict(type=positive_int,
                                            help="refs: last encoder stages whose gradients are "
                                                 "matched (2)")),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_pretrain",
        description="Pretrain the planned U-Net on every preprocessed image of a dataset "
                    "(labels ignored) with a self-supervised objective; then fine-tune with "
                    "sslunet_finetune --init OBJECTIVE. Launch under torchrun for multi-GPU.")
    p.add_argument("-d", "--dataset", required=True, help="dataset ID, name or folder name")
    p.add_argument("-l", "--objective", required=True, choices=list_objectives())
    p.add_argument("-c", "--configuration", default="2d")
    p.add_argument("--include-test", action="store_true",
                   help="also pretrain on the preprocessed imagesTs")
    p.add_argument("--val-fraction", type=float_range(0.0, 1.0, high_open=True),
                   default=0.05,
                   help="held-out share of the images for the validation loss (0.05)")
    g = p.add_argument_group("objective options (only those of the chosen objective apply)")
    for dest, (flag, kwargs) in OBJECTIVE_FLAGS.items():
        g.add_argument(flag, dest=dest, **kwargs)
    add_training_args(p)
    return p


def objective_options(args) -> dict:
    """The objective options the user set (``{field: value}``), already validated by type."""
    return {k: getattr(args, k) for k in OBJECTIVE_FLAGS if getattr(args, k) is not None}


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = objective_options(args)

    def go():
        paths = paths_from_env()
        dist_ctx = DistContext.from_environ(os.environ)
        name = resolve_dataset_name(args.dataset, [paths.preprocessed])
        opts = PretrainOptions(
            dataset=name, objective=args.objective, configuration=args.configuration,
            include_test=args.include_test, val_fraction=args.val_fraction, seed=args.seed,
            device=args.device, continue_training=args.continue_training,
            objective_options=options, overrides=training_overrides(args))
        try:
            run_dir = pretrain(paths, opts, dist_ctx)
        except OptionError as e:  # the library names options by field: show them as flags
            raise InputError(e.describe(lambda o: OBJECTIVE_FLAGS[o][0])) from None
        finally:
            shutdown_distributed()
        if dist_ctx.is_main:
            print(f"pretrained weights and logs: {run_dir}")
            print(f"fine-tune from them with:\n  {finetune_command(opts)}")

    run(go)


if __name__ == "__main__":
    main()
