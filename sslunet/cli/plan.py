"""``sslunet_plan -d DATASET``: verify, fingerprint, plan and preprocess a raw dataset."""

from __future__ import annotations

import argparse

from sslunet.cli._common import paths_from_env, positive_float, positive_int, run
from sslunet.dataset.resolve import resolve_raw_dataset
from sslunet.planning.api import PlanOptions, plan_and_preprocess
from sslunet.planning.planner import PRESETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_plan",
        description="Fingerprint a raw dataset, derive the 2d/3d_fullres(/3d_lowres) plans and "
                    "preprocess labelled and unlabeled images.")
    p.add_argument("-d", "--dataset", required=True,
                   help="dataset ID (2, 002), name (CMR, Dataset002_CMR) or path to a raw "
                        "dataset folder")
    p.add_argument("-c", "--configurations", nargs="+",
                   default=["2d", "3d_fullres", "3d_lowres"],
                   choices=["2d", "3d_fullres", "3d_lowres"],
                   help="configurations to plan and preprocess (3d_lowres only appears where "
                        "the full-resolution patch covers < 25%% of the median image)")
    p.add_argument("--preset", choices=list(PRESETS), default="plain",
                   help="network and memory calibration: plain = nnU-Net's plain U-Net for "
                        "8 GB (default); resenc_m / resenc_l = nnU-Net's residual-encoder U-Net "
                        "presets, planned for 8 GB (M: GPUs with about 9-11 GB) or 24 GB (L)")
    p.add_argument("--gpu-memory-gb", type=positive_float,
                   help="GPU memory budget the patch and batch sizes are planned for (default: "
                        "the preset's, 8 GB; 24 GB for resenc_l)")
    p.add_argument("--base-features", type=positive_int, default=32,
                   help="feature maps of the first stage (doubling per stage; nnU-Net: 32). "
                        "Smaller values give much faster networks for CPU work")
    p.add_argument("--max-features", type=positive_int,
                   help="cap on feature maps per stage (default 320 in 3D, 512 in 2D)")
    p.add_argument("--target-spacing", type=float, nargs=3, metavar=("S0", "S1", "S2"),
                   help="full-resolution spacing in mm, slice axis first as the plan prints it "
                        "(default: derived as nnU-Net does); coarser spacing = faster training")
    p.add_argument("-np", "--num-processes", type=positive_int, default=2,
                   help="worker processes")
    p.add_argument("--overwrite", action="store_true",
                   help="re-plan (replacing plans.json and splits.json) and redo every case")
    p.add_argument("--verify-only", action="store_true",
                   help="only run the dataset checks; write nothing")
    p.add_argument("--no-preprocess", action="store_true", help="plan only")
    p.add_argument("--include-test", action="store_true", help="also preprocess imagesTs")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.target_spacing and not all(0.01 <= v <= 100 for v in args.target_spacing):
        parser.error("--target-spacing values must be between 0.01 and 100 mm")  # exit 2

    def go():
        paths = paths_from_env()
        raw = resolve_raw_dataset(args.dataset, paths.raw)
        opts = PlanOptions(
            configurations=tuple(args.configurations), gpu_memory_gb=args.gpu_memory_gb,
            num_processes=args.num_processes, overwrite=args.overwrite,
            verify_only=args.verify_only, preprocess=not args.no_preprocess,
            include_test=args.include_test, base_features=args.base_features,
            max_features=args.max_features,
            target_spacing=args.target_spacing and tuple(args.target_spacing),
            preset=args.preset)
        plan_and_preprocess(raw, paths.preprocessed, opts)

    run(go)


if __name__ == "__main__":
    main()
