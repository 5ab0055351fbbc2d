"""sslunet beside nnU-Net v2 on the same data, machine and settings, in one run (issue 12).

Installs nothing: give it a Python that has nnunetv2 (``--nnunet-python``, or the environment
variable ``NNUNET_PYTHON``; a separate venv made with ``pip install nnunetv2`` beside the same
torch). Without one it says so and exits 0. Steps (``--steps``):

- ``plan``: ``sslunet_plan`` and ``nnUNetv2_plan_and_preprocess`` of the whole dataset, 2d and
  3d_fullres, 2 processes each: wall time and peak memory of the process tree;
- ``train``: one training iteration of the 2d configuration at nnU-Net's patch and batch size
  (our plans give the same network for this data), data loading and compute timed apart in the
  calling process (nnU-Net with ``nnUNet_n_proc_DA=0``), medians after warm-up iterations;
- ``predict``: the command-line prediction of ``--cases`` images with the same untrained 2d
  network in both tools (an sslunet model folder, exported with ``sslunet_export --to-nnunet``
  for nnU-Net), with and without TTA, one process each; start-up and per-case time from runs
  with one case and with all of them.

Usage::

    NNUNET_PYTHON=/path/to/nnunet_venv/bin/python python benchmarks/bench_vs_nnunet.py
    python benchmarks/bench_vs_nnunet.py --dataset ../shared/data/Dataset003_ACDC --steps predict

Results: ``benchmarks/results/vs_nnunet_<dataset>.json`` (every repetition) and a table with
the ratios (sslunet / nnU-Net, taken within each repetition: below 1 is faster or smaller).
Where the CPU has AMX, sslunet runs twice, as installed (bf16) and with ``--no-amp`` (fp32, the
precision nnU-Net uses on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import _tree_rss_kb, machine  # noqa: E402

from sslunet.runs.layout import fold_dir, is_finished  # noqa: E402
from sslunet.utils.acceleration import cpu_has_native_bf16  # noqa: E402
from sslunet.utils.atomic import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "Dataset002_CMR"
NNUNET_TRAIN_STEP = r"""
import json, os, statistics, sys, time, torch
from nnunetv2.run.run_training import get_trainer_from_args
name, iterations, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = get_trainer_from_args(name, "2d", 0, device=torch.device("cpu"))
t.on_train_start()
data, compute = [], []
for i in range(warmup + iterations):
    t0 = time.perf_counter(); batch = next(t.dataloader_train); t1 = time.perf_counter()
    t.train_step(batch); t2 = time.perf_counter()
    if i >= warmup:
        data.append(t1 - t0); compute.append(t2 - t1)
t.on_validation_epoch_start()
for i in range(warmup):
    t.validation_step(next(t.dataloader_val))
t0 = time.perf_counter()
for i in range(iterations):
    t.validation_step(next(t.dataloader_val))
val_ms = 1e3 * (time.perf_counter() - t0) / iterations
print("RESULT " + json.dumps({"data_ms_median": 1e3 * statistics.median(data),
      "compute_ms_median": 1e3 * statistics.median(compute), "batch_size": t.batch_size,
      "validation_ms_per_iteration": val_ms,
      "patch_size": list(t.configuration_manager.patch_size)}), flush=True)
os._exit(0)  # background augmenters would keep the interpreter alive
"""


def timed(cmd: list[str], env: dict, cwd: Path = REPO) -> dict:
    """Run ``cmd``; wall time and peak summed RSS of its process tree (sampled every 20 ms)."""
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid)[0])
        time.sleep(0.02)
    out = proc.communicate()[0]
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_tree_rss_mb": round(peak / 1024, 1), "output": out}


class Tools:
    """Command lines and environments of both tools in one work folder."""

    def __init__(self, nnunet_python: Path, work: Path, dataset: Path):
        self.nn_bin = Path(nnunet_python).parent
        self.ss_bin = Path(sys.executable).parent
        self.work, self.dataset = work, dataset
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("SSLUNET_", "nnUNet_"))}
        self.ss_env = {**base, "SSLUNET_HOME": str(work / "sslunet")}
        self.nn_env = {**base, "nnUNet_raw": str(work / "nnunet_raw"),
                       "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
                       "nnUNet_results": str(work / "nnunet_results")}
        (work / "nnunet_raw").mkdir(parents=True, exist_ok=True)
        link = work / "nnunet_raw" / dataset.name
        if not link.exists():
            link.symlink_to(dataset.resolve())

    def ss(self, command: str, *args) -> list[str]:
        return [str(self.ss_bin / command), *map(str, args)]

    def nn(self, command: str, *args) -> list[str]:
        return [str(self.nn_bin / command), *map(str, args)]


def step_plan(t: Tools) -> dict:
    ours = timed(t.ss(*"sslunet_plan -c 2d 3d_fullres -np 2".split(), "-d", t.dataset), t.ss_env)
    dataset_id = str(int(t.dataset.name[len("Dataset"):len("Dataset") + 3]))  # Dataset002_X -> 2
    theirs = timed(t.nn("nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "2d",
                        "3d_fullres", "-np", "2"), t.nn_env)
    return {"sslunet": _strip(ours), "nnunet": _strip(theirs)}


def step_train(t: Tools, iterations: int, warmup: int) -> dict:
    # augmentation in the calling process, so data and compute can be timed apart (only here:
    # nnU-Net's planner passes this count to torch.set_num_threads, which refuses 0)
    done = timed([str(t.nn_bin / "python"), "-c", NNUNET_TRAIN_STEP, t.dataset.name,
                  str(iterations), str(warmup)], {**t.nn_env, "nnUNet_n_proc_DA": "0"})
    theirs = json.loads(next(ln for ln in done["output"].splitlines()
                             if ln.startswith("RESULT "))[len("RESULT "):])
    result = {"nnunet": theirs}
    keep = ("data_ms_median", "compute_ms_median", "validation_ms_per_iteration", "batch_size",
            "patch_size")
    for variant, flags in our_variants():
        out = t.work / f"engine_{variant}.json"
        timed([sys.executable, str(REPO / "benchmarks" / "bench_engine.py"), "--dataset",
               t.dataset.name, "--configurations", "2d", "--device", "cpu", "--iterations",
               str(iterations), "--warmup", str(warmup), "--batch-size",
               str(theirs["batch_size"]), "--out", str(out), *flags], t.ss_env)
        ours = json.loads(out.read_text())["training"]["2d"]
        if list(ours["patch_size"]) != theirs["patch_size"]:
            print(f"note: patch sizes differ: sslunet {ours['patch_size']}, nnU-Net "
                  f"{theirs['patch_size']}", file=sys.stderr)
        result[variant] = {k: ours[k] for k in keep}
    return result


def our_variants() -> list[tuple[str, list[str]]]:
    """sslunet as installed (``sslunet``: bf16 on CPUs with AMX) and, where that differs, in
    fp32 (``sslunet_fp32``, ``--no-amp``), nnU-Net's precision on a CPU."""
    if cpu_has_native_bf16():
        return [("sslunet", []), ("sslunet_fp32", ["--no-amp"])]
    return [("sslunet", [])]


def untrained_model(t: Tools) -> tuple[Path, Path]:
    """An sslunet 2d model folder trained for one iteration, and its nnU-Net export (made once
    per work folder: later repetitions reuse them)."""
    model = t.work / "sslunet" / "results" / t.dataset.name / "finetune" / "random__2d__all"
    if not is_finished(fold_dir(model, 0)):
        timed(t.ss("sslunet_finetune", "-d", t.dataset.name, "-c", "2d", "--epochs", "1",
                   "--iters-per-epoch", "1", "--val-iters", "0", "--batch-size", "2",
                   "--num-workers", "0", "--no-validation"), t.ss_env)
    exported = t.work / "nnunet_model"
    if not exported.exists():
        timed(t.ss("sslunet_export", "-m", model, "--to-nnunet", exported), t.ss_env)
    return model, exported


def step_predict(t: Tools, num_cases: int) -> dict:
    model, exported = untrained_model(t)
    images = sorted((t.dataset / "imagesTr").glob("*_0000.nii.gz"))[:num_cases]
    folders = {}
    for n in sorted({1, num_cases}):
        folders[n] = t.work / f"in_{n}"
        folders[n].mkdir(exist_ok=True)
        for img in images[:n]:
            shutil.copy(img, folders[n])
    env_nn = {**t.nn_env, "nnUNet_results": str(exported)}
    result = {"cases": num_cases}
    tools = [*our_variants(), ("nnunet", [])]
    for tta in (False, True):
        for tool, flags in tools:
            walls = {}
            for n, folder in folders.items():
                out = t.work / f"pred_{tool}_{n}_{'tta' if tta else 'notta'}"
                shutil.rmtree(out, ignore_errors=True)
                if tool != "nnunet":
                    cmd = t.ss("sslunet_predict", "-i", folder, "-o", out, "-m", model, "-f", "0",
                               "--device", "cpu", "--no-postprocessing", *flags,
                               *([] if tta else ["--disable-tta"]))
                    walls[n] = timed(cmd, t.ss_env)["wall_s"]
                else:
                    cmd = t.nn("nnUNetv2_predict", "-i", folder, "-o", out, "-d", t.dataset.name,
                               "-c", "2d", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
                               *([] if tta else ["--disable_tta"]))
                    walls[n] = timed(cmd, env_nn)["wall_s"]
            per_case = (walls[num_cases] - walls[1]) / max(1, num_cases - 1)
            result[f"{tool}_{'tta' if tta else 'no_tta'}"] = {
                "wall_s_all": walls[num_cases], "wall_s_one": walls[1],
                "per_case_s": round(per_case, 2), "start_up_s": round(walls[1] - per_case, 2)}
    return result


def _strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "output"}


LABEL = {"sslunet": "", "sslunet_fp32": " (sslunet in fp32)"}


def table_rows(run: dict) -> list[tuple[str, float, float, str]]:
    """``(what, sslunet, nnU-Net, unit)`` of one repetition (plan memory in GB on its own row)."""
    rows = []
    if "plan" in run:
        s, n = run["plan"]["sslunet"], run["plan"]["nnunet"]
        rows.append(("plan + preprocess 2d + 3d_fullres: wall time", s["wall_s"], n["wall_s"],
                     "s"))
        rows.append(("plan + preprocess: peak memory (process tree)",
                     s["peak_tree_rss_mb"] / 1024, n["peak_tree_rss_mb"] / 1024, "GB"))
    if "train" in run:
        n = run["train"]["nnunet"]
        for variant in (v for v in LABEL if v in run["train"]):
            s = run["train"][variant]
            for key, what in (("compute_ms_median", "compute"), ("data_ms_median", "data"),
                              ("validation_ms_per_iteration", "validation iteration")):
                rows.append((f"train 2d {what}, batch {n['batch_size']}{LABEL[variant]}",
                             s[key] / 1e3, n[key] / 1e3, "s"))
    if "predict" in run:
        p = run["predict"]
        for mode in ("no_tta", "tta"):
            n = p[f"nnunet_{mode}"]
            for variant in (v for v in LABEL if f"{v}_{mode}" in p):
                s, m = p[f"{variant}_{mode}"], mode.replace("_", " ")
                rows.append((f"predict 2d, {m}: per case{LABEL[variant]}", s["per_case_s"],
                             n["per_case_s"], "s"))
                rows.append((f"predict 2d, {m}: start-up{LABEL[variant]}", s["start_up_s"],
                             n["start_up_s"], "s"))
    return rows


def print_table(result: dict) -> None:
    """Medians over the repetitions; the ratio is taken within each repetition (both tools
    measured back to back), shown as its median and range."""
    m, runs = result["machine"], result["repeats"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB; dataset "
          f"{result['dataset']}; {len(runs)} repetition(s); {result['settings']['cases']} cases "
          "predicted\n")
    print("| what | sslunet | nnU-Net v2 | ratio (time or memory), median (range) |\n"
          "|---|---|---|---|")
    per_run = [table_rows(r) for r in runs]
    for i, (what, _, _, unit) in enumerate(per_run[0]):
        rows = [r[i] for r in per_run if i < len(r) and r[i][0] == what]
        ours = statistics.median(r[1] for r in rows)
        theirs = statistics.median(r[2] for r in rows)
        ratios = [r[1] / max(r[2], 1e-9) for r in rows]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        print(f"| {what} | {ours:.2f} {unit} | {theirs:.2f} {unit} | "
              f"{statistics.median(ratios):.2f}{spread} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nnunet-python", type=Path, default=os.environ.get("NNUNET_PYTHON"))
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--steps", nargs="+", default=["plan", "train", "predict"],
                   choices=["plan", "train", "predict"])
    p.add_argument("--cases", type=int, default=5, help="cases to predict")
    p.add_argument("--iterations", type=int, default=5, help="timed training iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="repetitions of the steps")
    p.add_argument("--include", type=Path, nargs="*", default=[],
                   help="earlier results of this script (same machine and settings) whose "
                        "repetitions count with this run's")
    p.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not args.nnunet_python or not (Path(args.nnunet_python).parent /
                                      "nnUNetv2_predict").exists():
        print("skipped: no nnU-Net v2 environment (give --nnunet-python or NNUNET_PYTHON, a "
              "Python whose bin folder has nnUNetv2_predict)")
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-vs-nnunet-"))
    tools = Tools(args.nnunet_python, work, args.dataset.resolve())
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "dataset": args.dataset.name, "settings": {
                  "cases": args.cases, "iterations": args.iterations, "warmup": args.warmup},
              "repeats": [r for f in args.include for r in _repeats(json.loads(f.read_text()))]}
    out = args.out or REPO / "benchmarks" / "results" / f"vs_nnunet_{args.dataset.name}.json"
    for i in range(args.repeats):
        run = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if "plan" in args.steps or not (work / "sslunet" / "preprocessed").exists():
            print(f"[{i + 1}/{args.repeats}] plan + preprocess ...", file=sys.stderr)
            run["plan"] = step_plan(tools)
        if "train" in args.steps:
            print(f"[{i + 1}/{args.repeats}] training step ...", file=sys.stderr)
            run["train"] = step_train(tools, args.iterations, args.warmup)
        if "predict" in args.steps:
            print(f"[{i + 1}/{args.repeats}] prediction ...", file=sys.stderr)
            run["predict"] = step_predict(tools, args.cases)
        result["repeats"].append(run)
        write_json(out, result)  # after every repetition: an interrupted run keeps what it has
    print_table(result)
    print(f"\nresults: {out}; work folder: {work}")


def _repeats(result: dict) -> list[dict]:
    """The repetitions of a results file (files of one repetition have no list)."""
    if "repeats" in result:
        return result["repeats"]
    return [{k: result[k] for k in ("date", "plan", "train", "predict") if k in result}]


if __name__ == "__main__":
    main()
