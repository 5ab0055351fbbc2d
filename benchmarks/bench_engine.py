"""Benchmark the training and inference engine: one training iteration, one 3D prediction.

(a) Training: for each configuration, batches come from the real training loader (patch
sampling + batchgenerators augmentation, run in this process so that its cost is visible) and
go through the real ``Trainer.train_step`` (host-to-device copy, autocast forward, Dice+CE with
deep supervision, backward, gradient clipping, SGD step). Data loading and compute are timed
separately; medians over ``--iterations`` after ``--warmup`` iterations (which also absorb
cuDNN autotuning).

(b) Prediction: one preprocessed 3D case through the sliding window (Gaussian weighting, step
0.5, tiles batched by the plan's batch size), with and without mirroring TTA; median over
``--predict-repeats`` after one warm-up. Networks have seeded random weights: speed does not
depend on what they learned.

On CUDA every timed region ends with ``torch.cuda.synchronize`` and ``cudnn.benchmark`` is on.

Usage::

    python benchmarks/bench_engine.py                      # synthetic dataset, full plans
    python benchmarks/bench_engine.py --dataset 1 --device cuda
    python benchmarks/bench_engine.py --small --device cpu # a few minutes on 2 CPU cores

Without ``--dataset`` a small synthetic dataset (``sslunet.dataset.synthetic``) is generated and planned in a temporary folder. Results go
to ``benchmarks/results/engine_<device>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.dataset.synthetic import SynthConfig, generate_dataset
from sslunet.errors import InputError
from sslunet.inference.predictor import inference_config, network_predictor, predict_logits
from sslunet.inference.sliding_window import compute_tile_starts
from sslunet.networks import build_network
from sslunet.paths import Paths
from sslunet.planning.api import PlanOptions, plan_and_preprocess
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.storage import list_cases, load_case, load_plans, preprocessed_dir
from sslunet.training.config import finetune_defaults
from sslunet.training.api import make_loader_factory
from sslunet.training.segmentation import SegmentationModel
from sslunet.training.trainer import Trainer
from sslunet.utils.acceleration import accelerate
from sslunet.utils.atomic import write_json
from sslunet.utils.device import resolve_device

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(),
            "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device), "gpu": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    gpu_memory_gb=round(props.total_memory / 2 ** 30, 1))
    return info


# ----------------------------------------------------------------------------- dataset
def generate_and_plan(home: Path, configurations: tuple[str, ...], num_cases: int,
                      small: bool) -> tuple[Plans, Path]:
    """Write a synthetic raw dataset under ``home`` and plan/preprocess it."""
    paths = Paths.under(home)
    cfg = SynthConfig(num_labeled=num_cases, num_unlabeled=0, num_test=0, seed=0,
                      dataset_id=990, dataset_name="BenchSynth")
    if small:
        cfg = dataclasses.replace(cfg, inplane_size=(64, 80), num_slices=(16, 20))
    raw = generate_dataset(paths.raw, cfg, num_processes=2)
    plans = plan_and_preprocess(raw, paths.preprocessed, PlanOptions(
        configurations=configurations, num_processes=2, progress=False))
    return plans, paths.preprocessed / raw.name


def load_planned(spec: str) -> tuple[Plans, Path]:
    paths = Paths.from_environ(os.environ)
    name = resolve_dataset_name(spec, [paths.preprocessed])
    return load_plans(paths, name), preprocessed_dir(paths, name)


def scaled(config: ConfigurationPlan, scale: float) -> ConfigurationPlan:
    """The configuration with ``scale`` times the feature maps per stage (at least 4)."""
    if scale == 1.0:
        return config
    features = tuple(max(4, int(round(f * scale))) for f in config.features_per_stage)
    return dataclasses.replace(config, features_per_stage=features)


# ----------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_steps(trainer: Trainer, batches, warmup: int, iterations: int,
                     device: torch.device) -> dict:
    """Run ``warmup + iterations`` real ``train_step`` calls on batches drawn from ``batches``;
    medians of the data and compute time of the timed ones (and the peak GPU memory)."""
    total = warmup + iterations
    data_s, compute_s = [], []
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for it in range(total):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        trainer.train_step(batch, it, total)
        _sync(device)
        t2 = time.perf_counter()
        if it >= warmup:
            data_s.append(t1 - t0)
            compute_s.append(t2 - t1)
    out = {"data_ms_median": 1e3 * statistics.median(data_s),
           "compute_ms_median": 1e3 * statistics.median(compute_s),
           "compute_ms_min": 1e3 * min(compute_s)}
    if device.type == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return out


def time_validation(trainer: Trainer, batches, args, device: torch.device) -> float:
    """Mean time of one iteration of the per-epoch validation pass (``Trainer.validate``: data
    and forward pass, loss, pseudo-Dice counts) after ``args.warmup`` untimed iterations."""
    cfg = trainer.cfg
    trainer.cfg = cfg.replace(val_iters=max(1, args.warmup))
    trainer.validate(batches)
    trainer.cfg = cfg.replace(val_iters=args.iterations)
    _sync(device)
    t0 = time.perf_counter()
    trainer.validate(batches)
    _sync(device)
    trainer.cfg = cfg
    return 1e3 * (time.perf_counter() - t0) / args.iterations


def bench_training(plans: Plans, config: ConfigurationPlan, folder: Path, device: torch.device,
                   args) -> dict:
    """Median data-loading and compute time of one training iteration."""
    ids = list_cases(folder, sources=("imagesTr",))
    if not ids:
        raise InputError("no preprocessed labelled cases", folder)
    total = args.warmup + args.iterations
    cfg = finetune_defaults(False).replace(num_workers=0, epochs=1, iters_per_epoch=total,
                                           batch_size=args.batch_size, amp=not args.no_amp,
                                           compile=args.compile,
                                           channels_last=args.channels_last)
    network = build_network(config, plans.num_input_channels, plans.num_classes,
                            cfg.deep_supervision, seed=0)
    model = SegmentationModel(network, config.batch_dice)
    factory = make_loader_factory(folder, ids, ids, config, cfg, device.type == "cuda")
    with tempfile.TemporaryDirectory(prefix="bench-run-") as run_dir:
        trainer = Trainer(cfg, model, factory, Path(run_dir), device, progress=False)
        train, val, close = factory(0)
        try:
            timed = time_train_steps(trainer, train, args.warmup, args.iterations, device)
            timed["validation_ms_per_iteration"] = time_validation(trainer, val, args, device)
        finally:
            close()
    out = {"patch_size": list(config.patch_size), "batch_size": cfg.batch_size or
           config.batch_size, "features_per_stage": list(config.features_per_stage),
           "iterations": args.iterations, "warmup": args.warmup,
           **timed, "amp": trainer.amp_dtype is not None, "compile": args.compile,
           "channels_last": args.channels_last}
    return out


def bench_prediction(plans: Plans, config: ConfigurationPlan, folder: Path,
                     device: torch.device, args) -> dict:
    """Sliding-window prediction time of the first preprocessed case, with and without TTA."""
    case = list_cases(folder)[0]
    data, _, _ = load_case(folder, case, mmap=False)
    network = build_network(config, plans.num_input_channels, plans.num_classes,
                            deep_supervision=False, seed=0).to(device).eval()
    accelerate(network, device, args.compile, args.channels_last)
    predictor = network_predictor(network, device)
    starts = compute_tile_starts(data.shape[1:], config.patch_size, 0.5)
    out = {"case": case, "shape": list(data.shape[1:]), "patch_size": list(config.patch_size),
           "tiles": int(np.prod([len(s) for s in starts])), "repeats": args.predict_repeats}
    for tta in (False, True):
        inference = inference_config(config, 0.5, tta, device)
        times = []
        for r in range(args.predict_repeats + 1):  # the first run warms up
            _sync(device)
            t0 = time.perf_counter()
            predict_logits([predictor], data, config, plans.num_classes, inference, device)
            _sync(device)
            if r > 0 or args.predict_repeats == 0:
                times.append(time.perf_counter() - t0)
        out["tta_s" if tta else "no_tta_s"] = statistics.median(times)
    return out


# ----------------------------------------------------------------------------- report
def print_table(result: dict) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['cpu']} ({m['cpu_cores_usable']} usable cores, torch "
          f"{m['torch']}, {m['torch_threads']} threads); GPU: {m['gpu'] or 'none'}; "
          f"device {m['device']}")
    print(f"dataset: {result['dataset']}\n")
    print(f"{'configuration':<14}{'patch':<16}{'batch':>6}{'data ms':>10}{'compute ms':>12}")
    for name, r in result["training"].items():
        patch = "x".join(map(str, r["patch_size"]))
        print(f"{name:<14}{patch:<16}{r['batch_size']:>6}{r['data_ms_median']:>10.1f}"
              f"{r['compute_ms_median']:>12.1f}")
    p = result.get("prediction")
    if p:
        shape = "x".join(map(str, p["shape"]))
        print(f"\nprediction {p['configuration']} of {p['case']} ({shape}, {p['tiles']} tiles): "
              f"{p['no_tta_s']:.2f} s without TTA, {p['tta_s']:.2f} s with TTA")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="planned dataset under SSLUNET_PREPROCESSED (ID or name); "
                                     "default: generate a synthetic one in a temporary folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    p.add_argument("--iterations", type=int, default=10, help="timed training iterations")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--predict-repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, help="default: the plan's")
    p.add_argument("--features-scale", type=float, default=1.0,
                   help="scale the plan's feature maps (e.g. 0.25 for quick CPU runs)")
    p.add_argument("--num-cases", type=int, default=4, help="synthetic cases to generate")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="off",
                   help="torch.compile the network (timings include no compilation: the "
                        "warm-up iterations absorb it)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--small", action="store_true",
                   help="quick CPU preset: small synthetic images, features x0.25, 3 iterations "
                        "after 1 warm-up, 1 prediction repeat")
    p.add_argument("--out", type=Path, help="default: benchmarks/results/engine_<device>.json")
    args = p.parse_args(argv)
    if args.small:
        args.features_scale = min(args.features_scale, 0.25)
        args.iterations, args.warmup, args.predict_repeats = 3, 1, 1
    return args


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as home:
        if args.dataset:
            plans, pre = load_planned(args.dataset)
        else:
            plans, pre = generate_and_plan(Path(home), tuple(args.configurations),
                                           args.num_cases, args.small)
        result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine_info(device), "dataset": plans.dataset_name,
                  "settings": {k: (str(v) if isinstance(v, Path) else v)
                               for k, v in vars(args).items()},
                  "training": {}}
        for name in args.configurations:
            if name not in plans.configurations:
                print(f"skipping {name}: not planned for {plans.dataset_name}", file=sys.stderr)
                continue
            config = scaled(plans.configuration(name), args.features_scale)
            folder = pre / config.data_identifier
            print(f"training iteration: {name} ...", file=sys.stderr)
            result["training"][name] = bench_training(plans, config, folder, device, args)
        three_d = [n for n in args.configurations
                   if n in plans.configurations and plans.configurations[n].ndim == 3]
        if three_d:
            config = scaled(plans.configuration(three_d[0]), args.features_scale)
            print(f"prediction: {three_d[0]} ...", file=sys.stderr)
            result["prediction"] = {"configuration": three_d[0], **bench_prediction(
                plans, config, pre / config.data_identifier, device, args)}
    return result


def run_and_report(run_fn, print_fn, args, default_name) -> None:
    """Run a benchmark (``InputError`` -> one line, exit 2), print its table, write its JSON
    to ``args.out`` or ``benchmarks/results/<default_name(device, result)>``."""
    try:
        result = run_fn(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_fn(result)
    device = result["machine"]["device"].split(":")[0]  # "cuda:0" -> "cuda"
    out = args.out or REPO / "benchmarks" / "results" / default_name(device, result)
    write_json(out, result)
    print(f"\nresults: {out}")


def main(argv=None) -> None:
    run_and_report(run, print_table, parse_args(argv), lambda dev, _: f"engine_{dev}.json")


if __name__ == "__main__":
    main()
