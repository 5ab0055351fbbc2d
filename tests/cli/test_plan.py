"""``sslunet_plan`` end to end, through ``python -m sslunet.cli.plan`` in a subprocess.

Bad input: exit status 2, exactly one ``error:`` line on stderr naming the offending file, no
traceback, the raw folder byte-for-byte unchanged and nothing written to the preprocessed
folder (the CLI-probe harness of :mod:`tests.helpers.cli`). Resumability: finished cases are
skipped, ``--overwrite`` and plan edits redo exactly what they should (checked through file
modification times, reset to a fixed past time before each rerun so that "unchanged" cannot
pass by accident of timing). A few refusals are checked in process, through ``main(argv)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.cli.plan import main
from sslunet.dataset.raw import load_raw_dataset
from sslunet.planning.fingerprint import extract_fingerprint
from sslunet.planning.planner import plan_experiment
from sslunet.plans import Plans
from sslunet.preprocessing.api import preprocess_dataset
from sslunet.preprocessing.storage import load_case
from tests.helpers.cli import Probe, check_probe, refused, run_cli, run_probes, snapshot
from tests.helpers.datasets import oblique_direction, write_image, write_raw_dataset
from tests.helpers.paths import REPO, real_dataset

OLD = 1_000_000_000  # a fixed past mtime (2001) stamped on outputs before a rerun
FULL = "sslunetPlans_3d_fullres"
TWO_D = "sslunetPlans_2d"

# --------------------------------------------------------------------------- helpers


def run_plan(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli("plan", args, home, timeout=timeout)


def preprocessed_count(result) -> int:
    m = re.search(r"preprocessed (\d+) case\(s\)", result.stderr)
    assert m, result.stderr
    return int(m[1])


def age_outputs(folder: Path) -> None:
    for p in folder.rglob("*"):
        os.utime(p, ns=(OLD * 10 ** 9, OLD * 10 ** 9), follow_symlinks=False)


def fresh(folder: Path) -> set[str]:
    """Names of files under ``folder`` written since :func:`age_outputs`."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and p.stat().st_mtime_ns != OLD * 10 ** 9}


def read_meta(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def write_meta(root: Path, meta) -> None:
    (root / "dataset.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))


def relabel(root: Path, case: str, array=None, **geometry) -> None:
    """Rewrite ``labelsTr/<case>`` (default: its own voxels) with other geometry."""
    path = root / "labelsTr" / f"{case}.nii.gz"
    if array is None:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    write_image(path, array, **geometry)


# --------------------------------------------------------------------------- bad input


def _missing_json(r):
    (r / "dataset.json").unlink()
    return "dataset.json"


def _bad_json(r):
    write_meta(r, '{"channel_names": {"0": "T2"}, "labels": ')
    return "dataset.json"


def _missing_key(r):
    meta = read_meta(r)
    del meta["labels"]
    write_meta(r, meta)
    return "dataset.json"


def _labels_gap(r):
    meta = read_meta(r)
    meta["labels"] = {"background": 0, "left": 1, "right": 3}
    write_meta(r, meta)
    return "dataset.json"


def _label_without_image(r):
    (r / "imagesTr" / "case_001_0000.nii.gz").unlink()
    return "labelsTr/case_001.nii.gz"


def _size(r):
    relabel(r, "case_001", np.zeros((4, 12, 13), np.uint8))
    return "labelsTr/case_001.nii.gz"


def _spacing(r):
    relabel(r, "case_001", spacing=(1.0, 1.0, 2.5))
    return "labelsTr/case_001.nii.gz"


def _origin(r):
    relabel(r, "case_000", origin=(0.0, 0.0, 4.0))
    return "labelsTr/case_000.nii.gz"


def _direction(r):
    relabel(r, "case_001", direction=oblique_direction(20.0))
    return "labelsTr/case_001.nii.gz"


def _unknown_label(r):
    relabel(r, "case_001", np.full((4, 12, 12), 5, np.uint8))
    return "labelsTr/case_001.nii.gz"


def _corrupt(r):
    (r / "imagesTr" / "case_001_0000.nii.gz").write_bytes(os.urandom(3000))
    return "imagesTr/case_001_0000.nii.gz"


def _empty(r):
    for sub in ("imagesTr", "labelsTr"):
        shutil.rmtree(r / sub)
        (r / sub).mkdir()
    meta = read_meta(r)
    meta["numTraining"] = 0
    write_meta(r, meta)
    return "Dataset001_Toy"


def _missing_channel(r):
    (r / "imagesTr" / "case_002_0001.nii.gz").unlink()
    return "imagesTr/case_002_0001.nii.gz"


def _nan(r):
    image = np.ones((4, 12, 12), np.float32)
    image[2, 5, 5] = np.nan
    write_image(r / "imagesTr" / "case_001_0000.mha", image)
    return "imagesTr/case_001_0000.mha"


SMALL = {"n_labelled": 3, "shape": (4, 12, 12)}
# problem -> (dataset keywords, mutation returning the offending file)
BAD_INPUTS = {
    "missing dataset.json": (SMALL, _missing_json),
    "invalid JSON": (SMALL, _bad_json),
    "missing key": (SMALL, _missing_key),
    "labels not consecutive": (SMALL, _labels_gap),
    "label without image": (SMALL, _label_without_image),
    "missing image channel": ({**SMALL, "n_channels": 2}, _missing_channel),
    "label of different size": (SMALL, _size),
    "label of different spacing": (SMALL, _spacing),
    "label of different origin": (SMALL, _origin),
    "label of different direction": (SMALL, _direction),
    "label value not in dataset.json": (SMALL, _unknown_label),
    # .mha: ITK's NIfTI reader turns NaN into 0 itself, so NIfTI cannot carry one to us
    "non-finite voxels": ({**SMALL, "file_ending": ".mha"}, _nan),
    "corrupt image": (SMALL, _corrupt),
    "empty dataset": (SMALL, _empty),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, Probe]:
    """Every bad input, run through the CLI (three at a time: each run is mostly start-up)."""
    base = tmp_path_factory.mktemp("bad")
    probes = {}
    for i, (problem, (kwargs, mutate)) in enumerate(BAD_INPUTS.items()):
        root = write_raw_dataset(base / f"raw{i}", **kwargs)
        offender = mutate(root)
        home = base / f"home{i}"
        probes[problem] = Probe("plan", ["-d", root, "-np", "2"], home, (offender,),
                                keep=[root], absent=[home / "preprocessed" / root.name],
                                own=True)
    run_probes(probes.values(), workers=3)
    return probes


@pytest.mark.slow
@pytest.mark.parametrize("problem", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(bad_runs, problem):
    line = check_probe(bad_runs[problem])
    if problem == "non-finite voxels":
        assert "non-finite" in line


def test_unknown_and_ambiguous_names(tmp_path, raw_dataset):
    raw_dataset(name="Dataset001_Toy", n_labelled=1, shape=(4, 8, 8))
    raw_dataset(name="Dataset011_Toy", n_labelled=1, shape=(4, 8, 8))
    raw_dataset(name="Dataset002_Other", n_labelled=1, shape=(4, 8, 8))
    before = snapshot(tmp_path / "raw")
    result = run_plan(tmp_path, "-d", "Prostate")
    line = refused(result, "Prostate")
    assert "Dataset001_Toy, Dataset002_Other, Dataset011_Toy" in line
    result = run_plan(tmp_path, "-d", "Toy")
    line = refused(result, "ambiguous")
    assert "Dataset001_Toy" in line and "Dataset011_Toy" in line
    assert snapshot(tmp_path / "raw") == before
    assert not (tmp_path / "preprocessed").exists()
    # an unambiguous ID works
    result = run_plan(tmp_path, "-d", "2", "-c", "3d_fullres", "--no-preprocess")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "preprocessed" / "Dataset002_Other" / "plans.json").is_file()


def test_verify_only_writes_nothing(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=3, n_test=1, shape=(4, 12, 12))
    before = snapshot(root)
    result = run_plan(tmp_path / "home", "-d", str(root), "--verify-only")
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stderr
    assert not (tmp_path / "home" / "preprocessed").exists()
    assert snapshot(root) == before
    # the test images are verified too
    (root / "imagesTs" / "ts_000_0000.nii.gz").write_bytes(b"not an image")
    result = run_plan(tmp_path / "home", "-d", str(root), "--verify-only")
    refused(result, "imagesTs/ts_000_0000.nii.gz")


def test_broken_hand_edits_fail_cleanly(tmp_path, raw_dataset):
    root = raw_dataset(**SMALL)
    home = tmp_path / "home"
    args = ("-d", str(root), "-c", "3d_fullres", "--no-preprocess")
    assert run_plan(home, *args).returncode == 0
    out = home / "preprocessed" / root.name
    plans = json.loads((out / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["spacingg"] = [1, 1, 1]
    for name, content in (("plans.json", "{"), ("plans.json", json.dumps(plans)),
                          ("splits.json", '[{"train": []}]')):
        good = (out / name).read_text()
        (out / name).write_text(content)
        refused(run_plan(home, *args), name)
        if name == "splits.json":  # --overwrite replaces whatever was there
            assert run_plan(home, *args, "--overwrite").returncode == 0
            assert json.loads((out / name).read_text()) == json.loads(good)
        (out / name).write_text(good)


def test_target_spacing_out_of_range_is_refused_with_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["-d", "anything", "--target-spacing", "8", "0", "2.5"])
    assert e.value.code == 2
    assert "--target-spacing values must be between" in capsys.readouterr().err


def test_preset_resenc_m_plans_the_residual_network_with_a_larger_budget(
        tmp_path, raw_dataset, monkeypatch, capsys):
    """``--preset resenc_m`` (in process): the plans name the preset and the residual-encoder
    network with nnU-Net's block counts; on a tiny dataset its batch may cover the whole
    dataset (ResEnc presets drop the 5 % cap), so it plans larger batches than ``plain``;
    ``--preset resenc_l`` records its 24 GB budget; a bad preset is argparse's exit 2."""
    from tests.helpers.cli import run_main

    root = raw_dataset(n_labelled=4, shape=(8, 32, 32))
    monkeypatch.setenv("SSLUNET_HOME", str(tmp_path / "home"))
    plans_path = tmp_path / "home" / "preprocessed" / root.name / "plans.json"
    base = ["-d", str(root), "-c", "2d", "3d_fullres", "--no-preprocess", "-np", "1",
            "--overwrite"]
    got = {}
    for preset in ("plain", "resenc_m", "resenc_l"):
        code, out, err = run_main(main, [*base, "--preset", preset], capsys)
        assert code == 0, err
        got[preset] = Plans.load(plans_path)
        net = "plain_unet" if preset == "plain" else "resenc_unet"
        assert f"{got[preset].plans_name} for {root.name} (network {net}, GPU memory" in out
    plain, m, big = got["plain"], got["resenc_m"], got["resenc_l"]
    assert (plain.plans_name, m.plans_name, big.plans_name) == (
        "sslunetPlans", "sslunetResEncMPlans", "sslunetResEncLPlans")
    assert (plain.gpu_memory_gb, m.gpu_memory_gb, big.gpu_memory_gb) == (8.0, 8.0, 24.0)
    for name, c in m.configurations.items():
        p = plain.configurations[name]
        assert p.network == "plain_unet" and c.network == "resenc_unet"
        assert c.n_conv_per_stage_encoder == (1, 3, 4, 6, 6, 6, 6)[:c.num_stages]
        assert c.n_conv_per_stage_decoder == (1,) * (c.num_stages - 1)
        assert c.patch_size == p.patch_size and c.data_identifier == p.data_identifier
        assert c.batch_size > p.batch_size, name
        assert c.vram_estimate * c.batch_size > p.vram_estimate * p.batch_size
    code, _, err = run_main(main, [*base, "--preset", "resenc_xl"], capsys)
    assert code == 2 and "invalid choice: 'resenc_xl'" in err


# --------------------------------------------------------------------------- outputs, resuming


def test_outputs_and_unlabeled_images(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=4, n_unlabeled=2, n_test=1, shape=(8, 32, 32))
    home = tmp_path / "home"
    result = run_plan(home, "-d", str(root), "-c", "2d", "3d_fullres")
    assert result.returncode == 0, result.stderr
    assert preprocessed_count(result) == 6  # test images only with --include-test
    assert "(0 already done)" in result.stderr
    out = home / "preprocessed" / root.name
    for name in ("fingerprint.json", "plans.json", "splits.json", "dataset.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "dataset.json").read_text()) == read_meta(root)
    assert sorted(p.name for p in (out / "gt_segmentations").iterdir()) == [
        f"case_{i:03d}.nii.gz" for i in range(4)]
    fp = json.loads((out / "fingerprint.json").read_text())
    assert {c["case_id"]: c["source"] for c in fp["cases"]} == {
        **{f"case_{i:03d}": "imagesTr" for i in range(4)},
        **{f"unl_{i:03d}": "imagesUnlabeled" for i in range(2)}}
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(v for s in splits for v in s["val"]) == [f"case_{i:03d}" for i in range(4)]
    for config in (TWO_D, FULL):
        folder = out / config
        assert not (folder / "unl_000_seg.npy").exists()
        assert (folder / "case_000_seg.npy").is_file()
        props = json.loads((folder / "unl_001.json").read_text())
        assert props["source"] == "imagesUnlabeled" and props["has_seg"] is False
        assert not (folder / "ts_000.json").exists()
        data = np.load(folder / "unl_001.npy", mmap_mode="r")
        assert data.shape == (1, *props["shape_after_resample"])
    result = run_plan(home, "-d", str(root), "-c", "3d_fullres", "--include-test")
    assert preprocessed_count(result) == 1 and "(6 already done)" in result.stderr
    props = json.loads((out / FULL / "ts_000.json").read_text())
    assert props["source"] == "imagesTs"
    # the reference labels of test images stay out of the preprocessed folder
    assert not (out / FULL / "ts_000_seg.npy").exists() and props["has_seg"] is False


def test_rerun_skips_and_overwrite_redoes(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=4, shape=(8, 32, 32))
    home = tmp_path / "home"
    out = home / "preprocessed" / root.name
    args = ("-d", str(root), "-c", "2d", "3d_fullres")
    assert preprocessed_count(run_plan(home, *args)) == 4
    age_outputs(out)
    result = run_plan(home, *args)
    assert result.returncode == 0 and preprocessed_count(result) == 0
    assert fresh(out / FULL) == fresh(out / TWO_D) == set()
    assert "plans.json" not in fresh(out) and "splits.json" not in fresh(out)
    result = run_plan(home, *args, "--overwrite")
    assert preprocessed_count(result) == 4
    expected = {f"case_{i:03d}{s}" for i in range(4) for s in (".npy", "_seg.npy", ".json")}
    assert fresh(out / FULL) == fresh(out / TWO_D) == expected
    assert "plans.json" in fresh(out)


def test_deleted_properties_and_leftover_temp_files_redo_only_those_cases(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=4, shape=(8, 32, 32))
    home = tmp_path / "home"
    out = home / "preprocessed" / root.name
    args = ("-d", str(root), "-c", "3d_fullres")
    assert preprocessed_count(run_plan(home, *args)) == 4
    folder = out / FULL
    (folder / "case_001.json").unlink()  # properties gone: not done
    # a run killed while writing case_003's data: only the temporary file exists
    (folder / "case_003.json").unlink()
    (folder / "case_003.npy").unlink()
    (folder / ".case_003.npy.tmp-xyz.npy").write_bytes(b"\x93NUMPY partial")
    age_outputs(out)
    result = run_plan(home, *args)
    assert preprocessed_count(result) == 2
    assert {f for f in fresh(folder) if not f.startswith(".")} == {
        f"case_{i}{s}" for i in ("001", "003") for s in (".npy", "_seg.npy", ".json")}
    data = np.load(folder / "case_003.npy")
    assert data.ndim == 4 and data.shape[0] == 1


def test_editing_plan_spacing_redoes_affected_cases(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=4, shape=(8, 32, 32))
    home = tmp_path / "home"
    out = home / "preprocessed" / root.name
    args = ("-d", str(root), "-c", "2d", "3d_fullres")
    assert preprocessed_count(run_plan(home, *args)) == 4
    plans = json.loads((out / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    plans["configurations"]["3d_fullres"]["spacing"] = [2.0, 1.0, 1.0]
    (out / "plans.json").write_text(json.dumps(plans))
    old_2d = np.load(out / TWO_D / "case_000.npy")
    age_outputs(out)
    result = run_plan(home, *args)
    assert preprocessed_count(result) == 4
    assert "keeping existing" in result.stderr
    assert json.loads((out / "plans.json").read_text()) == plans  # the edit is respected
    assert fresh(out / TWO_D) == set()  # the 2d configuration did not change
    np.testing.assert_array_equal(np.load(out / TWO_D / "case_000.npy"), old_2d)
    assert {f for f in fresh(out / FULL) if f.endswith(".json")} == {
        f"case_{i:03d}.json" for i in range(4)}
    props = json.loads((out / FULL / "case_000.json").read_text())
    assert props["target_spacing"] == [2.0, 1.0, 1.0]
    data = np.load(out / FULL / "case_000.npy")
    assert data.shape[1:] == tuple(props["shape_after_resample"])
    assert data.shape[1] == round(props["shape_after_crop"][0] / 2)


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_brats_two_channels(tmp_path):
    raw = real_dataset("Dataset004_BraTS6")
    home = tmp_path / "home"
    # the full run takes ~15 s on 2 cores; plan through the CLI, preprocess 1 case here
    result = run_plan(home, "-d", os.path.relpath(raw, REPO), "-c", "3d_fullres",
                      "--no-preprocess")  # ../shared/data/... as a user would type it
    assert result.returncode == 0, result.stderr
    out = home / "preprocessed" / raw.name
    plans = Plans.load(out / "plans.json")
    assert plans.num_input_channels == 2 and set(plans.configurations) == {"3d_fullres"}
    full = plans.configurations["3d_fullres"]
    assert full.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert all(p % d == 0 for p, d in zip(full.patch_size, full.total_downsampling))
    ds = load_raw_dataset(raw)
    ds = dataclasses.replace(ds, cases=ds.cases[:1])
    assert preprocess_dataset(ds, plans, out, ("3d_fullres",), 1, progress=False) == 1
    data, seg, props = load_case(out / FULL, ds.cases[0].case_id)
    assert data.shape[0] == 2 and data.shape[1:] == seg.shape[1:]
    assert set(np.unique(seg)) <= {-1, 0, 1, 2, 3, 4}


@pytest.mark.realdata
def test_cmr_plan_from_real_files():
    ds = load_raw_dataset(real_dataset("Dataset002_CMR"))
    fp = extract_fingerprint(ds, num_processes=2, progress=False)
    assert len(fp.cases) == 35
    plans = plan_experiment(fp, configurations=("2d", "3d_fullres", "3d_lowres"))
    full, two_d = plans.configurations["3d_fullres"], plans.configurations["2d"]
    assert set(plans.configurations) == {"2d", "3d_fullres"}
    assert full.patch_size == (12, 256, 256)  # nnU-Net v2's plan for this dataset
    assert full.spacing == pytest.approx((7.99, 1.25, 1.25), abs=1e-4)
    assert two_d.patch_size == (256, 256)
