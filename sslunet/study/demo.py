"""``sslunet_demo``: the whole workflow on the synthetic dataset, in one command.

synthesise -> plan -> pretrain (regression, mae) -> study (random / regression / mae at a
small label budget and with all labels) -> test-set scores, table, plots and an
overlay picture. The default settings finish in about a quarter of an hour on a 2-core CPU;
``--full`` scales the schedules up for a GPU, where the methods' differences show clearly.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sslunet.dataset.synthetic import SynthConfig, generate_dataset
from sslunet.paths import Paths
from sslunet.planning.api import PlanOptions, plan_and_preprocess
from sslunet.runs.layout import STUDY_REPORT, STUDY_TABLE
from sslunet.study.overlay import save_overlay
from sslunet.study.api import StudyOptions, run_study


@dataclass(frozen=True)
class DemoSettings:
    """Schedules of the two modes (CPU-quick and GPU-full)."""

    num_labeled: int
    num_unlabeled: int
    num_test: int
    base_features: int
    small_budget: str
    finetune: dict
    pretrain: dict
    tta: bool
    # the demo's own synthetic dataset (never a user's Dataset001_Liver, never re-planned)
    dataset_id: int = 900
    dataset_name: str = "LiverDemo"


# CPU: a narrow network (8 base features) so that six fine-tunings of 500 iterations fit in the
# budget. Every init gets the same fine-tuning schedule (a fair comparison): AdamW, lr 3e-3, no
# warm-up. Measured on 2 CPU cores: nnU-Net's SGD (lr 1e-2, momentum 0.99) reaches liver Dice
# ~0.70 and no spleen/kidney in 500 iterations at this width; AdamW 3e-3 reaches ~0.85 / 0.74 /
# 0.67 in the same time (benchmarks of the schedule are in the README's demo section).
QUICK = DemoSettings(12, 24, 6, 8, "2",
                     finetune=dict(epochs=25, iters_per_epoch=20, val_iters=4, batch_size=8,
                                   optimizer="adamw", lr=3e-3, warmup_epochs=0),
                     # 400 pretraining iterations: the gain grew with pretraining length on
                     # ACDC (docs/payoff.md H5); this is what the 15-minute budget leaves
                     pretrain=dict(epochs=20, iters_per_epoch=20, batch_size=12), tta=False)
FULL = DemoSettings(20, 40, 10, 32, "2",
                    finetune=dict(epochs=100, iters_per_epoch=100, val_iters=10),
                    pretrain=dict(epochs=100, iters_per_epoch=100), tta=True,
                    dataset_id=901, dataset_name="LiverDemoFull")
# the two objectives that gained most over random init at 2 labelled volumes on real cardiac MR
# (ACDC, docs/payoff.md H6: both pretrain the whole U-Net); `contrastive` gained least there
INITS = ("random", "regression", "mae")


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr)


def run_demo(paths: Paths, settings: DemoSettings = QUICK, device: str = "auto",
             num_workers: int | None = None, seed: int = 0, name: str = "demo") -> Path:
    """Run the demo; returns the study folder (table, plots, ``overlay.png``).

    ``num_workers``: augmentation processes per run; None: the device's default (2 on a CPU,
    up to 12 on a GPU, see :func:`sslunet.utils.device.default_data_workers`).
    """
    s = settings
    cfg = SynthConfig(num_labeled=s.num_labeled, num_unlabeled=s.num_unlabeled,
                      num_test=s.num_test, seed=seed, dataset_id=s.dataset_id,
                      dataset_name=s.dataset_name)
    raw = paths.raw / cfg.folder_name
    if (raw / "dataset.json").exists():
        _log(f"using the existing synthetic dataset {raw}")
    else:
        raw = generate_dataset(paths.raw, cfg, num_processes=2, progress=True)
        _log(f"synthetic dataset written to {raw}")
    plan_and_preprocess(raw, paths.preprocessed, PlanOptions(
        configurations=("2d",), base_features=s.base_features, include_test=True))
    workers = {} if num_workers is None else {"num_workers": num_workers}
    opts = StudyOptions(raw.name, "2d", INITS, (s.small_budget, "all"), ("0",), (seed,),
                        name=name, device=device,
                        finetune_overrides={**s.finetune, **workers},
                        pretrain_overrides={**s.pretrain, **workers}, tta=s.tta)
    out = run_study(paths, opts)
    _overlay(paths, raw, out)
    print((out / STUDY_REPORT).read_text())
    _log(f"outputs: {out} (study.md, study.csv, dice_vs_labels.png, convergence.png, "
         "overlay.png)")
    return out


def _overlay(paths: Paths, raw: Path, out: Path) -> None:
    """Overlay for the first test case, predicted by the best all-labels run."""
    rows = [r for r in csv.DictReader(open(out / STUDY_TABLE))
            if r["status"] == "ok" and r["budget"] == "all" and r.get("test_dice_mean")]
    if not rows:
        _log("no finished all-labels run with test scores: no overlay")
        return
    best = max(rows, key=lambda r: float(r["test_dice_mean"]))
    test_dir = paths.results / best["run_dir"] / "test"  # study.csv: relative to the results
    ending = ".nii.gz"
    case = sorted(p.name[: -len(ending)] for p in test_dir.glob(f"*{ending}"))[0]
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    save_overlay(raw / "imagesTs" / f"{case}_0000{ending}", raw / "labelsTs" / f"{case}{ending}",
                 test_dir / f"{case}{ending}", out / "overlay.png", labels,
                 f"{case}: init {best['init']}, all labels (test Dice "
                 f"{float(best['test_dice_mean']):.3f})")
