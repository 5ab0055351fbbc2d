"""``sslunet_synth``: write the synthetic abdominal MR dataset (the demo and test data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslunet.cli._common import (
    int_range, nonnegative_int, paths_from_env, positive_int, run, seed_int,
)
from sslunet.dataset.synthetic import SynthConfig, generate_dataset
from sslunet.paths import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    d = SynthConfig()
    p = argparse.ArgumentParser(
        prog="sslunet_synth",
        description="Generate synthetic T2-weighted abdominal MR phantoms (liver, spleen, "
                    "kidneys) as an nnU-Net v2 raw dataset with imagesTr/labelsTr, "
                    "imagesUnlabeled and imagesTs/labelsTs.")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="raw data root to write DatasetXXX_Name/ into (default: the raw root "
                        "from SSLUNET_RAW / SSLUNET_HOME)")
    p.add_argument("--labeled", type=nonnegative_int, default=d.num_labeled, help="labelled training cases")
    p.add_argument("--unlabeled", type=nonnegative_int, default=d.num_unlabeled,
                   help="unlabelled cases (imagesUnlabeled/, for self-supervision)")
    p.add_argument("--test", type=nonnegative_int, default=d.num_test,
                   help="test cases with reference labels (imagesTs/, labelsTs/)")
    p.add_argument("--seed", type=seed_int, default=d.seed, help="random seed")
    p.add_argument("--id", type=int_range(1, 999), default=d.dataset_id, help="dataset id (folder DatasetXXX_)")
    p.add_argument("--name", default=d.dataset_name, help="dataset name (folder _Name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset folder of the same id and name")
    p.add_argument("-np", "--num-processes", type=positive_int, default=2,
                   help="worker processes")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        root = args.output if args.output is not None else paths_from_env().raw
        check_writable_folder(root, "raw data root")
        config = SynthConfig(num_labeled=args.labeled, num_unlabeled=args.unlabeled,
                             num_test=args.test, seed=args.seed, dataset_id=args.id,
                             dataset_name=args.name)
        folder = generate_dataset(root, config, overwrite=args.overwrite,
                                  num_processes=args.num_processes, progress=True)
        print(f"wrote {args.labeled} labelled, {args.unlabeled} unlabelled and {args.test} "
              f"test cases to {folder}")

    run(go)


if __name__ == "__main__":
    main()
