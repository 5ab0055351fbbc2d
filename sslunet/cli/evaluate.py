"""``sslunet_evaluate -r REF_DIR -p PRED_DIR``: score predicted label maps against references."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslunet.cli._common import positive_int, run
from sslunet.paths import check_writable_folder

EPILOG = """\
Files are matched by name; every prediction needs a reference. Classes come from
--dataset-json, else REF_DIR/../dataset.json, else the nonzero values present.

Metrics per case and foreground class: Dice, HD95 (mm; 95th percentile of the pooled
surface distances in both directions, using the images' voxel spacing), volume
difference (prediction - reference, ml and relative).

Empty masks: reference and prediction both empty -> Dice 1, HD95 0. Exactly one empty
-> Dice 0, HD95 undefined (null in summary.json, nan in summary.csv); such cases are
left out of the HD95 mean and std and counted in the 'HD95 undefined' column.

Writes summary.json and summary.csv into --output (default: PRED_DIR). Bad input
(missing folder, no predictions, unreadable file, reference/prediction geometry
mismatch) is reported on one line with exit status 2, and nothing is written.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslunet_evaluate",
        description="Score predicted label maps against reference label maps.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--ref", required=True, type=Path,
                        help="folder of reference label maps")
    parser.add_argument("-p", "--pred", required=True, type=Path,
                        help="folder of predicted label maps (same file names)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for summary.json and summary.csv (default: PRED)")
    parser.add_argument("--dataset-json", type=Path, default=None,
                        help="dataset.json whose 'labels' name the classes to score")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=1,
                        help="worker processes (default: 1)")
    parser.add_argument("--file-ending", default=".nii.gz",
                        help="only files ending in this are cases (default: .nii.gz)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score only the predicted cases when some references have no "
                             "prediction (default: that is an error)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go() -> None:
        from sslunet.evaluation.api import evaluate_folders

        check_writable_folder(args.output if args.output is not None else args.pred,
                              "output folder (-o, default: the prediction folder)")
        evaluate_folders(args.ref, args.pred, file_ending=args.file_ending,
                         num_processes=args.num_processes, output=args.output,
                         dataset_json=args.dataset_json, allow_missing=args.allow_missing)

    run(go)


if __name__ == "__main__":
    main()
