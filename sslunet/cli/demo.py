"""``sslunet_demo``: synthesise, plan, pretrain, fine-tune, evaluate and report, in one command."""

from __future__ import annotations

import argparse

from sslunet.cli._common import nonnegative_int, paths_from_env, run, seed_int
from sslunet.paths import check_writable_folder
from sslunet.study.demo import FULL, QUICK, run_demo


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="sslunet_demo",
        description="The whole sslunet workflow on the built-in synthetic abdominal MR dataset: "
                    "pretraining (regression, mae) against random init, at a small "
                    "label budget and with all labels. About 15 minutes on a 2-core CPU; "
                    "--full for a GPU. Re-running resumes and reuses finished work.")
    p.add_argument("--full", action="store_true",
                   help="long schedules and the full-width network (for a GPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--num-workers", type=nonnegative_int,
                   help="background augmentation processes (0: in the main process; default: "
                        "2 on a CPU, up to 12 per GPU)")
    p.add_argument("--seed", type=seed_int, default=0)
    args = p.parse_args(argv)
    settings, name = (FULL, "demo_full") if args.full else (QUICK, "demo")

    def go():
        paths = paths_from_env()
        for root in ("raw", "preprocessed", "results"):  # the demo writes into all three
            check_writable_folder(getattr(paths, root), f"{root} root")
        run_demo(paths, settings, args.device, args.num_workers, args.seed, name)

    run(go)


if __name__ == "__main__":
    main()
