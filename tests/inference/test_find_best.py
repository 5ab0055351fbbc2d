"""Tests for sslunet.inference.find_best (``sslunet_find_best``): single models and ensembles
ranked on cross-validation predictions, the winner's post-processing stored."""

from __future__ import annotations

import json
import shutil

import numpy as np

from sslunet.cli.find_best import main
from sslunet.dataset.imageio import read_array, read_header, write_array
from sslunet.inference.ensemble import EnsembleSpec
from tests.helpers.cli import run_main
from tests.helpers.datasets import DATASET, tiny_home


def _fake_model(paths, name: str, flip: int, rng) -> None:
    """A model folder whose fold-0 validation predictions are the reference with class
    ``flip``'s voxels wrong in one half of each image (probabilities 0.6 for the wrong class);
    the other half is right with probability 0.9 (so two such models with different halves
    are right everywhere when averaged)."""
    pre = paths.preprocessed / DATASET
    model = paths.results / DATASET / "finetune" / name
    val = model / "fold_0" / "validation"
    val.mkdir(parents=True)
    shutil.copy(pre / "plans.json", model / "plans.json")
    shutil.copy(pre / "dataset.json", model / "dataset.json")
    for case in json.loads((pre / "splits.json").read_text())[0]["val"]:
        ref_file = pre / "gt_segmentations" / f"{case}.nii.gz"
        ref = read_array(ref_file, dtype=None)[0].astype(np.int64)
        probs = np.full((3, *ref.shape), 0.05, np.float32)
        np.put_along_axis(probs, ref[None], 0.9, axis=0)
        half = np.zeros(ref.shape, bool)
        half[..., : ref.shape[-1] // 2] = flip == 1
        half[..., ref.shape[-1] // 2:] = flip == 2
        wrong = half & (ref > 0)
        probs[:, wrong] = 0.2
        probs[0, wrong] = 0.6  # this model calls that part background
        probs /= probs.sum(0, keepdims=True)
        write_array(val / f"{case}.nii.gz", probs.argmax(0).astype(np.uint8), read_header(ref_file))
        np.savez_compressed(val / f"{case}.npz", probabilities=probs.astype(np.float16))


def test_the_ensemble_that_fixes_both_models_wins(tmp_path_factory, tmp_path, monkeypatch,
                                                   capsys):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    rng = np.random.default_rng(0)
    _fake_model(paths, "a__2d__all", 1, rng)
    _fake_model(paths, "b__3d_fullres__all", 2, rng)
    for var in ("SSLUNET_RAW", "SSLUNET_PREPROCESSED", "SSLUNET_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SSLUNET_HOME", str(tmp_path / "home"))
    code, out, err = run_main(main, ["-d", DATASET], capsys)
    assert code == 0, err
    report = json.loads((paths.results / DATASET / "find_best.json").read_text())
    ranking = {r["name"]: r["dice"] for r in report["ranking"]}
    assert report["best"] == "a__2d__all+b__3d_fullres__all"
    assert ranking[report["best"]] == 1.0 > ranking["a__2d__all"]
    ens = paths.results / DATASET / "ensembles" / report["best"]
    assert EnsembleSpec.load(ens).models == ("finetune/a__2d__all", "finetune/b__3d_fullres__all")
    assert (ens / "postprocessing.json").is_file()
    assert f"-m {ens}" in out and report["predict"] in out
    # without ensembles the better single model wins, and keeps its post-processing decision
    code, out, err = run_main(main, ["-d", DATASET, "--no-ensembles"], capsys)
    single = json.loads((paths.results / DATASET / "find_best.json").read_text())
    assert code == 0 and len(single["ranking"]) == 2
    assert (paths.results / DATASET / "finetune" / single["best"] / "postprocessing.json").is_file()


def test_nothing_to_compare_is_one_line(tmp_path_factory, tmp_path, monkeypatch, capsys):
    tiny_home(tmp_path_factory, tmp_path / "home")
    monkeypatch.setenv("SSLUNET_HOME", str(tmp_path / "home"))
    for var in ("SSLUNET_RAW", "SSLUNET_PREPROCESSED", "SSLUNET_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    code, _, err = run_main(main, ["-d", DATASET], capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err
