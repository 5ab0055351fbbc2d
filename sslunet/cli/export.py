"""``sslunet_export --pretrained CKPT --to-nnunet-weights OUT.pth``: sslunet weights for nnU-Net."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslunet.cli._common import run
from sslunet.paths import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_export",
        description="Write an sslunet checkpoint (a pretraining's checkpoint_final.pt, or a "
                    "fold's) as pretrained weights that nnUNetv2_train -pretrained_weights "
                    "accepts, for nnU-Net plans of the same architecture (plain or "
                    "residual-encoder U-Net, same configuration).")
    p.add_argument("--pretrained", required=True, type=Path, help="sslunet checkpoint (.pt)")
    p.add_argument("--to-nnunet-weights", required=True, type=Path, dest="out",
                   help="output file (.pth), written atomically")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go() -> None:
        # imported here: a bad argument is reported at once, without loading torch
        from sslunet.runs.nnunet import export_pretrained

        check_writable_folder(args.out.parent if str(args.out.parent) else Path("."),
                              "output folder")
        out = export_pretrained(args.pretrained, args.out)
        print(f"nnU-Net pretrained weights: {out}\nuse with: nnUNetv2_train DATASET "
              f"CONFIGURATION FOLD -pretrained_weights {out}")

    run(go)


if __name__ == "__main__":
    main()
