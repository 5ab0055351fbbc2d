"""Benchmark pretraining: images per second of every registered objective (and each stage).

For each objective and each of its stages, batches come from the objective's own stream
(patch sampling, corruptions or two-view augmentation, run in this process so that its cost
is visible) and go through the real ``Trainer.train_step`` (autocast forward of network,
heads and loss, backward, clipping, optimiser step; double backprop for ``refs``). Data and
compute are timed separately; medians over ``--iterations`` after ``--warmup`` iterations.
Throughput is reported in images per second (for two-view objectives an image is one
sampled patch, counted once, although the network sees it twice).

On CUDA every timed region ends with ``torch.cuda.synchronize`` and ``cudnn.benchmark`` is on.

Usage::

    python benchmarks/bench_pretrain.py                          # synthetic data, 2d, all
    python benchmarks/bench_pretrain.py --dataset 2 -c 3d_fullres --device cuda
    python benchmarks/bench_pretrain.py --small --objectives mae regression

Results go to ``benchmarks/results/pretrain_<device>_<configuration>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import (  # noqa: E402
    generate_and_plan,
    load_planned,
    machine_info,
    run_and_report,
    scaled,
    time_train_steps,
)

from sslunet.errors import InputError  # noqa: E402
from sslunet.paths import Paths  # noqa: E402
from sslunet.preprocessing.storage import list_cases  # noqa: E402
from sslunet.ssl.objectives import PretrainSetup, get_objective, list_objectives  # noqa: E402
from sslunet.ssl.api import SOURCES, PretrainOptions, training_config  # noqa: E402
from sslunet.training.trainer import Trainer  # noqa: E402
from sslunet.utils.device import resolve_device  # noqa: E402


def bench_stage(objective, stage: str, setup: PretrainSetup, ids: list[str], batch_size: int,
                device: torch.device, args) -> dict:
    """Median data and compute time of one pretraining iteration of ``stage``."""
    objective.set_stage(stage)
    total = args.warmup + args.iterations
    opts = PretrainOptions(setup.dataset, objective.name, setup.config.name)
    cfg = training_config(type(objective), opts).replace(
        num_workers=0, epochs=1, iters_per_epoch=total, batch_size=batch_size,
        amp=not args.no_amp)
    stream = objective.make_stream(ids, batch_size, 0, True, 0, device.type == "cuda")
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as run_dir:
        trainer = Trainer(cfg, objective, None, Path(run_dir), device, progress=False)
        try:
            timed = time_train_steps(trainer, stream, args.warmup, args.iterations, device)
        finally:
            stream.close()
    step_s = (timed["data_ms_median"] + timed["compute_ms_median"]) / 1e3
    return {"batch_size": batch_size, **timed, "images_per_s": batch_size / step_s,
            "amp": trainer.amp_dtype is not None}


def bench_objective(name: str, setup: PretrainSetup, ids: list[str], device: torch.device,
                    args) -> dict:
    """Every stage of one objective; ``{stage: figures}``."""
    cls = get_objective(name)
    objective = cls.create(setup, {})
    batch_size = args.batch_size or training_config(
        cls, PretrainOptions(setup.dataset, name, setup.config.name)).batch_size \
        or setup.config.batch_size
    batch_size = max(batch_size, cls.min_batch_size)
    return {stage.name: bench_stage(objective, stage.name, setup, ids, batch_size, device, args)
            for stage in objective.stages()}


def print_table(result: dict) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['cpu']} ({m['cpu_cores_usable']} usable cores, torch "
          f"{m['torch']}, {m['torch_threads']} threads); GPU: {m['gpu'] or 'none'}; "
          f"device {m['device']}")
    print(f"dataset: {result['dataset']}, configuration {result['configuration']}, features "
          f"{result['features_per_stage']}, patch {result['patch_size']}\n")
    print(f"{'objective/stage':<26}{'batch':>6}{'data ms':>10}{'compute ms':>12}{'images/s':>10}")
    for name, stages in result["objectives"].items():
        for stage, r in stages.items():
            label = name if stage == "main" else f"{name}/{stage}"
            if "error" in r:
                print(f"{label:<26}  failed: {r['error']}")
                continue
            print(f"{label:<26}{r['batch_size']:>6}{r['data_ms_median']:>10.1f}"
                  f"{r['compute_ms_median']:>12.1f}{r['images_per_s']:>10.2f}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="planned dataset under SSLUNET_PREPROCESSED (ID or name); "
                                     "default: generate a synthetic one in a temporary folder")
    p.add_argument("-c", "--configuration", default="2d")
    p.add_argument("--objectives", nargs="+", default=None,
                   help=f"default: all registered ({', '.join(list_objectives())})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--iterations", type=int, default=10, help="timed iterations per stage")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--batch-size", type=int, help="default: the objective's or the plan's")
    p.add_argument("--features-scale", type=float, default=1.0,
                   help="scale the plan's feature maps (e.g. 0.25 for quick CPU runs)")
    p.add_argument("--num-cases", type=int, default=6, help="synthetic cases to generate")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--small", action="store_true",
                   help="quick CPU preset: small synthetic images, features x0.25, 3 iterations "
                        "after 1 warm-up")
    p.add_argument("--out", type=Path,
                   help="default: benchmarks/results/pretrain_<device>_<configuration>.json")
    args = p.parse_args(argv)
    if args.small:
        args.features_scale = min(args.features_scale, 0.25)
        args.iterations, args.warmup = 3, 1
    return args


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    names = args.objectives or list_objectives()
    for n in names:
        get_objective(n)  # unknown names fail before any work
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-home-") as home:
        if args.dataset:
            plans, pre = load_planned(args.dataset)
            paths = None
        else:
            plans, pre = generate_and_plan(Path(home), (args.configuration,), args.num_cases,
                                           args.small)
            paths = Paths.under(Path(home))
        if args.configuration not in plans.configurations:
            raise InputError(f"configuration {args.configuration} is not planned", pre)
        config = scaled(plans.configuration(args.configuration), args.features_scale)
        folder = pre / config.data_identifier
        ids = list_cases(folder, SOURCES)
        if not ids:
            raise InputError("no preprocessed image", folder)
        setup = PretrainSetup(plans.dataset_name, plans, config, folder,
                              paths or Paths.from_environ(os.environ), seed=0)
        result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine_info(device), "dataset": plans.dataset_name,
                  "configuration": args.configuration, "patch_size": list(config.patch_size),
                  "features_per_stage": list(config.features_per_stage),
                  "settings": {k: (str(v) if isinstance(v, Path) else v)
                               for k, v in vars(args).items()},
                  "objectives": {}}
        for name in names:
            print(f"pretraining iterations: {name} ...", file=sys.stderr)
            try:
                result["objectives"][name] = bench_objective(name, setup, ids, device, args)
            except (RuntimeError, InputError) as e:  # e.g. out of memory: report, go on
                result["objectives"][name] = {"main": {"error": str(e).splitlines()[0][:200]}}
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return result


def main(argv=None) -> None:
    run_and_report(run, print_table, parse_args(argv),
                   lambda dev, result: f"pretrain_{dev}_{result['configuration']}.json")


if __name__ == "__main__":
    main()
