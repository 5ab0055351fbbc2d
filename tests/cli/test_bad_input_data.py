"""Bad image data and ``dataset.json`` through every command that reads them.

Each class of bad input (truncated files, implausible spacing, ``dataset.json`` rules, the
smaller listing problems) is run through the real CLIs in subprocesses (``sslunet_plan``,
``sslunet_predict``, ``sslunet_evaluate``) and must end with exit status 2, a last stderr line
``error: <the file>: <the problem>``, no traceback, no diagnostics of the image libraries, and
the user's folders byte-for-byte unchanged (nothing written into them, no output created).

All subprocesses are started once, a few at a time, by the module fixture ``runs`` (each is
mostly interpreter and torch start-up); the tests then check their results class by class,
with the CLI-probe harness of :mod:`tests.helpers.cli`. The rules that need no CLI round trip
are checked in process with the modules that apply them (tests/dataset/test_imageio.py,
test_raw.py, tests/planning/test_fingerprint.py, tests/preprocessing/test_resampling.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.paths import Paths
from tests.helpers.cli import Probe, check_probes, run_probes
from tests.helpers.damage import edit_meta, rewrite, truncate
from tests.helpers.datasets import make_case, plan_dataset, write_image, write_raw_dataset
from tests.helpers.models import save_fake_model


DS = "Dataset001_Toy"
SHAPE = (4, 12, 12)
NOISE = ("Traceback", "HDF5", "MetaImage", "sitk::", "ITK")  # never on screen for bad input


# --------------------------------------------------------------------------- helpers


def dataset(base: Path, name: str, **kwargs) -> Path:
    return write_raw_dataset(base / name, n_labelled=3, shape=SHAPE, **kwargs)


def image_folder(base: Path, name: str, n: int = 2, spacing=(1.0, 1.0, 1.0)) -> Path:
    """A folder of ``n`` one-channel prediction inputs ``in_00X_0000.nii.gz``."""
    folder = base / name
    for i in range(n):
        data, _ = make_case(SHAPE, 1, seed=100 + i)
        write_image(folder / f"in_{i:03d}_0000.nii.gz", data[0], spacing=spacing)
    return folder


def label_folder(base: Path, name: str, n: int = 2, spacing=(1.0, 1.0, 1.0)) -> Path:
    folder = base / name
    for i in range(n):
        _, seg = make_case(SHAPE, 1, seed=200 + i)
        write_image(folder / f"c_{i:03d}.nii.gz", seg.astype(np.uint8), spacing=spacing)
    return folder


# --------------------------------------------------------------------------- the runs


def _model(base: Path) -> tuple[Path, Path]:
    """``(home, model folder)``: a planned tiny dataset and a seeded random 2d model."""
    home = base / "home"
    paths = Paths.under(home)
    raw = write_raw_dataset(paths.raw, n_labelled=3, shape=SHAPE)
    plans = plan_dataset(raw, paths, ("2d",), preprocess=False)
    model_dir = paths.results / DS / "finetune" / "random__2d__all"
    save_fake_model(model_dir, plans, "2d", {"0": 1})
    return home, model_dir


def _scenarios(base: Path) -> dict[str, Probe]:
    home, model_dir = _model(base)
    empty_home = base / "empty_home"  # plan and evaluate need no model

    def probe(module: str, args: list, home: Path, inputs: list[Path], offender: str,
              words: tuple[str, ...], **kwargs) -> Probe:
        """The error (or warning) line names ``offender`` and ``words``; ``inputs`` stay
        byte-for-byte unchanged; no traceback nor image-library diagnostics."""
        return Probe(module, args, home, (offender, *words), keep=inputs, own=True,
                     noise=NOISE, **kwargs)

    def plan(root: Path, offender: str, *words: str, verify: bool = True) -> Probe:
        args = ["-d", root, "-np", "1"] + (["--verify-only"] if verify else ["-c", "2d"])
        return probe("plan", args, empty_home, [root], offender, words,
                     absent=[empty_home / "preprocessed"])

    def predict(inputs: Path, offender: str, *words: str, ok: bool = False) -> Probe:
        out = inputs.parent / f"{inputs.name}_out"
        args = ["-i", inputs, "-o", out, "-m", model_dir, "--device", "cpu", "-np", "0",
                "--disable-tta"]
        return probe("predict", args, home, [inputs], offender, words, ok=ok,
                     absent=[] if ok else [out])

    def evaluate(ref: Path, pred: Path, offender: str, *words: str, ok: bool = False,
                 extra: tuple = ()) -> Probe:
        out = base / f"summary_{len(s)}"  # one per scenario
        return probe("evaluate", ["-r", ref, "-p", pred, "-o", out, *extra], empty_home,
                     [ref.parent], offender, words, ok=ok, absent=[] if ok else [out])

    s: dict[str, Probe] = {}
    # ---- 1. truncated compressed images, in every command that reads images
    root = dataset(base, "trunc_verify")
    truncate(root / "imagesTr" / "case_001_0000.nii.gz")
    s["truncated/plan --verify-only"] = plan(root, "imagesTr/case_001_0000.nii.gz", "truncated")
    root = dataset(base, "trunc_plan")
    truncate(root / "labelsTr" / "case_002.nii.gz")
    s["truncated/plan (preprocessing)"] = plan(root, "labelsTr/case_002.nii.gz", "truncated",
                                                verify=False)
    inputs = image_folder(base / "trunc_predict", "in")
    truncate(inputs / "in_001_0000.nii.gz")
    s["truncated/predict"] = predict(inputs, "in_001_0000.nii.gz", "truncated")
    ref = label_folder(base / "trunc_eval", "ref")
    pred = label_folder(base / "trunc_eval", "pred")
    truncate(pred / "c_001.nii.gz", 0.7)
    s["truncated/evaluate"] = evaluate(ref, pred, "pred/c_001.nii.gz", "truncated")

    # ---- 4. implausible spacing
    accepted = "0.001 to 1000 mm"
    root = dataset(base, "tiny_spacing")
    for sub in ("imagesTr/case_001_0000.nii.gz", "labelsTr/case_001.nii.gz"):
        rewrite(root / sub, spacing=(1e-4, 1e-4, 1e-4))
    s["spacing/plan 1e-4"] = plan(root, "imagesTr/case_001_0000.nii.gz", accepted)
    inputs = image_folder(base / "huge_predict", "in", n=1, spacing=(1.0, 1.0, 1e7))
    s["spacing/predict 1e7"] = predict(inputs, "in_000_0000.nii.gz", accepted)
    ref = label_folder(base / "tiny_eval", "ref", spacing=(1e-4, 1.0, 1.0))
    pred = label_folder(base / "tiny_eval", "pred", spacing=(1e-4, 1.0, 1.0))
    s["spacing/evaluate 1e-4"] = evaluate(ref, pred, "/c_000.nii.gz", accepted)

    # ---- 7. dataset.json
    root = dataset(base, "labels_empty")
    edit_meta(root, labels={})
    s["dataset.json/labels {}"] = plan(root, "dataset.json", "'labels'", "non-empty")
    root = dataset(base, "labels_bool")
    edit_meta(root, labels={"background": 0, "left": True, "right": 2})
    s["dataset.json/boolean label"] = plan(root, "dataset.json", '"left" is true', "integers")
    root = dataset(base, "wrong_ending", file_ending=".mha")
    edit_meta(root, file_ending=".nii.gz")
    s["dataset.json/wrong file_ending"] = plan(root, "dataset.json", "'.nii.gz'", ".mha",
                                               "imagesTr/")
    root = dataset(base, "label_65539")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "case_001.nii.gz")))
    seg = seg.astype(np.uint32)
    seg[1, 5, 5] = 65539
    rewrite(root / "labelsTr" / "case_001.nii.gz", seg)
    s["dataset.json/label value 65539"] = plan(root, "labelsTr/case_001.nii.gz", "65539",
                                               "not listed in dataset.json")

    # ---- 10. smaller listing problems
    inputs = image_folder(base / "file_as_input", "in", n=1)
    s["listing/predict -i FILE"] = predict(inputs / "in_000_0000.nii.gz", "in_000_0000.nii.gz",
                                           "is a file")
    s["listing/predict -i FILE"].keep = [inputs]
    root = dataset(base, "folder_as_image")
    (root / "imagesUnlabeled" / "unl_000_0000.nii.gz").mkdir(parents=True)
    s["listing/folder named like an image"] = plan(root, "imagesUnlabeled/unl_000_0000.nii.gz",
                                                   "is a folder")
    inputs = image_folder(base / "other_endings", "in")
    data, _ = make_case(SHAPE, 1, seed=7)
    write_image(inputs / "in_009_0000.mha", data[0])
    s["listing/predict ignores other endings"] = predict(
        inputs, "1 file(s) ending in .mha are ignored", "in_009_0000.mha", ok=True)
    ref = label_folder(base / "unknown_label", "ref")
    pred = label_folder(base / "unknown_label", "pred")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / "c_001.nii.gz")))
    seg[0, 0, 0] = 5
    rewrite(pred / "c_001.nii.gz", seg)
    meta = base / "unknown_label" / "dataset.json"
    meta.write_text(json.dumps({"labels": {"background": 0, "left": 1, "right": 2}}))
    s["listing/evaluate unknown label value"] = evaluate(
        ref, pred, "pred/c_001.nii.gz", "[5]", ok=True, extra=("--dataset-json", meta))
    s["listing/evaluate -r FILE"] = evaluate(ref / "c_000.nii.gz", pred, "ref/c_000.nii.gz",
                                             "is a file")
    return s


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Probe]:
    base = tmp_path_factory.mktemp("bad_input_data")
    scenarios = _scenarios(base)
    # the slow (torch) runs first, so the quick ones fill the gaps
    run_probes(scenarios.values(), workers=3, first=lambda p: p.module == "predict")
    return scenarios


def _check_class(runs: dict[str, Probe], prefix: str) -> None:
    names = [n for n in runs if n.startswith(prefix + "/")]
    assert names
    check_probes(runs, names)


# --------------------------------------------------------------------------- the classes


@pytest.mark.slow
def test_truncated_images_are_refused_by_every_command(runs):
    _check_class(runs, "truncated")


@pytest.mark.slow
def test_implausible_spacing_is_refused_before_any_work(runs):
    _check_class(runs, "spacing")


@pytest.mark.slow
def test_dataset_json_problems_are_named(runs):
    _check_class(runs, "dataset.json")
    # the 65539 of a uint32 label map is not "non-integer"
    assert "non-integer" not in runs["dataset.json/label value 65539"].result.stderr


@pytest.mark.slow
def test_listing_problems_are_named(runs):
    _check_class(runs, "listing")
    assert "2 case(s) predicted" in runs["listing/predict ignores other endings"].result.stdout
