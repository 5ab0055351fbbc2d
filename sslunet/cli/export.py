"""``sslunet_export``: sslunet models and weights for nnU-Net v2.

``-m MODEL_DIR --to-nnunet OUT`` writes a whole model folder as an nnU-Net v2 results folder
(for ``nnUNetv2_predict``); ``--pretrained CKPT --to-nnunet-weights OUT.pth`` writes one
checkpoint's weights for ``nnUNetv2_train -pretrained_weights``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sslunet.cli._common import run
from sslunet.paths import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_export",
        description="Move sslunet models to nnU-Net v2: a finished model folder as an nnU-Net "
                    "results folder that nnUNetv2_predict runs (-m MODEL_DIR --to-nnunet OUT), "
                    "or a checkpoint (a pretraining's checkpoint_final.pt, or a fold's) as "
                    "pretrained weights that nnUNetv2_train -pretrained_weights accepts "
                    "(--pretrained CKPT --to-nnunet-weights OUT.pth), for the plain or "
                    "residual-encoder U-Net.")
    model = p.add_argument_group("a model folder, for nnUNetv2_predict")
    model.add_argument("-m", "--model", type=Path,
                       help="sslunet model folder (results/<dataset>/finetune/<name>/, holding "
                            "fold_K/checkpoint_final.pt)")
    model.add_argument("--to-nnunet", type=Path, dest="results",
                       help="nnU-Net results root (what nnUNet_results points to); the model "
                            "goes to <root>/<dataset>/nnUNetTrainer__nnUNetPlans__<config>/")
    weights = p.add_argument_group("pretrained weights, for nnUNetv2_train -pretrained_weights")
    weights.add_argument("--pretrained", type=Path, help="sslunet checkpoint (.pt)")
    weights.add_argument("--to-nnunet-weights", type=Path, dest="out",
                         help="output file (.pth), written atomically")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    as_model = args.model is not None or args.results is not None
    as_weights = args.pretrained is not None or args.out is not None
    if as_model == as_weights or (as_model and None in (args.model, args.results)) or \
            (as_weights and None in (args.pretrained, args.out)):
        p.error("give either -m MODEL_DIR --to-nnunet OUT or --pretrained CKPT "
                "--to-nnunet-weights OUT.pth")

    def go() -> None:
        # imported here: a bad argument is reported at once, without loading torch
        from sslunet.runs.nnunet import export_pretrained
        from sslunet.runs.nnunet_folder import export_model_folder

        if as_model:
            check_writable_folder(args.results, "nnU-Net results folder")
            target = export_model_folder(args.model, args.results)
            dataset, config = target.parent.name, target.name.rsplit("__", 1)[-1]
            print(f"nnU-Net model folder: {target}\nuse with: nnUNet_results={args.results} "
                  f"nnUNetv2_predict -d {dataset} -c {config} -i INPUT -o OUTPUT")
            return
        check_writable_folder(args.out.parent if str(args.out.parent) else Path("."),
                              "output folder")
        out = export_pretrained(args.pretrained, args.out)
        print(f"nnU-Net pretrained weights: {out}\nuse with: nnUNetv2_train DATASET "
              f"CONFIGURATION FOLD -pretrained_weights {out}")

    run(go)


if __name__ == "__main__":
    main()
