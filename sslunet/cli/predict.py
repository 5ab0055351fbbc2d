"""``sslunet_predict -i IMAGES -o MASKS``: segment raw images with a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslunet.cli._common import float_range, fold, nonnegative_int, paths_from_env, run
from sslunet.paths import check_writable_folder
from sslunet.utils.engine import COMPILE_MODES

EPILOG = """\
Input: one file per channel, CASE_0000<ending>, CASE_0001<ending>, ... (the ending of the
model's dataset, else any of .nii.gz .nii .mha .nrrd); single-channel models also accept
plain CASE<ending>. Output: OUTPUT_DIR/CASE<ending>, a label map with exactly the input's
size, spacing, origin and direction; with --save-probabilities also CASE.npz holding
'probabilities', float16 (K, z, y, x) in the input's numpy axis order.

Model: -m MODEL_DIR (a folder with fold_*/ or one fold folder). Without -m, the only
finished model of -d DATASET under SSLUNET_RESULTS/<dataset>/finetune/ is used (and
without -d, the only dataset that has one). Folds (-f) default to every fold with the
chosen checkpoint; their softmax probabilities are averaged.

Cases whose outputs exist are skipped (--overwrite redoes them); outputs are written
atomically, so an interrupted run never leaves half-written files. Bad input (missing or
unfinished model or fold, no images, wrong channel count, unreadable image, output folder
inside the input folder) is reported on one line with exit status 2, before anything is
written; nothing existing is ever deleted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sslunet_predict",
        description="Predict segmentation masks for a folder of raw images with a trained "
                    "sslunet model (sliding window, mirroring TTA, fold ensemble).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", required=True, type=Path, help="folder of raw images")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="folder for the masks (created; must not be inside the input folder)")
    p.add_argument("-d", "--dataset", help="dataset ID, name or folder name (to find its model)")
    p.add_argument("-m", "--model", type=Path, nargs="+",
                   help="model folder (with fold_*) or fold folder; several model folders, or "
                        "an ensemble folder from sslunet_find_best: their probabilities are "
                        "averaged (an ensemble of configurations)")
    p.add_argument("-f", "--folds", nargs="+", type=fold,
                   help="folds to ensemble, e.g. 0 1 2 or all (default: every finished fold)")
    p.add_argument("--checkpoint", choices=["final", "best"], default="final",
                   help="which checkpoint of each fold (default: final)")
    p.add_argument("--step-size", type=float_range(0.0, 1.0, low_open=True),
                   default=0.5,
                   help="sliding-window step as a fraction of the patch (default: 0.5)")
    p.add_argument("--disable-tta", action="store_true",
                   help="no mirroring test-time augmentation (2^D times faster)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write CASE.npz with the class probabilities")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    p.add_argument("--no-postprocessing", action="store_true",
                   help="do not apply the model's post-processing (largest connected component "
                        "where cross-validation showed it helps; postprocessing.json)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--compile", choices=list(COMPILE_MODES), default="off",
                   help="torch.compile the networks (auto: on CUDA only); pays off for many "
                        "cases, costs start-up time; a failed compilation falls back to eager")
    p.add_argument("--no-amp", action="store_true",
                   help="compute in fp32 (default: mixed precision where the device does it "
                        "natively: fp16 on CUDA, bf16 on CPUs with AMX)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format for weights and inputs (GPU)")
    p.add_argument("-np", "--num-processes", type=nonnegative_int, default=2,
                   help="export worker processes (resampling back, writing); 0: one "
                        "background thread (default: 2)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go() -> None:
        from sslunet.inference.api import PredictOptions, predict_folder

        paths = paths_from_env(verbose=args.model is None, check=args.model is None)
        check_writable_folder(args.output, "output folder (-o)")
        folds = tuple(str(f) for f in args.folds) if args.folds else None
        opts = PredictOptions(
            input_dir=args.input, output_dir=args.output, dataset=args.dataset,
            model=args.model[0] if args.model else None,
            ensemble=tuple(args.model[1:]) if args.model else (), folds=folds, checkpoint=args.checkpoint,
            step_size=args.step_size, tta=not args.disable_tta,
            save_probabilities=args.save_probabilities, overwrite=args.overwrite,
            device=args.device, num_processes=args.num_processes,
            postprocessing=not args.no_postprocessing, compile=args.compile,
            channels_last=args.channels_last, amp=not args.no_amp)
        summary = predict_folder(paths, opts)
        print(f"{len(summary.predicted)} case(s) predicted, {len(summary.skipped)} skipped "
              f"(outputs already present); masks in {summary.output_dir}")

    run(go)


if __name__ == "__main__":
    main()
