"""Where runs live and how their inputs are resolved (shared by finetune, pretrain, predict)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from sslunet.errors import InputError
from sslunet.paths import Paths
from sslunet.planning.plans import Plans
from sslunet.utils.atomic import read_json


def preprocessed_dir(paths: Paths, dataset: str) -> Path:
    d = paths.preprocessed / dataset
    if not (d / "plans.json").exists():
        raise InputError(f"dataset {dataset} is not planned yet (run: sslunet_plan -d {dataset})",
                         d / "plans.json")
    return d


def load_plans(paths: Paths, dataset: str) -> Plans:
    return Plans.load(preprocessed_dir(paths, dataset) / "plans.json")


def fold_cases(pre_dir: Path, fold: int | str) -> tuple[list[str], list[str]]:
    """(train, val) case ids of a fold; ``"all"`` trains and validates on every labelled case."""
    splits = read_json(pre_dir / "splits.json")
    if fold == "all":
        ids = sorted({i for s in splits for i in s["train"] + s["val"]})
        return ids, ids
    k = int(fold)
    if not 0 <= k < len(splits):
        raise InputError(f"fold {k} does not exist (splits.json has folds 0..{len(splits) - 1})",
                         pre_dir / "splits.json")
    return list(splits[k]["train"]), list(splits[k]["val"])


def choose_labeled(train_ids: list[str], n: int | None, seed: int) -> list[str]:
    """``n`` cases drawn deterministically from ``train_ids`` (same n and seed, same cases).

    The draw is a seeded permutation of the sorted ids, truncated: a larger ``n`` keeps the cases
    of a smaller one (nested subsets), so label-budget curves compare like with like.
    """
    ids = sorted(train_ids)
    if n is None or n >= len(ids):
        if n is not None and n > len(ids):
            raise InputError(f"--num-labeled {n} exceeds the {len(ids)} training cases of this "
                             "fold")
        return ids
    if n < 1:
        raise InputError("--num-labeled must be >= 1")
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    return sorted(ids[i] for i in order[:n])


def init_tag(init: str) -> str:
    """Folder-name form of ``--init``: the objective name, or a short hash of a path."""
    if init == "random" or ("/" not in init and not init.endswith(".pt")):
        return init
    digest = hashlib.sha1(str(Path(init).resolve()).encode()).hexdigest()[:8]
    return f"ckpt-{digest}"


def pretrain_dir(paths: Paths, dataset: str, objective: str, configuration: str) -> Path:
    return paths.results / dataset / "pretrain" / f"{objective}__{configuration}"


def finetune_model_dir(paths: Paths, dataset: str, init: str, configuration: str,
                       num_labeled: int | None, seed: int) -> Path:
    n = "all" if num_labeled is None else str(num_labeled)
    tag = f"{init_tag(init)}__{configuration}__{n}" + (f"__seed{seed}" if seed else "")
    return paths.results / dataset / "finetune" / tag


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if spec == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown --device {spec!r} (auto, cuda or cpu)")
