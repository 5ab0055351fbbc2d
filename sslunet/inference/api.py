"""``sslunet_predict`` as a library call: segment a folder of raw images with a trained model.

Pipeline per case (the same functions as training, so prediction matches validation): read and
verify the channel files -> :func:`~sslunet.preprocessing.preprocessor.preprocess_case` ->
sliding window per fold (Gaussian weighting, mirroring TTA, tiles batched on the device; 2d
configurations slice by slice) -> ensemble -> revert the preprocessing -> argmax -> write with
the input's exact geometry.

Folds: their logits are averaged, resampled to the original grid, then turned into
probabilities, as nnU-Net v2's predictor does (an exported model predicts the same masks in
nnU-Net). Ensembles of model folders (``-m A B``, ``sslunet_find_best``) average the members'
probabilities, as ``nnUNetv2_ensemble``. ``save_probabilities`` keeps them (original geometry).

Three stages overlap: a reader thread reads and preprocesses the next case while the network
predicts the current one, and exports (resampling back, argmax, compressing the NIfTI) run in
worker processes (or one thread with ``num_processes=0``). Queues are bounded, worker errors
are re-raised in the caller, and every worker is stopped before :func:`predict_folder` returns
or raises.

Finding and loading the model (:func:`find_model`, :func:`checkpoint_files`,
:func:`load_model`, :func:`model_file_ending`) lives in :mod:`sslunet.inference.models`; the
names are re-exported here.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from sslunet.dataset.imageio import read_header
from sslunet.dataset.raw import SUPPORTED_ENDINGS, RawCase
from sslunet.dataset.verify import load_checked_case
from sslunet.errors import InputError
from sslunet.inference.models import (
    MODEL_CHECKPOINTS,
    LoadedModel,
    checkpoint_files,
    find_model,
    load_model,
    model_file_ending,
)
from sslunet.inference.ensemble import is_ensemble_folder, member_models, predict_ensemble
from sslunet.inference.postprocessing import PostprocessingPlan, describe, model_postprocessing
from sslunet.inference.predictor import (
    export_logits,
    inference_config,
    network_predictor,
    predict_logits,
)
from sslunet.inference.sliding_window import InferenceConfig
from sslunet.paths import Paths
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.preprocessor import preprocess_case, target_spacing_for
from sslunet.preprocessing.resampling import checked_new_shape
from sslunet.preprocessing.storage import CaseProperties
from sslunet.utils.acceleration import accelerate
from sslunet.utils.device import resolve_device
from sslunet.utils.processes import die_with_parent

# Endings accepted when the model does not record its dataset's file ending: single-file formats.
FALLBACK_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")
# Header+data formats cannot be renamed atomically as one file: write their single-file twin.
OUTPUT_ENDING = {".mhd": ".mha", ".nhdr": ".nrrd"}
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


@dataclass(frozen=True)
class PredictOptions:
    """What ``sslunet_predict`` was asked to do (see ``sslunet/cli/predict.py`` for help)."""

    input_dir: Path
    output_dir: Path
    dataset: str | None = None
    model: Path | None = None
    folds: tuple[str, ...] | None = None  # None: every fold with the chosen checkpoint
    checkpoint: str = "final"
    step_size: float = 0.5
    tta: bool = True
    save_probabilities: bool = False
    overwrite: bool = False
    device: str = "auto"
    num_processes: int = 2  # export worker processes; 0 exports in one background thread
    progress: bool = True
    postprocessing: bool = True  # apply the model's postprocessing.json when it has one
    # more model folders whose probabilities are averaged with ``model``'s (an ensemble); an
    # ensemble folder written by sslunet_find_best as ``model`` names its members itself
    ensemble: tuple[Path, ...] = ()
    compile: str = "off"  # torch.compile the networks (auto: on CUDA); see utils/acceleration
    channels_last: bool = False
    amp: bool = True  # mixed precision where native: fp16 on CUDA, bf16 on CPUs with AMX


@dataclass(frozen=True)
class InputCase:
    case_id: str
    images: tuple[Path, ...]  # one file per channel, channel order
    ending: str



@dataclass(frozen=True)
class PredictionSummary:
    output_dir: Path
    predicted: tuple[str, ...]
    skipped: tuple[str, ...]  # outputs already present (no ``overwrite``)
    model: LoadedModel | None  # None for an ensemble (each member loads its own)


# ------------------------------------------------------------------------- input listing
def check_folders(input_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    """Resolved ``(input, output)``; the output must not be the input or lie inside it."""
    inp, out = Path(input_dir).resolve(), Path(output_dir).resolve()
    if inp.is_file():
        raise InputError("is a file; -i takes the folder that holds the images", input_dir)
    if not inp.is_dir():
        raise InputError("input folder does not exist", input_dir)
    if out == inp or inp in out.parents:
        raise InputError("output folder must not be the input folder or lie inside it",
                         output_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", output_dir)
    return inp, out


def _image_files(folder: Path, endings: Sequence[str]) -> Iterator[tuple[Path, str, str]]:
    """``(file, stem, ending)`` of every visible entry with one of ``endings`` (a folder named
    like an image is listed too: reading it is refused with its name, not skipped silently)."""
    for f in sorted(Path(folder).iterdir()):
        if f.name.startswith("."):
            continue
        for ending in sorted(endings, key=len, reverse=True):  # ".nii.gz" wins over ".gz"
            if f.name.endswith(ending) and len(f.name) > len(ending):
                yield f, f.name[: -len(ending)], ending
                break


def list_input_cases(folder: Path, num_channels: int, endings: Sequence[str]) -> list[InputCase]:
    """Group ``CASE_XXXX<ending>`` files (or plain ``CASE<ending>`` for 1 channel) by case.

    Raises:
        InputError: no images, missing or extra channels, mixed endings, plain names for a
            multi-channel model, or a case given both ways.
    """
    groups: dict[str, dict[int, Path]] = {}
    ending_of: dict[str, str] = {}
    for f, stem, ending in _image_files(folder, endings):
        m = _CHANNEL.match(stem)
        case, ch = (m["case"], int(m["ch"])) if m else (stem, -1)  # -1: plain file name
        if ending_of.setdefault(case, ending) != ending:
            raise InputError(f"case '{case}' mixes file endings {ending_of[case]} and {ending}", f)
        if ch < 0 and num_channels != 1:
            raise InputError(f"the model takes {num_channels} channels: name the files "
                             f"{case}_0000{ending} .. {case}_{num_channels - 1:04d}{ending}", f)
        chans = groups.setdefault(case, {})
        if chans and (ch < 0) != (-1 in chans):
            raise InputError("case is given both with and without a channel suffix",
                             f if ch < 0 else chans[-1])
        if chans.setdefault(ch, f) != f:
            raise InputError(f"channel {ch:04d} of case '{case}' is given twice", f)
    others = _other_endings(folder, endings)
    if not groups:
        found = f"; {_describe(others, endings)}" if others else ""
        raise InputError("no images found (expected CASE_0000" + "|".join(endings) + found + ")",
                         folder)
    if others:
        print(f"warning: {folder}: {_describe(others, endings)}", file=sys.stderr)
    cases = []
    for case, chans in sorted(groups.items()):
        if -1 in chans:
            cases.append(InputCase(case, (chans[-1],), ending_of[case]))
            continue
        extra = sorted(set(chans) - set(range(num_channels)))
        if extra:
            raise InputError(f"case '{case}' has channel {extra[0]:04d} but the model takes "
                             f"{num_channels} channel(s) (0000..{num_channels - 1:04d})",
                             chans[extra[0]])
        missing = [ch for ch in range(num_channels) if ch not in chans]
        if missing:
            raise InputError(f"channel {missing[0]:04d} of case '{case}' is missing (the model "
                             f"takes {num_channels} channels)",
                             Path(folder) / f"{case}_{missing[0]:04d}{ending_of[case]}")
        cases.append(InputCase(case, tuple(chans[ch] for ch in range(num_channels)),
                               ending_of[case]))
    return cases


def _other_endings(folder: Path, endings: Sequence[str]) -> list[Path]:
    """Visible files with a supported image ending that is not one of ``endings``."""
    return [f for f in sorted(Path(folder).iterdir())
            if not f.name.startswith(".") and not f.name.endswith(tuple(endings))
            and any(f.name.endswith(e) and len(f.name) > len(e) for e in SUPPORTED_ENDINGS)]


def _describe(others: list[Path], endings: Sequence[str]) -> str:
    found = sorted({next(e for e in sorted(SUPPORTED_ENDINGS, key=len, reverse=True)
                         if f.name.endswith(e)) for f in others})
    return (f"{len(others)} file(s) ending in {', '.join(found)} are ignored: the model reads "
            f"{'|'.join(endings)} (e.g. {others[0].name})")


def check_headers(cases: Iterable[InputCase], plans: Plans | None = None,
                  config: ConfigurationPlan | None = None) -> None:
    """Check every image up front, so a bad file stops the run before any output.

    Checks that each file is complete (a truncated ``.nii.gz`` is found here) with a plausible
    spacing, one 2D/3D scalar image per file, equal geometry of a case's channels and, given
    ``plans`` and ``config``, a size that resampling to the model's spacing can handle (what
    remains for the full read: non-finite values).
    """
    for case in cases:
        first = None
        for path in case.images:
            geometry = read_header(path)
            dim, comps = len(geometry.size), geometry.components
            if dim not in (2, 3) or comps != 1:
                raise InputError(f"{dim}D image with {comps} component(s) per voxel: each "
                                 "CASE_XXXX file must hold one 2D or 3D scalar image", path)
            if plans is not None and config is not None:
                fwd = plans.transpose_forward
                shape = tuple(reversed(geometry.size))
                shape_t = tuple(((1,) * (3 - dim) + shape)[a] for a in fwd)
                spacing_t = tuple(geometry.array_spacing[a] for a in fwd)
                checked_new_shape(shape_t, spacing_t, target_spacing_for(config, spacing_t),
                                  f"case '{case.case_id}' at the model's {config.name} "
                                  "spacing", path)
            diff = [] if first is None else first.differences(geometry)
            if diff:
                raise InputError(f"channel geometry differs from {case.images[0].name}: "
                                 + "; ".join(diff), path)
            first = first or geometry


def output_files(case: InputCase, output_dir: Path, probabilities: bool
                 ) -> tuple[Path, Path | None]:
    """``(label map, probabilities .npz or None)`` of a case."""
    ending = OUTPUT_ENDING.get(case.ending, case.ending)
    npz = output_dir / f"{case.case_id}.npz" if probabilities else None
    return output_dir / f"{case.case_id}{ending}", npz


# ------------------------------------------------------------------------- per-case steps
def read_case(case: InputCase, plans: Plans, config: ConfigurationPlan
              ) -> tuple[InputCase, np.ndarray, CaseProperties]:
    """Read, verify and preprocess one case: ``(case, data (C, *shape_t) float32, props)``."""
    raw = RawCase(case.case_id, "imagesTs", case.images, None)
    data, _, geometry = load_checked_case(raw, None)
    data, _, props = preprocess_case(data, None, geometry, plans, config, case.case_id,
                                     "imagesTs")
    return case, data, props


# ------------------------------------------------------------------------- pipeline
def _prefetch(executor: Executor, fn: Callable, items: Sequence, depth: int) -> Iterator:
    """``fn(item)`` for each item, in order, computed up to ``depth`` items ahead."""
    queue: deque[Future] = deque(executor.submit(fn, x) for x in items[:depth])
    rest = iter(items[depth:])
    try:
        while queue:
            result = queue.popleft().result()
            nxt = next(rest, None)
            if nxt is not None:
                queue.append(executor.submit(fn, nxt))
            yield result
    finally:
        for f in queue:
            f.cancel()


def _make_exporter(num_processes: int) -> Executor:
    if num_processes <= 0:
        return ThreadPoolExecutor(1, thread_name_prefix="sslunet-export")
    # spawn, not fork: this process runs torch (and maybe CUDA) threads that a fork would copy
    # in an arbitrary state; workers then only run numpy, scipy and SimpleITK
    return ProcessPoolExecutor(num_processes, mp_context=get_context("spawn"),
                               initializer=_init_export_worker, initargs=(os.getpid(),))


def _init_export_worker(parent_pid: int) -> None:
    # Ctrl-C is handled by the parent, which lets running exports finish (their writes are
    # atomic anyway) and stops the pool; workers would otherwise each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a parent killed outright (kill -9) cannot stop the pool: the workers go with it
    die_with_parent(parent_pid)


def _collect(pending: deque[Future], bar: tqdm, keep: int) -> None:
    """Wait until at most ``keep`` exports are pending; re-raise any export's error."""
    while pending and (len(pending) > keep or pending[0].done()):
        pending.popleft().result()
        bar.update()


def _inference(config: ConfigurationPlan, opts: PredictOptions, device: torch.device
               ) -> InferenceConfig:
    return inference_config(config, opts.step_size, opts.tta, device)


def _run_pipeline(cases: list[InputCase], model: LoadedModel, opts: PredictOptions,
                  output_dir: Path, post: PostprocessingPlan | None) -> None:
    config, plans = model.config, model.plans
    inference = _inference(config, opts, model.device)
    predictors = [network_predictor(accelerate(n, model.device, opts.compile, opts.channels_last),
                                    model.device, opts.amp) for n in model.networks]
    reader = ThreadPoolExecutor(1, thread_name_prefix="sslunet-read")
    exporter = _make_exporter(opts.num_processes)
    pending: deque[Future] = deque()
    bar = tqdm(total=len(cases), desc="predict", unit="case", disable=not opts.progress)
    try:
        read = partial(read_case, plans=plans, config=config)
        for case, data, props in _prefetch(reader, read, cases, depth=2):
            logits = predict_logits(predictors, data, config, plans.num_classes,
                                    inference, model.device)
            out_file, npz = output_files(case, output_dir, opts.save_probabilities)
            # export_logits is top level, so worker processes can unpickle the call
            pending.append(exporter.submit(export_logits, logits, props, plans, config,
                                           out_file, npz, post))
            _collect(pending, bar, keep=max(1, opts.num_processes) + 1)
        _collect(pending, bar, keep=0)
    finally:
        for f in pending:
            f.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        exporter.shutdown(wait=True, cancel_futures=True)
        bar.close()


def predict_folder(paths: Paths, opts: PredictOptions) -> PredictionSummary:
    """Predict with one model, or average an ensemble's probabilities (see :func:`_predict`)."""
    members = [Path(m) for m in ((opts.model,) if opts.model else ()) + tuple(opts.ensemble)]
    post = None
    if opts.model is not None and is_ensemble_folder(opts.model):
        post = model_postprocessing(opts.model) if opts.postprocessing else None
        members = member_models(opts.model) + members[1:]
    if len(members) < 2:
        return _predict(paths, opts)
    check_folders(opts.input_dir, opts.output_dir)
    print(f"ensemble of {len(members)} models: " + ", ".join(m.name for m in members),
          file=sys.stderr)
    predicted, skipped = predict_ensemble(opts, members, post, partial(_predict, paths))
    return PredictionSummary(Path(opts.output_dir), tuple(predicted), tuple(skipped), None)


def _predict(paths: Paths, opts: PredictOptions) -> PredictionSummary:
    """Predict every case of ``opts.input_dir`` into ``opts.output_dir``.

    Cases whose outputs exist are skipped unless ``opts.overwrite``. Bad input is an
    :class:`InputError`; whatever file names and headers reveal (model, folds, folders,
    channels, unreadable headers, channel geometry) is found before the first output is
    written, and so is a truncated or corrupt compressed file, an implausible spacing or an
    image too large to resample to the model's spacing. Only non-finite voxel values (NaN,
    inf) stop the run at that case, keeping the outputs already finished.

    Returns:
        Which cases were predicted and which skipped, and the model used.
    """
    input_dir, output_dir = check_folders(opts.input_dir, opts.output_dir)
    if opts.checkpoint not in MODEL_CHECKPOINTS:
        raise InputError(f"unknown checkpoint {opts.checkpoint!r} (final or best)")
    if opts.num_processes < 0:
        raise InputError("-np must be >= 0")
    model_dir, files = checkpoint_files(find_model(paths, opts.dataset, opts.model), opts.folds,
                                        opts.checkpoint)
    device = resolve_device(opts.device)
    model = load_model(model_dir, files, device)
    _inference(model.config, opts, device)  # a bad step size fails here, before any output
    post = model_postprocessing(model_dir) if opts.postprocessing else None  # ... a bad plan too
    ending = model_file_ending(model_dir, paths, model.plans.dataset_name)
    cases = list_input_cases(input_dir, model.plans.num_input_channels,
                             (ending,) if ending else FALLBACK_ENDINGS)
    todo = [c for c in cases if opts.overwrite
            or not all(p is None or p.exists()
                       for p in output_files(c, output_dir, opts.save_probabilities))]
    check_headers(todo, model.plans, model.config)
    folds = ", ".join(f.parent.name for f in files)
    print(f"model {model_dir} ({model.config.name}, {folds}, checkpoint {opts.checkpoint}); "
          f"device {device}; TTA {'on' if opts.tta else 'off'}; {len(todo)} of {len(cases)} "
          "case(s) to predict", file=sys.stderr)
    print(describe(post, model.plans.labels) if post is not None else "post-processing: "
          + ("off" if not opts.postprocessing else "none stored with the model"), file=sys.stderr)
    if todo:
        torch.backends.cudnn.benchmark = device.type == "cuda"
        output_dir.mkdir(parents=True, exist_ok=True)
        _run_pipeline(todo, model, opts, output_dir, post)
    done = {c.case_id for c in todo}
    return PredictionSummary(output_dir, tuple(c.case_id for c in todo),
                             tuple(c.case_id for c in cases if c.case_id not in done), model)
