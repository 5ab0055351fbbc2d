"""Finding and loading a trained segmentation model for prediction.

This module holds the model side of ``sslunet_predict``: which model folder to use
(:func:`find_model`, from ``-m`` or the finished models of a dataset), which checkpoint file of
each fold (:func:`checkpoint_files`), building every fold's network from the plans stored in
its checkpoint (:func:`load_model`, giving a :class:`LoadedModel` ensemble), and which image
file ending the model was trained on (:func:`model_file_ending`). Every problem with a folder
or checkpoint is an :class:`~sslunet.errors.InputError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from sslunet.dataset.raw import SUPPORTED_ENDINGS
from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.errors import InputError
from sslunet.networks import build_network
from sslunet.paths import Paths
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.runs.checkpoint import REQUIRED, load_checkpoint
from sslunet.runs.layout import (
    CHECKPOINTS,
    DATASET_FILE,
    FOLD_PREFIX,
    checkpoint_path,
    fold_dir,
    fold_dirs,
    fold_name,
)
from sslunet.utils.atomic import read_json

MODEL_CHECKPOINTS = ("final", "best")  # what ``sslunet_predict --checkpoint`` may choose
REQUIRED_KEYS = REQUIRED["model"]


@dataclass(frozen=True)
class LoadedModel:
    """An ensemble of folds sharing one plan and configuration, ready on its device."""

    model_dir: Path
    checkpoints: tuple[Path, ...]
    plans: Plans
    config: ConfigurationPlan
    networks: tuple[nn.Module, ...]
    device: torch.device


def finished_models(dataset_dir: Path) -> list[Path]:
    """Model folders under ``dataset_dir/finetune`` with at least one finished fold."""
    return sorted(d for d in (Path(dataset_dir) / "finetune").glob("*")
                  if d.is_dir() and any(checkpoint_path(f).exists() for f in fold_dirs(d)))


def find_model(paths: Paths, dataset: str | None, model: Path | None) -> Path:
    """``model`` if given, else the only finished model of ``dataset`` (else of the only
    dataset that has one). Several candidates are an :class:`InputError` listing them."""
    if model is not None:
        if not Path(model).is_dir():
            raise InputError("model folder does not exist", model)
        return Path(model)
    if dataset is None:
        found = [d for d in sorted(paths.results.glob("*")) if finished_models(d)]
        if len(found) != 1:
            raise InputError(f"no finished model under {paths.results}/*/finetune (train one "
                             "with sslunet_finetune, or pass -m)" if not found else
                             "finished models exist for several datasets ("
                             + ", ".join(d.name for d in found) + "); choose one with -d")
        dataset_dir = found[0]
    else:
        dataset_dir = paths.results / resolve_dataset_name(dataset, [paths.results])
    models = finished_models(dataset_dir)
    if not models:
        raise InputError("no finished model (no finetune/*/fold_*/checkpoint_final.pt; train "
                         "one with sslunet_finetune)", dataset_dir)
    if len(models) > 1:
        raise InputError(f"{len(models)} finished models for {dataset_dir.name}: "
                         + ", ".join(m.name for m in models)
                         + f"; choose one with -m {dataset_dir / 'finetune'}/<model>")
    return models[0]


def checkpoint_files(model: Path, folds: Sequence[str] | None,
                     checkpoint: str = "final") -> tuple[Path, list[Path]]:
    """``(model folder, checkpoint file per fold)`` for a model folder or a single fold folder.

    Without ``folds``, every fold folder holding the checkpoint is used.
    """
    name, model = CHECKPOINTS[checkpoint], Path(model)
    folders = fold_dirs(model)
    if not folders and (model.name.startswith(FOLD_PREFIX) or (model / name).exists()):
        if folds and [fold_dir(model.parent, f) for f in folds] != [model]:
            raise InputError("-f cannot select other folds when -m is a single fold folder", model)
        folders, folds = [model], [fold_name(model)]
        model = model.parent
    elif not folders:
        raise InputError("not a model folder: it has no fold_* subfolders", model)
    elif folds is None:
        files = [d / name for d in folders if (d / name).is_file()]
        if not files:
            raise InputError(f"no finished checkpoint: no fold_*/{name} (training not "
                             "finished?)", model)
        return model, files
    available = ", ".join(fold_name(d) for d in folders)
    files = []
    for fold in dict.fromkeys(folds):  # drop repeats, keep order
        d = fold_dir(model, fold)
        if not d.is_dir():
            raise InputError(f"fold {fold} does not exist (folds here: {available})", d)
        if not (d / name).is_file():
            raise InputError(f"fold {fold} has no {name} (training not finished?)", d / name)
        files.append(d / name)
    return model, files


def load_model(model_dir: Path, files: Sequence[Path], device: torch.device) -> LoadedModel:
    """Load every fold's checkpoint (weights only) and build its network on ``device``.

    Raises:
        InputError: not a segmentation checkpoint, folds that disagree on plans,
            configuration, channels or classes, or weights that do not fit the plan.
    """
    networks, first, plans = [], None, None
    for f in files:
        ckpt = load_checkpoint(f)  # checks the type of every field it knows that is present
        missing = [k for k in REQUIRED_KEYS if k not in ckpt]
        if missing or ckpt.get("kind", "finetune") != "finetune":
            raise InputError(f"not a fine-tuned segmentation model ({ckpt.get('kind')} "
                             f"checkpoint{', missing ' + ', '.join(missing) if missing else ''})",
                             f)
        meta = (ckpt["plans"], ckpt["configuration"], ckpt["num_input_channels"],
                ckpt["num_classes"])
        if first is None:
            first = meta
            try:
                plans = Plans.from_dict(meta[0])
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise InputError(f"checkpoint plans cannot be read ({e})", f) from None
            if plans.num_input_channels != meta[2]:
                raise InputError("checkpoint channel count disagrees with its plans", f)
        elif meta != first:
            raise InputError(f"fold differs from {files[0]} in plans, configuration, channels "
                             "or classes; folds of one model must match", f)
        network = build_network(plans.configuration(meta[1]), meta[2], meta[3],
                                deep_supervision=False)
        try:
            network.load_state_dict(ckpt["network_weights"])
        except RuntimeError as e:
            raise InputError("weights do not fit the network its plans describe "
                             f"({str(e).splitlines()[0][:120]})", f) from None
        networks.append(network.to(device).eval())
    return LoadedModel(Path(model_dir), tuple(files), plans, plans.configuration(first[1]),
                       tuple(networks), device)


def model_file_ending(model_dir: Path, paths: Paths, dataset_name: str) -> str | None:
    """The training images' file ending: the model folder's, else the preprocessed dataset's
    ``dataset.json``; None when neither is there (any supported ending is accepted then)."""
    for candidate in (Path(model_dir) / DATASET_FILE,
                      paths.preprocessed / dataset_name / DATASET_FILE):
        try:
            ending = read_json(candidate).get("file_ending")
        except (OSError, ValueError, AttributeError):
            continue
        if ending in SUPPORTED_ENDINGS:
            return ending
    return None

