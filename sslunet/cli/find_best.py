"""``sslunet_find_best -d DATASET``: rank the trained configurations and their ensembles."""

from __future__ import annotations

import argparse

from sslunet.cli._common import folder_name, paths_from_env, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_find_best",
        description="Compare the cross-validated Dice of every finished model folder of a "
                    "dataset (2d, 3d_fullres, ... ; each trained on the same folds) and of "
                    "every pair of them (averaged probabilities; needs sslunet_finetune --npz), "
                    "decide the winner's post-processing and print the predict command.")
    p.add_argument("-d", "--dataset", required=True, help="dataset ID, name or folder name")
    p.add_argument("--models", nargs="+", type=folder_name,
                   help="model folder names under results/<dataset>/finetune (default: every "
                        "finished one)")
    p.add_argument("--no-ensembles", action="store_true", help="rank single models only")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go() -> None:
        # imported here: a bad argument is reported at once, without loading torch
        from sslunet.dataset.resolve import resolve_dataset_name
        from sslunet.inference.find_best import FindBestOptions, find_best

        paths = paths_from_env()
        name = resolve_dataset_name(args.dataset, [paths.results])
        report = find_best(paths, FindBestOptions(
            dataset=name, models=tuple(args.models or ()), ensembles=not args.no_ensembles))
        print(f"cross-validation Dice ({report['num_cases']} validation cases, folds "
              f"{', '.join(report['folds'])}):")
        for row in report["ranking"]:
            print(f"  {row['dice']:.4f}  {row['name']}")
        print(f"best: {report['best']}; predict with:\n  {report['predict']}")

    run(go)


if __name__ == "__main__":
    main()
