"""Chaitanya et al.'s ACDC label-efficiency protocol, scaled to a 2-core CPU, with sslunet's commands.

Steps (each resumable; re-running a finished step does nothing):

    python benchmarks/acdc_protocol.py prepare      # derived raw dataset + plan + patient splits
    python benchmarks/acdc_protocol.py pretrain     # the pretrainings the study compares
    python benchmarks/acdc_protocol.py screen       # fine-tuning recipes at 2 volumes
    python benchmarks/acdc_protocol.py study        # fine-tune grid, test scoring, tables, plots
    python benchmarks/acdc_protocol.py objectives   # regression, simclr, G^D alone at 2 volumes
    python benchmarks/acdc_protocol.py curve        # mae pretrained 500 / 1500 / 4500 iterations
    python benchmarks/acdc_protocol.py all          # all of them in order
    python benchmarks/acdc_protocol.py gpu          # a GPU-scale slice (full width, 1.5 mm)

Everything goes under ``$SSLUNET_HOME`` (or SSLUNET_RAW/PREPROCESSED/RESULTS), as for every
sslunet command; the study's ``study.md``/``study.csv``/plots are then copied to
``docs/results/acdc_cpu/`` with ``python benchmarks/acdc_protocol.py export``.

The protocol (Chaitanya et al. 2020, section 4.1 of ``shared/notes/seed-papers-methods.md``):
- **Split by patient.** ``../shared/data/Dataset003_ACDC`` holds 30 patients x (ED, ES). A seeded
  permutation (seed 0) puts 10 patients (both frames, 20 volumes) in ``imagesTs/labelsTs``: never
  fine-tuned on, never pretrained on, scored once per run. The other 20 patients (40 volumes) are
  ``imagesTr``: the pretraining pool (labels never read by pretraining) and the labelled pool.
  Cross-validation folds are written by patient too, so no frame of a validation patient is
  trained on.
- **Scaled to a CPU.** 2d configuration at 2.5 x 2.5 mm in-plane (``--target-spacing 8 2.5 2.5``,
  the data's nominal spacing is 1.5 mm: 2.8x fewer pixels) and 8 base features; the paper used
  1.37 mm and 16 base features. Dice is scored in each test volume's original geometry.
- **Budgets** 1, 2, 8 labelled volumes and all (32 in fold 0), 3 seeds each (different labelled
  subsets), one fine-tuning schedule for every init (see ``FINETUNE``; the optimiser is the
  study's default for every init, AdamW lr 3e-3 without warm-up).
- **Screens** at 2 labelled volumes and the same 3 seeds, each in its own study, every run paired
  with the random-init run of the same seed (``benchmarks/payoff_screen.py``): fine-tuning
  recipes for a pretrained init (``screen``, ``SCREEN``); the objectives not in the grid
  (``objectives``: regression, simclr, and G^D alone = the global stage of ``contrastive``);
  the length of ``mae`` pretraining (``curve``, each length in its own results root).
  ``study --budgets 2`` runs the grid's 2-volume column first, which the screens pair with.

Our choices where the paper is silent or differs: both frames of a patient are separate volumes
(the paper used ED only), so a 2-volume budget may be one patient's ED and ES; the fine-tuning
recipe of each init is sslunet's default for its kind (see docs/payoff.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from sslunet.paths import Paths
from sslunet.planning.splits import make_splits
from sslunet.runs.layout import STUDY_OUTPUTS
from sslunet.utils.atomic import read_json, write_json

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "Dataset003_ACDC"
NAME = "Dataset910_ACDCBench"
TEST_PATIENTS = 10
SPLIT_SEED = 0
PLAN = ["-c", "2d", "--base-features", "8", "--target-spacing", "8", "2.5", "2.5"]
# pretraining budgets (iterations = epochs x iters_per_epoch) at batch 16
PRETRAIN = {"epochs": "30", "iters_per_epoch": "50", "batch_size": "16"}
# one fine-tuning schedule for every init: 20 x 25 = 500 iterations at batch 8
FINETUNE = {"epochs": "20", "iters_per_epoch": "25", "batch_size": "8", "val_iters": "4"}
INITS = ["random", "mae", "contrastive"]
# objective screen at 2 volumes (issue 9: the best two of simclr, G^D alone, regression, mae);
# G^D alone is the global stage of the `contrastive` pretraining (its first 750 iterations)
SCREEN_OBJECTIVES = ["regression", "simclr"]
GD_ONLY = "contrastive__2d/stage1_global/checkpoint_final.pt"
# pretraining-length curve of `mae` (iterations at batch 16; 1500 is PRETRAIN's)
CURVE_ITERS = [500, 4500]
# recipe screen for a pretrained init at 2 volumes: study name -> (inits, extra flags)
SCREEN = {
    "scr_plain": (["mae", "contrastive"], []),  # the random-init schedule, AdamW 3e-3
    "scr_nnunet": (["mae"], ["--optimizer", "sgd", "--lr", "1e-3", "--warmup-epochs", "1"]),
    "scr_freeze": (["mae"], ["--freeze-encoder-epochs", "5"]),
    "scr_lrscale": (["mae"], ["--pretrained-lr-scale", "0.1"]),
}
BUDGETS = ["1", "2", "8", "all"]
SEEDS = ["0", "1", "2"]
STUDY_NAME = "acdc_protocol"
GPU_NAME = "Dataset911_ACDCBenchGPU"
GPU_OBJECTIVE = "mae"  # the best objective of the CPU screen (docs/payoff.md)
EXPORT = REPO / "docs" / "results" / "acdc_cpu"


def patient(case_id: str) -> str:
    return case_id.split("_frame")[0]  # acdc_001_frame01 -> acdc_001


def test_patients(source: Path = SOURCE) -> list[str]:
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (source / "imagesTr").glob("*_0000.nii.gz"))
    patients = sorted({patient(c) for c in cases})
    order = np.random.default_rng(SPLIT_SEED).permutation(len(patients))
    return sorted(patients[i] for i in order[:TEST_PATIENTS])


def derive_raw(paths: Paths, source: Path = SOURCE, name: str = NAME) -> Path:
    """Write the derived raw dataset (copies; the shared folder is read-only)."""
    out = paths.raw / name
    if (out / "dataset.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    test = set(test_patients(source))
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (tmp / sub).mkdir(parents=True)
    n_train = 0
    for img in sorted((source / "imagesTr").glob("*_0000.nii.gz")):
        case = img.name[: -len("_0000.nii.gz")]
        split = "Ts" if patient(case) in test else "Tr"
        n_train += split == "Tr"
        shutil.copyfile(img, tmp / f"images{split}" / img.name)
        shutil.copyfile(source / "labelsTr" / f"{case}.nii.gz", tmp / f"labels{split}" / f"{case}.nii.gz")
    ds = read_json(source / "dataset.json")
    ds.update(name=name, numTraining=n_train,
              description=ds.get("description", "") + f"; benchmark split: {TEST_PATIENTS} test "
              f"patients drawn with seed {SPLIT_SEED} (benchmarks/acdc_protocol.py)")
    write_json(tmp / "dataset.json", ds)
    tmp.rename(out)
    return out


def write_patient_splits(paths: Paths, name: str = NAME) -> None:
    """5 folds over patients (both frames of a patient always on the same side)."""
    pre = paths.preprocessed / name
    cases = sorted({i for s in read_json(pre / "splits.json") for i in s["train"] + s["val"]})
    by_patient: dict[str, list[str]] = {}
    for c in cases:
        by_patient.setdefault(patient(c), []).append(c)
    folds = make_splits(sorted(by_patient))
    splits = [{k: sorted(c for p in f[k] for c in by_patient[p]) for k in ("train", "val")}
              for f in folds]
    write_json(pre / "splits.json", splits)


def sh(*args: str, env: dict | None = None) -> None:
    """Run a command; ``sslunet_X`` runs as ``python -m sslunet.cli.X`` with this interpreter,
    so the script works without an activated virtual environment."""
    print("+ " + " ".join(args), flush=True)
    if args[0].startswith("sslunet_"):
        args = (sys.executable, "-m", f"sslunet.cli.{args[0][len('sslunet_'):]}", *args[1:])
    subprocess.run(args, check=True, env=env)


def prepare(paths: Paths) -> None:
    raw = derive_raw(paths)
    sh("sslunet_plan", "-d", str(raw), *PLAN)
    write_patient_splits(paths)


def _flags(d: dict, prefix: str = "") -> list[str]:
    return [x for k, v in d.items() for x in (f"--{prefix}{k.replace('_', '-')}", v)]


def _pretrain(results: Path, objective: str, budget: dict) -> Path:
    """One pretraining (continued when interrupted) under ``results``; its final checkpoint."""
    done = results / NAME / "pretrain" / f"{objective}__2d" / "checkpoint_final.pt"
    if not done.exists():
        cont = ["--continue"] if done.parent.exists() else []
        env = {**os.environ, "SSLUNET_RESULTS": str(results)}
        sh("sslunet_pretrain", "-d", NAME, "-c", "2d", "-l", objective, *_flags(budget), *cont,
           env=env)
    return done


def pretrain(paths: Paths, objectives: list[str] | None = None) -> None:
    for objective in objectives or [i for i in INITS if i != "random"]:
        _pretrain(paths.results, objective, PRETRAIN)


def screen(paths: Paths) -> None:
    EXPORT.mkdir(parents=True, exist_ok=True)
    sh("sslunet_study", "-d", NAME, "-c", "2d", "--name", STUDY_NAME, "--inits", "random",
       "--labeled", "2", "--seeds", *SEEDS, "--disable-tta", *_flags(FINETUNE))
    for name, (inits, extra) in SCREEN.items():
        sh("sslunet_study", "-d", NAME, "-c", "2d", "--name", name, "--inits", *inits,
           "--labeled", "2", "--seeds", *SEEDS, "--disable-tta", *_flags(FINETUNE), *extra)
    sh(sys.executable, str(REPO / "benchmarks" / "payoff_screen.py"), "-d", NAME, "--baseline",
       STUDY_NAME, "--studies", *SCREEN, "--budget", "2", "--out", str(EXPORT / "screen.md"))


def objectives(paths: Paths) -> None:
    """The objective screen at 2 volumes: regression, simclr and G^D alone, paired with the
    protocol study's random-init runs (run ``study --budgets 2`` or ``study`` first)."""
    pretrain(paths, SCREEN_OBJECTIVES)
    gd = paths.results / NAME / "pretrain" / GD_ONLY
    sh("sslunet_study", "-d", NAME, "-c", "2d", "--name", "scr_objectives", "--inits",
       *SCREEN_OBJECTIVES, str(gd), "--labeled", "2", "--seeds", *SEEDS, "--disable-tta",
       *_flags(FINETUNE))
    sh(sys.executable, str(REPO / "benchmarks" / "payoff_screen.py"), "-d", NAME, "--baseline",
       STUDY_NAME, "--studies", STUDY_NAME, "scr_objectives", "--budget", "2",
       "--out", str(EXPORT / "objectives.md"))


def curve_results(paths: Paths, iters: int) -> Path:
    """Results root of the ``mae`` pretraining of ``iters`` iterations (one root per length,
    because a dataset holds one pretraining per objective)."""
    return paths.results.parent / f"{paths.results.name}_mae{iters}"


def curve(paths: Paths) -> None:
    """Dice gain at 2 volumes against the length of `mae` pretraining (issue 9, H5): 500 and
    4500 iterations beside PRETRAIN's 1500, same batch and everything else."""
    per_epoch = int(PRETRAIN["iters_per_epoch"])
    ckpts = [str(_pretrain(curve_results(paths, n), "mae",
                           {**PRETRAIN, "epochs": str(n // per_epoch)})) for n in CURVE_ITERS]
    sh("sslunet_study", "-d", NAME, "-c", "2d", "--name", "pretrain_length", "--inits", *ckpts,
       "--labeled", "2", "--seeds", *SEEDS, "--disable-tta", *_flags(FINETUNE))
    sh(sys.executable, str(REPO / "benchmarks" / "payoff_screen.py"), "-d", NAME, "--baseline",
       STUDY_NAME, "--studies", STUDY_NAME, "pretrain_length", "--budget", "2",
       "--out", str(EXPORT / "pretrain_length.md"))


def reuse_screen_runs(paths: Paths) -> None:
    """The plain-recipe screen ran the protocol's own 2-volume fine-tunings (same schedule,
    seeds and cases): hard-link them into the protocol study instead of training them again."""
    root = paths.results / NAME / "study"
    for run in sorted((root / "scr_plain" / "finetune").glob("*__2d__2*")):
        target = root / STUDY_NAME / "finetune" / run.name
        if not target.exists():
            shutil.copytree(run, target, copy_function=os.link)


def study(paths: Paths, budgets: list[str] | None = None, inits: list[str] | None = None) -> None:
    reuse_screen_runs(paths)
    sh("sslunet_study", "-d", NAME, "-c", "2d", "--name", STUDY_NAME, "--inits", *(inits or INITS),
       "--labeled", *(budgets or BUDGETS), "--seeds", *SEEDS, "--disable-tta",
       "--convergence-budget", "2", *_flags(FINETUNE))


def gpu_slice(paths: Paths) -> None:
    """A GPU-scale slice (issue 9, part 6): full resolution (1.5 mm) and width (32 base
    features), 3000 pretraining iterations of the best objective of the CPU screen, then random
    vs that init at 2 labelled volumes, 3 seeds, 1000 fine-tuning iterations each; about 10
    minutes on one recent GPU (not yet measured: no GPU was lent to the session that wrote it).
    Resumable like every study."""
    raw = derive_raw(paths, name=GPU_NAME)
    sh("sslunet_plan", "-d", str(raw), "-c", "2d")
    write_patient_splits(paths, GPU_NAME)
    sh("sslunet_study", "-d", GPU_NAME, "-c", "2d", "--name", "gpu_slice", "--inits", "random",
       GPU_OBJECTIVE, "--labeled", "2", "--seeds", *SEEDS, "--device", "cuda",
       "--pretrain-epochs", "30", "--pretrain-iters-per-epoch", "100", "--epochs", "20",
       "--iters-per-epoch", "50", "--val-iters", "10", "--convergence-budget", "2")


def export(paths: Paths) -> None:
    src = paths.results / NAME / "study" / STUDY_NAME
    EXPORT.mkdir(parents=True, exist_ok=True)
    for name in STUDY_OUTPUTS:
        if (src / name).exists():
            shutil.copyfile(src / name, EXPORT / name)
    print(f"copied to {EXPORT}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["prepare", "pretrain", "screen", "objectives", "curve",
                                    "study", "all", "export", "gpu"])
    p.add_argument("--budgets", nargs="+", choices=BUDGETS,
                   help="study step: only these label budgets (the full grid by default)")
    p.add_argument("--inits", nargs="+", choices=INITS + SCREEN_OBJECTIVES,
                   help="study step: these inits (INITS by default; the screened objectives "
                        "can be added to the grid)")
    args = p.parse_args()
    paths = Paths.from_environ(os.environ)
    run_study = lambda paths: study(paths, args.budgets, args.inits)  # noqa: E731
    steps = {"prepare": [prepare], "pretrain": [pretrain], "screen": [screen],
             "objectives": [objectives], "curve": [curve], "study": [run_study],
             "export": [export],
             "all": [prepare, pretrain, screen, run_study, objectives, curve, export],
             "gpu": [gpu_slice]}[args.step]
    for step in steps:
        step(paths)


if __name__ == "__main__":
    sys.exit(main())
