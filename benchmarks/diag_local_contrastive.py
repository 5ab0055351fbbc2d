"""Is the local contrastive task informative? Train only the local stage, per variant, and
compare its loss curve with the loss at chance.

Starts every variant from the same finished global stage (``stage1_global/checkpoint_final.pt``
of a ``contrastive`` pretraining), trains the local stage (frozen encoder, decoder blocks + g2,
AdamW lr 1e-3 as the paper) for the same iterations on the same images, and reports the
held-out loss after each epoch next to its value at chance, ``log(1 + #negatives)`` (all
similarities equal). A loss that drops to ~0 within the first epoch and stays there is a task
solved trivially (the issue-9 finding); an informative task keeps falling.

Usage::

    SSLUNET_HOME=... python benchmarks/diag_local_contrastive.py -d Dataset910_ACDCBench \\
        --epochs 6 --iters 25 --out benchmarks/results/diag_local_acdc.json
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import torch

from sslunet.paths import Paths
from sslunet.preprocessing.storage import load_plans, preprocessed_dir
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.runs.layout import pretrain_dir
from sslunet.ssl.objectives import get_objective
from sslunet.ssl.objectives.base import PretrainSetup
from sslunet.ssl.api import load_weights, pretrain_images, split_holdout
from sslunet.training.config import TrainingConfig
from sslunet.training.trainer import Trainer
from sslunet.utils.atomic import write_json

VARIANTS = {  # name -> contrastive options of the local stage
    "paper: intensity views, 5 nearest regions": {"local_views": "intensity"},
    "mirrored view 2, 5 nearest regions": {"local_views": "mirror"},
    "intensity views, negatives from the whole batch": {"local_views": "intensity",
                                                        "local_negatives_from": "batch"},
    "mirrored view 2, negatives from the whole batch": {"local_views": "mirror",
                                                        "local_negatives_from": "batch"},
}


def chance_loss(options, batch: int, regions: int, table_k: int) -> float:
    own = table_k if table_k else regions - 1
    negatives = 2 * own + (2 * (batch - 1) * regions if options.get(
        "local_negatives_from") == "batch" else 0)
    return math.log(1 + negatives)


def run_variant(paths: Paths, dataset: str, options: dict, epochs: int, iters: int,
                batch: int, seed: int) -> list[dict]:
    plans = load_plans(paths, dataset)
    config = plans.configuration("2d")
    folder = preprocessed_dir(paths, dataset) / config.data_identifier
    setup = PretrainSetup(dataset, plans, config, folder, paths, seed)
    obj = get_objective("contrastive").create(setup, options)
    stage1 = pretrain_dir(paths, dataset, "contrastive", "2d") / "stage1_global"
    load_weights(obj, load_checkpoint(stage1 / "checkpoint_final.pt"))
    obj.set_stage("local")
    train_ids, val_ids = split_holdout(pretrain_images(folder, False), 0.05, seed)

    def factory(s):
        tr = obj.make_stream(train_ids, batch, s, True, 0, False)
        va = obj.make_stream(val_ids, batch, s + 1, False, 0, False)
        return tr, va, lambda: (tr.close(), va.close())

    cfg = TrainingConfig(epochs=epochs, iters_per_epoch=iters, val_iters=5, optimizer="adamw",
                         lr=1e-3, num_workers=0, seed=seed, deep_supervision=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, obj, factory, Path(tmp), torch.device("cpu"), progress=False)
        trainer.log.echo = False
        trainer.fit()
        records = trainer.log.read_metrics()
    k = int(obj.negative_table.shape[1]) if obj.negative_table is not None else 0
    chance = chance_loss(options, batch, len(obj.local_head.corners), k)
    return [{"epoch": r["epoch"] + 1, "train_loss": r["train_loss"], "val_loss": r["val_loss"],
             "val_over_chance": r["val_loss"] / chance, "chance": chance} for r in records]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--iters", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file for the curves")
    args = p.parse_args()
    paths = Paths.from_environ(os.environ)
    torch.manual_seed(args.seed)
    out = {}
    for name, options in VARIANTS.items():
        out[name] = run_variant(paths, args.dataset, options, args.epochs, args.iters,
                                args.batch_size, args.seed)
        curve = " ".join(f"{r['val_over_chance']:.3f}" for r in out[name])
        print(f"{name}: held-out loss / chance per epoch: {curve} (chance "
              f"{out[name][0]['chance']:.2f})", flush=True)
    if args.out:
        write_json(Path(args.out), {"dataset": args.dataset, "epochs": args.epochs,
                                    "iters_per_epoch": args.iters, "batch": args.batch_size,
                                    "seed": args.seed, "curves": out})


if __name__ == "__main__":
    main()
