"""``sslunet_pretrain -d DATASET -l OBJECTIVE``: self-supervised pretraining of the U-Net."""

from __future__ import annotations

import argparse
import os

from sslunet.cli._common import float_range, paths_from_env, run
from sslunet.cli._objective_flags import (
    add_objective_args, collect_flags, flag_name, given_options,
)
from sslunet.cli._training_flags import add_training_args, training_overrides
from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.errors import InputError
from sslunet.ssl.objectives import OBJECTIVES, list_objectives
from sslunet.ssl.objectives.options import OptionError
from sslunet.ssl.api import PretrainOptions, finetune_command, pretrain
from sslunet.training.distributed import DistContext, shutdown_distributed


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
    add_objective_args(p, OBJECTIVES)
    add_training_args(p)
    return p


def objective_options(args) -> dict:
    """The objective options the user set (``{field: value}``), already validated by type.

    Options of other objectives are passed on too: the library refuses them, naming the
    options the chosen objective has.
    """
    return given_options(args, collect_flags(OBJECTIVES))


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
            raise InputError(e.describe(flag_name)) from None
        finally:
            shutdown_distributed()
        if dist_ctx.is_main:
            print(f"pretrained weights and logs: {run_dir}")
            print(f"fine-tune from them with:\n  {finetune_command(opts)}")

    run(go)


if __name__ == "__main__":
    main()
