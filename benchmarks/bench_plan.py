"""Benchmark ``sslunet_plan`` on the CMR dataset: wall time and peak memory of the process tree.

Runs ``sslunet_plan -d <CMR> -c 2d 3d_fullres -np 2`` as a subprocess, N times, each in a fresh
temporary ``SSLUNET_HOME`` (so every run fingerprints, plans and preprocesses all 35 cases).
While it runs, the whole process tree (the command and its worker processes, found through
``/proc/<pid>/task/*/children``) is sampled every ~20 ms; the peak of the summed ``VmRSS`` is
reported together with the largest single-process ``VmRSS``. Summed RSS counts pages that
forked workers share with their parent once per process, so it is an upper bound on the
memory actually in use.

Usage::

    python benchmarks/bench_plan.py [DATASET_DIR] [--repeats N] [--out FILE]

The reference figures are nnU-Net v2's ``nnUNetv2_plan_and_preprocess`` on the same data on a
2-core machine (27 s wall, 1.9 GB peak).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sslunet.utils.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset002_CMR"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "plan_cmr.json"
REFERENCE = {"tool": "nnU-Net v2 nnUNetv2_plan_and_preprocess", "cores": 2,
             "wall_s": 27.0, "peak_tree_rss_mb": 1900.0}
SAMPLE_EVERY_S = 0.02


def _rss_kb(pid: int) -> int:
    """``VmRSS`` of one process in kB (0 if it has exited or is a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """(sum of RSS over ``root`` and all its descendants, largest single RSS), in kB."""
    total, largest, todo, seen = 0, 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        rss = _rss_kb(pid)
        total += rss
        largest = max(largest, rss)
        todo += _children(pid)
    return total, largest


def _plan_args(dataset: Path, num_processes: int) -> list[str]:
    return ["-d", str(dataset), "-c", "2d", "3d_fullres", "-np", str(num_processes)]


def _command(dataset: Path, num_processes: int) -> list[str]:
    script = Path(sys.executable).with_name("sslunet_plan")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "sslunet.cli.plan"]
    return head + _plan_args(dataset, num_processes)


def run_once(dataset: Path, num_processes: int) -> dict:
    """One run in a fresh SSLUNET_HOME; returns wall time and memory peaks."""
    home = Path(tempfile.mkdtemp(prefix="sslunet_bench_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLUNET_")}
    env["SSLUNET_HOME"] = str(home)
    peak_tree = peak_single = samples = 0
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(_command(dataset, num_processes), env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            tree, single = _tree_rss_kb(proc.pid)
            peak_tree, peak_single = max(peak_tree, tree), max(peak_single, single)
            samples += 1
            time.sleep(SAMPLE_EVERY_S)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0 or "preprocessed" not in stderr:
        raise SystemExit(f"sslunet_plan failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    done = next((ln for ln in stderr.splitlines() if ln.startswith("preprocessed")), "")
    return {"wall_s": round(wall, 3), "peak_tree_rss_mb": round(peak_tree / 1024, 1),
            "peak_single_rss_mb": round(peak_single / 1024, 1), "samples": samples,
            "result_line": done.split(" into ")[0]}


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                  .splitlines() if ln.startswith("model name")), platform.processor())
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal:"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "ram_gb": round(mem_kb / 1024 ** 2, 1),
            "python": platform.python_version(), "load_avg_1min": os.getloadavg()[0]}


def report(runs: list[dict], info: dict) -> dict:
    walls = [r["wall_s"] for r in runs]
    summary = {
        "wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
        "peak_tree_rss_mb_max": max(r["peak_tree_rss_mb"] for r in runs),
        "peak_tree_rss_mb_median": statistics.median(r["peak_tree_rss_mb"] for r in runs),
        "peak_single_rss_mb_max": max(r["peak_single_rss_mb"] for r in runs),
    }
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM "
          f"(1-min load average at the end: {info['load_avg_1min']:.2f})")
    print(f"{'run':>4} {'wall s':>8} {'tree RSS MB':>12} {'max proc MB':>12}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>4} {r['wall_s']:>8.2f} {r['peak_tree_rss_mb']:>12.0f} "
              f"{r['peak_single_rss_mb']:>12.0f}")
    print(f"sslunet_plan: wall median {summary['wall_s_median']:.2f} s, min "
          f"{summary['wall_s_min']:.2f} s; peak tree RSS {summary['peak_tree_rss_mb_max']:.0f} MB"
          f", largest process {summary['peak_single_rss_mb_max']:.0f} MB")
    print(f"reference ({REFERENCE['tool']}, {REFERENCE['cores']} cores): "
          f"{REFERENCE['wall_s']:.0f} s wall, {REFERENCE['peak_tree_rss_mb'] / 1000:.1f} GB peak")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DEFAULT_DATASET,
                   help=f"raw CMR dataset folder (default {DEFAULT_DATASET})")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("-np", "--num-processes", type=int, default=2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if not (args.dataset / "dataset.json").is_file():
        raise SystemExit(f"{args.dataset}: not a raw dataset folder (no dataset.json)")
    runs = []
    for i in range(args.repeats):
        runs.append(run_once(args.dataset.resolve(), args.num_processes))
        print(f"run {i + 1}/{args.repeats}: {runs[-1]['wall_s']:.2f} s, "
              f"{runs[-1]['peak_tree_rss_mb']:.0f} MB", file=sys.stderr)
    info = machine()
    summary = report(runs, info)
    result = {"benchmark": "sslunet_plan -c 2d 3d_fullres", "dataset": str(args.dataset),
              "command": " ".join(["sslunet_plan", *_plan_args(args.dataset,
                                                               args.num_processes)]),
              "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": info, "runs": runs, "summary": summary, "reference": REFERENCE}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
