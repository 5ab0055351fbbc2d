"""``sslunet_predict`` end to end (in process, through ``main(argv)``) on a tiny fake model.

The model is real in every respect but training: a tiny raw dataset is planned and
preprocessed with the real planner, the plan's networks are shrunk (same topology, fewer
features) and saved with seeded random weights in the results layout that fine-tuning writes.
Random networks still give spatially varying masks, which is all these tests need.

Bad input: exit status 2, one ``error:`` line naming the offending file, no traceback, and
the output folder (holding a sentinel file) and the input folder unchanged (the CLI-probe
harness of :mod:`tests.helpers.cli`).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sslunet.cli.predict import main
from sslunet.dataset.imageio import read_array, read_header
from sslunet.inference import api as predict_lib
from sslunet.inference.postprocessing import PostprocessingPlan, apply_postprocessing
from sslunet.inference.predictor import (
    export_logits,
    inference_config,
    network_predictor,
    predict_logits,
)
from sslunet.networks import build_network
from sslunet.paths import Paths
from sslunet.plans import Plans
from sslunet.preprocessing.storage import load_case
from tests.helpers.cli import refusal_line, run_main, snapshot
from tests.helpers.datasets import (
    oblique_direction,
    plan_dataset,
    write_image,
    write_raw_dataset,
)
from tests.helpers.models import save_fake_model

DS = "Dataset001_Toy"
# (x, y, z) spacing, direction; case_002's spacing differs from the plan's target -> resampled
CASES = [((1.2, 1.3, 4.0), None), ((1.2, 1.3, 4.0), oblique_direction(25.0)),
         ((1.0, 1.1, 4.0), None), ((1.2, 1.3, 4.0), None)]
ORIGIN = (3.5, -20.25, 11.0)
OLD = 1_000_000_000  # a fixed past mtime stamped on outputs before a rerun


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    paths = Paths.under(home)
    raw = write_raw_dataset(paths.raw, DS, n_labelled=len(CASES), shape=(6, 40, 36),
                            labels={"background": 0, "a": 1, "b": 2}, geometry=lambda i: dict(
                                spacing=CASES[i][0], origin=ORIGIN, direction=CASES[i][1]))
    plans = plan_dataset(raw, paths, ("2d", "3d_fullres"))
    ft = paths.results / DS / "finetune"
    save_fake_model(ft / "random__2d__all", plans, "2d", {"0": 1, "1": 2})
    save_fake_model(ft / "random__3d_fullres__all", plans, "3d_fullres", {"0": 3})
    # only ever fed bad input, which is rejected before any preprocessing
    save_fake_model(home / "two_channels", plans, "2d", {"0": 4}, channels=2)
    return home


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def env(home, monkeypatch):
    for var in ("SSLUNET_RAW", "SSLUNET_PREPROCESSED", "SSLUNET_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SSLUNET_HOME", str(home))


def images(home: Path) -> Path:
    return home / "raw" / DS / "imagesTr"


def model(home: Path, name: str) -> str:
    return str(home / "results" / DS / "finetune" / f"random__{name}__all")


def predict(capsys, *args) -> tuple[int, str, str]:
    """Run ``sslunet_predict`` in process: (exit status, stdout, stderr)."""
    return run_main(main, [*args, "-np", "0", "--device", "cpu"], capsys)


def copy_cases(home: Path, dest: Path, cases=("case_000",), plain=False) -> Path:
    dest.mkdir(parents=True)
    for c in cases:
        name = f"{c}.nii.gz" if plain else f"{c}_0000.nii.gz"
        shutil.copy(images(home) / f"{c}_0000.nii.gz", dest / name)
    return dest


def assert_same_geometry(pred: Path, image: Path) -> None:
    a, b = read_header(pred), read_header(image)
    assert a.size == b.size
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=0, atol=1e-6)


def mask(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def probabilities(path: Path) -> np.ndarray:
    with np.load(path) as f:
        return f["probabilities"].astype(np.float32)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("name", ["2d", "3d_fullres"])
def test_masks_have_input_geometry_and_match_direct_prediction(home, tmp_path, capsys, name):
    out = tmp_path / "out"
    code, stdout, err = predict(capsys, "-i", images(home), "-o", out, "-m", model(home, name),
                                "-f", "0")
    assert code == 0, err
    assert "4 case(s) predicted" in stdout and str(out) in stdout
    plans = Plans.load(Path(model(home, name)) / "plans.json")
    config = plans.configuration(name)
    ckpt = torch.load(Path(model(home, name)) / "fold_0" / "checkpoint_final.pt",
                      weights_only=True)
    net = build_network(config, 1, 3, deep_supervision=False)
    net.load_state_dict(ckpt["network_weights"])
    predictor = network_predictor(net.eval(), torch.device("cpu"))
    inference = inference_config(config, 0.5, True, torch.device("cpu"))
    pre = home / "preprocessed" / DS / config.data_identifier
    resampled = []
    for i in range(len(CASES)):
        case = f"case_{i:03d}"
        got = out / f"{case}.nii.gz"
        assert_same_geometry(got, images(home) / f"{case}_0000.nii.gz")
        # the same network on the array that training's preprocessing stored
        data, _, props = load_case(pre, case)
        assert props.shape_after_crop != props.original_shape  # the border was cropped
        resampled.append(props.shape_after_resample != props.shape_after_crop)
        logits = predict_logits([predictor], data, config, 3, inference, torch.device("cpu"))
        direct = export_logits(logits, props, plans, config, tmp_path / "direct.nii.gz")
        np.testing.assert_array_equal(mask(got), direct)
        assert len(np.unique(direct)) > 1  # a constant mask would make the comparison vacuous
    assert resampled == [False, False, True, False]


def test_fold_ensemble_averages_logits_as_nnunet(home, tmp_path, capsys):
    """Folds' logits are averaged (then resampled linearly, then softmax), as nnU-Net v2's
    predictor does: the probabilities are the normalised geometric mean of the folds'."""
    inp = copy_cases(home, tmp_path / "in", ("case_001", "case_002"))
    runs, logs = {}, {}
    for tag, folds in (("both", ()), ("f0", ("-f", "0")), ("f1", ("-f", "1"))):
        code, _, logs[tag] = predict(capsys, "-i", inp, "-o", tmp_path / tag, "-m",
                                     model(home, "2d"), "--save-probabilities", *folds)
        assert code == 0, logs[tag]
        runs[tag] = tmp_path / tag
    assert "fold_0, fold_1" in logs["both"]  # default: every finished fold
    for case in ("case_001", "case_002"):
        p0, p1 = (probabilities(runs[t] / f"{case}.npz") for t in ("f0", "f1"))
        both = probabilities(runs["both"] / f"{case}.npz")
        assert both.shape == (3, 6, 40, 36)
        assert np.abs(p0 - p1).max() > 0.05  # the folds really differ
        geometric = np.sqrt(np.clip(p0, 1e-6, 1) * np.clip(p1, 1e-6, 1))
        np.testing.assert_allclose(both, geometric / geometric.sum(0), atol=3e-3)
        np.testing.assert_allclose(both.sum(0), 1.0, atol=3e-3)
        assert (mask(runs["both"] / f"{case}.nii.gz") == both.argmax(0)).mean() > 0.99


def test_disable_tta_plain_names_and_process_pool(home, tmp_path, capsys):
    inp = copy_cases(home, tmp_path / "in", ("case_001", "case_003"), plain=True)
    common = ("-i", inp, "-m", model(home, "3d_fullres"), "--save-probabilities")
    code, _, err = predict(capsys, *common, "-o", tmp_path / "tta")
    assert code == 0, err
    try:  # one run through the spawned export worker processes
        main([*map(str, common), "-o", str(tmp_path / "plain"), "--disable-tta", "-np", "1",
              "--device", "cpu"])
    finally:
        capsys.readouterr()
    for case in ("case_001", "case_003"):
        plain = tmp_path / "plain" / f"{case}.nii.gz"
        assert_same_geometry(plain, inp / f"{case}.nii.gz")
        tta, no_tta = (probabilities(tmp_path / d / f"{case}.npz") for d in ("tta", "plain"))
        assert np.abs(tta - no_tta).max() > 1e-3


def test_second_run_skips_and_overwrite_redoes(home, tmp_path, capsys):
    inp = copy_cases(home, tmp_path / "in", ("case_000", "case_002"))
    out = tmp_path / "out"
    args = ("-i", inp, "-o", out, "-m", model(home, "3d_fullres"), "--disable-tta")
    assert predict(capsys, *args)[0] == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["case_000.nii.gz", "case_002.nii.gz"]
    for f in files:
        os.utime(f, ns=(OLD * 10 ** 9, OLD * 10 ** 9))
    code, stdout, _ = predict(capsys, *args)
    assert code == 0 and "0 case(s) predicted, 2 skipped" in stdout
    assert all(f.stat().st_mtime_ns == OLD * 10 ** 9 for f in files)
    (out / "case_000.nii.gz").unlink()  # a missing output is redone, the other kept
    code, stdout, _ = predict(capsys, *args)
    assert "1 case(s) predicted, 1 skipped" in stdout
    assert (out / "case_002.nii.gz").stat().st_mtime_ns == OLD * 10 ** 9
    code, stdout, _ = predict(capsys, *args, "--overwrite")
    assert code == 0 and "2 case(s) predicted" in stdout
    assert all(f.stat().st_mtime_ns != OLD * 10 ** 9 for f in files)
    assert sorted(p.name for p in out.iterdir()) == ["case_000.nii.gz", "case_002.nii.gz"]


def test_unknown_ending_accepts_other_formats(home, tmp_path, capsys, monkeypatch):
    """A model folder moved elsewhere (no dataset.json to be found) takes .mha/.nrrd too."""
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(model(home, "3d_fullres"), moved)
    monkeypatch.setenv("SSLUNET_HOME", str(tmp_path / "empty_home"))
    inp = tmp_path / "in"
    image, geometry = read_array(images(home) / "case_001_0000.nii.gz")
    write_image(inp / "scan_0000.mha", image, geometry.spacing, geometry.origin,
                geometry.direction)
    code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / "out", "-m", moved / "fold_0",
                           "--disable-tta")
    assert code == 0, err
    assert_same_geometry(tmp_path / "out" / "scan.mha", inp / "scan_0000.mha")


# --------------------------------------------------------------------------- model selection
def test_model_discovery_and_ambiguity(home, tmp_path, capsys, monkeypatch):
    alt = tmp_path / "alt"
    ft = Paths.under(alt).results / DS / "finetune"
    shutil.copytree(model(home, "3d_fullres"), ft / "random__3d_fullres__all")
    (ft / "unfinished" / "fold_0").mkdir(parents=True)  # no checkpoint_final: not a candidate
    shutil.copytree(Paths.under(home).preprocessed / DS, Paths.under(alt).preprocessed / DS)
    monkeypatch.setenv("SSLUNET_HOME", str(alt))
    inp = copy_cases(home, tmp_path / "in")
    for extra in ((), ("-d", "1"), ("-d", "Toy")):
        out = tmp_path / f"out{len(extra)}{extra[-1] if extra else ''}"
        code, _, err = predict(capsys, "-i", inp, "-o", out, "--disable-tta", *extra)
        assert code == 0, err
        assert "random__3d_fullres__all" in err and (out / "case_000.nii.gz").is_file()
    shutil.copytree(model(home, "2d"), ft / "random__2d__all")
    code, out, err = predict(capsys, "-i", inp, "-o", tmp_path / "amb", "-d", DS)
    error = refusal_line(code, out, err, "random__2d__all", "random__3d_fullres__all", "-m")
    assert "unfinished" not in error
    assert not (tmp_path / "amb").exists()


# --------------------------------------------------------------------------- bad input
def _unfinished_model(home, t):
    d = t / "model" / "fold_0"
    d.mkdir(parents=True)
    (d / "checkpoint_latest.pt").write_bytes(b"not finished")
    return ["-m", t / "model"], "model"


def _extra_channel(home, t):
    shutil.copy(images(home) / "case_001_0000.nii.gz", t / "in" / "case_001_0001.nii.gz")
    return [], "case_001_0001.nii.gz"


def _vector_image(home, t):
    image = sitk.Compose([sitk.Image(8, 8, 4, sitk.sitkFloat32)] * 2)
    sitk.WriteImage(image, str(t / "in" / "vec_0000.nii.gz"))
    return [], "vec_0000.nii.gz"


def _no_images(home, t):
    for f in (t / "in").iterdir():
        f.unlink()
    (t / "in" / "notes.txt").write_text("no images here")
    return [], "in"


def _output_inside_input(home, t):
    return ["-o", t / "in" / "masks"], "masks"


def _output_is_input(home, t):
    return ["-o", t / "in"], str(t / "in")


def _unreadable(home, t):
    (t / "in" / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b garbage, not an image")
    return [], "broken_0000.nii.gz"


def _missing_fold(home, t):
    return ["-f", "0", "3"], "fold_3"


def _plain_and_channel(home, t):
    shutil.copy(images(home) / "case_000_0000.nii.gz", t / "in" / "case_000.nii.gz")
    return [], "case_000.nii.gz"


def _two_channels(home, t, second: str | None, spacing=(1.2, 1.3, 4.0)):
    for f in (t / "in").iterdir():
        f.unlink()
    image, _ = read_array(images(home) / "case_001_0000.nii.gz")
    write_image(t / "in" / "case_001_0000.nii.gz", image, spacing)
    if second is not None:
        write_image(t / "in" / second, image, spacing)
    return ["-m", home / "two_channels"]


def _plain_name_for_two_channels(home, t):
    return _two_channels(home, t, "case_001.nii.gz"), "case_001.nii.gz"


def _missing_channel(home, t):
    return _two_channels(home, t, None), "case_001_0001.nii.gz"


def _channel_geometry_differs(home, t):
    args = _two_channels(home, t, None)
    image, _ = read_array(images(home) / "case_001_0000.nii.gz")
    write_image(t / "in" / "case_001_0001.nii.gz", image, (1.2, 1.3, 5.0))
    return args, "case_001_0001.nii.gz"


BAD = [_unfinished_model, _extra_channel, _vector_image, _no_images, _output_inside_input,
       _output_is_input, _unreadable, _missing_fold, _plain_and_channel,
       _plain_name_for_two_channels, _missing_channel, _channel_geometry_differs]


@pytest.mark.parametrize("make_bad", BAD, ids=[f.__name__[1:] for f in BAD])
def test_bad_input_fails_cleanly(home, tmp_path, capsys, make_bad):
    copy_cases(home, tmp_path / "in", ("case_000", "case_003"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "case_000.nii.gz").write_bytes(b"sentinel: must survive")
    extra, offender = make_bad(home, tmp_path)
    args = ["-i", tmp_path / "in", "-o", out, "-m", model(home, "2d"), "--overwrite"]
    for flag in ("-m", "-o"):
        if flag in extra:
            i = args.index(flag)
            del args[i:i + 2]
    before = snapshot(tmp_path)
    code, stdout, err = predict(capsys, *args, *extra)
    refusal_line(code, stdout, err, offender)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- workers
@pytest.mark.parametrize("stage", ["read_case", "export_logits"])
def test_worker_errors_surface_and_stop_workers(home, tmp_path, monkeypatch, stage):
    def boom(*args, **kwargs):
        raise RuntimeError(f"{stage} failed")

    monkeypatch.setattr(predict_lib, stage, boom)
    inp = copy_cases(home, tmp_path / "in", ("case_000", "case_001", "case_002"))
    opts = predict_lib.PredictOptions(inp, tmp_path / "out", model=Path(model(home, "2d")),
                                      tta=False, device="cpu", num_processes=0, progress=False)
    with pytest.raises(RuntimeError, match=f"{stage} failed"):
        predict_lib.predict_folder(Paths.under(home), opts)
    assert not [t for t in threading.enumerate() if t.name.startswith("sslunet-")]
    assert not any((tmp_path / "out").glob("*.nii.gz"))


# --------------------------------------------------------------------------- post-processing
def test_stored_postprocessing_is_applied_unless_turned_off(home, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(model(home, "2d"), model_dir)
    plan = PostprocessingPlan(True, (1, 2), {}, 2, ("0",))
    plan.save(model_dir / "postprocessing.json")
    inp = copy_cases(home, tmp_path / "in", ("case_000", "case_002"))
    code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / "pp", "-m", model_dir)
    assert code == 0 and "post-processing: largest foreground component, largest a" in err
    code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / "raw", "-m", model_dir,
                           "--no-postprocessing")
    assert code == 0 and "post-processing: off" in err
    changed = []
    for case in ("case_000", "case_002"):
        raw, pp = mask(tmp_path / "raw" / f"{case}.nii.gz"), mask(tmp_path / "pp" / f"{case}.nii.gz")
        np.testing.assert_array_equal(pp, apply_postprocessing(raw, plan, [1, 2]))
        changed.append(bool((pp != raw).any()))
    assert any(changed)  # the untrained network leaves islands: the plan really removed some
    (model_dir / "postprocessing.json").write_text("{")  # damaged: refused before any output
    code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / "bad", "-m", model_dir)
    assert code == 2 and "postprocessing.json" in err and not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- ensembles
def test_several_models_average_their_probabilities_in_image_space(home, tmp_path, capsys):
    inp = copy_cases(home, tmp_path / "in", ("case_001", "case_002"))
    two, three = model(home, "2d"), model(home, "3d_fullres")
    for name, m in (("2d", two), ("3d", three)):
        code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / name, "-m", m,
                               "--save-probabilities", "--no-postprocessing")
        assert code == 0, err
    code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / "ens", "-m", two, three,
                           "--save-probabilities")
    assert code == 0 and "ensemble of 2 models" in err, err
    for case in ("case_001", "case_002"):
        mean = (probabilities(tmp_path / "2d" / f"{case}.npz")
                + probabilities(tmp_path / "3d" / f"{case}.npz")) / 2
        got = mask(tmp_path / "ens" / f"{case}.nii.gz")
        np.testing.assert_array_equal(got, mean.argmax(0))
        assert_same_geometry(tmp_path / "ens" / f"{case}.nii.gz", inp / f"{case}_0000.nii.gz")
        np.testing.assert_allclose(probabilities(tmp_path / "ens" / f"{case}.npz"), mean,
                                   atol=2e-3)  # stored as float16
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == [
        "case_001.nii.gz", "case_001.npz", "case_002.nii.gz", "case_002.npz"]  # work folder gone
    # an incompatible member is refused before anything is written
    code, _, err = predict(capsys, "-i", inp, "-o", tmp_path / "bad", "-m", two,
                           str(home / "two_channels"))
    assert code == 2 and "cannot be ensembled" in err and not (tmp_path / "bad").exists()
