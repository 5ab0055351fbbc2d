"""Bad image data and ``dataset.json`` through every command that reads them.

Each class of bad input (truncated files, implausible spacing, ``dataset.json`` rules, the
smaller listing problems) is run through the real CLIs in subprocesses (``sslunet_plan``,
``sslunet_predict``, ``sslunet_evaluate``) and must end with exit status 2, a last stderr line
``error: <the file>: <the problem>``, no traceback, no diagnostics of the image libraries, and
the user's folders byte-for-byte unchanged (nothing written into them, no output created).

All subprocesses are started once, a few at a time, by the module fixture ``runs`` (each is
mostly interpreter and torch start-up); the tests then check their results class by class.
A few rules that need no CLI round trip are checked in process at the end.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.dataset.imageio import Geometry, check_geometry, read_array, read_header
from sslunet.dataset.raw import load_raw_dataset
from sslunet.errors import InputError
from sslunet.paths import Paths
from sslunet.planning.api import PlanOptions, plan_and_preprocess
from sslunet.preprocessing.resampling import checked_new_shape
from tests.helpers.cli import Probe, check_probes, run_probes
from tests.helpers.datasets import make_case, plan_dataset, write_image, write_raw_dataset
from tests.helpers.models import save_fake_model

DS = "Dataset001_Toy"
SHAPE = (4, 12, 12)
NOISE = ("Traceback", "HDF5", "MetaImage", "sitk::", "ITK")  # never on screen for bad input


# --------------------------------------------------------------------------- helpers
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def rewrite(path: Path, array=None, dtype=None, **geometry) -> None:
    """Rewrite an image with other voxels, type or geometry (default: its own voxels)."""
    if array is None:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    write_image(path, array if dtype is None else array.astype(dtype), **geometry)


def edit_meta(root: Path, **changes) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


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
def test_truncated_images_are_refused_by_every_command(runs):
    _check_class(runs, "truncated")


def test_implausible_spacing_is_refused_before_any_work(runs):
    _check_class(runs, "spacing")


def test_dataset_json_problems_are_named(runs):
    _check_class(runs, "dataset.json")
    # the 65539 of a uint32 label map is not "non-integer"
    assert "non-integer" not in runs["dataset.json/label value 65539"].result.stderr


def test_listing_problems_are_named(runs):
    _check_class(runs, "listing")
    assert "2 case(s) predicted" in runs["listing/predict ignores other endings"].result.stdout


# --------------------------------------------------------------------------- in process
def _nifti_bytes(tmp_path: Path) -> bytes:
    path = write_image(tmp_path / "whole.nii.gz", make_case(SHAPE)[0][0])
    return gzip.decompress(path.read_bytes())


@pytest.mark.parametrize("variant", ["nii cut", "gzip of a cut nii", "bit flip", "mha cut"])
def test_incomplete_files_in_other_forms(tmp_path, variant):
    raw = _nifti_bytes(tmp_path)
    if variant == "nii cut":
        path = tmp_path / "x.nii"
        path.write_bytes(raw[:-10])
    elif variant == "gzip of a cut nii":  # a complete gzip stream, too little data inside
        path = tmp_path / "x.nii.gz"
        path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    elif variant == "bit flip":
        path = tmp_path / "x.nii.gz"
        data = bytearray(gzip.compress(raw))
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path = write_image(tmp_path / "x.mha", make_case(SHAPE)[0][0])
        truncate(path, 0.8)
    with pytest.raises(InputError, match="truncated|corrupt") as err:
        read_array(path)
    assert err.value.path == str(path)


def test_complete_variants_are_accepted(tmp_path):
    raw = _nifti_bytes(tmp_path)
    expected = read_array(tmp_path / "whole.nii.gz")[0]
    forms = {"plain.nii": raw,
             "two_members.nii.gz": gzip.compress(raw[:500]) + gzip.compress(raw[500:]),
             "uncompressed_named.nii.gz": raw,
             "trailing_zeros.nii.gz": gzip.compress(raw) + bytes(64)}
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
        np.testing.assert_array_equal(read_array(tmp_path / name)[0], expected)
        read_header(tmp_path / name)


@pytest.mark.parametrize("spacing, ok", [
    ((1.0, 1.0, 999.0), True), ((1e-3, 1.0, 1e3), True), ((0.0, 1.0, 1.0), False),
    ((-1.0, 1.0, 1.0), False), ((float("nan"), 1.0, 1.0), False),
    ((float("inf"), 1.0, 1.0), False), ((1.0, 1.0, 1001.0), False)])
def test_spacing_range(spacing, ok):
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), (4, 4, 4))
    if ok:
        check_geometry(geometry, Path("x.nii.gz"))
    else:
        with pytest.raises(InputError, match="0.001 to 1000 mm"):
            check_geometry(geometry, Path("x.nii.gz"))


def test_spacing_far_from_the_others_is_refused_at_verify(raw_dataset):
    root = raw_dataset(n_labelled=3, shape=SHAPE)
    for sub in ("imagesTr/case_002_0000.nii.gz", "labelsTr/case_002.nii.gz"):
        rewrite(root / sub, spacing=(1e-3, 1e-3, 1e-3))  # in range, but 1000x the others
    with pytest.raises(InputError, match="median spacing") as err:
        plan_and_preprocess(root, root.parent / "pre", PlanOptions(
            num_processes=1, progress=False, verify_only=True))
    assert err.value.path.endswith("imagesTr/case_002_0000.nii.gz")


@pytest.mark.parametrize("change, message", [
    ({"labels": {"left": 1, "right": 2}}, "background with value 0"),
    ({"labels": {"background": 0, "left": 1, "right": 1}}, "same value 1"),
    ({"labels": {"background": 0, "left": -1}}, "non-negative"),
    ({"labels": {"background": 0, "left": [1, 2]}}, "region labels"),
    ({"labels": {"background": 0, **{f"l{i}": i for i in range(1, 200)}}}, "at most 128"),
    ({"channel_names": {}}, "non-empty"),
    ({"channel_names": {"0": ""}}, "non-empty name"),
    ({"numTraining": True}, "numTraining"),
])
def test_dataset_json_rules(raw_dataset, change, message):
    root = raw_dataset(n_labelled=2, shape=SHAPE)
    edit_meta(root, **change)
    with pytest.raises(InputError, match=message) as err:
        load_raw_dataset(root)
    assert err.value.path.endswith("dataset.json")


def test_resampling_guard():
    # a crop box thinner than one target voxel is kept as one voxel, the image is fine
    assert checked_new_shape((1, 10, 10), (1.0, 1.0, 1.0), (5.0, 1.0, 1.0), "c", None,
                             (40, 10, 10)) == (1, 10, 10)
    with pytest.raises(InputError, match="an empty axis") as err:  # the whole image vanishes
        checked_new_shape((4, 10, 10), (1e-3, 1.0, 1.0), (1.0, 1.0, 1.0), "c", "x.nii.gz")
    assert err.value.path == "x.nii.gz"
    with pytest.raises(InputError, match="limit"):  # 3000^3 voxels: an absurd allocation
        checked_new_shape((30, 30, 30), (100.0, 100.0, 100.0), (1.0, 1.0, 1.0), "c", "x.nii.gz")
