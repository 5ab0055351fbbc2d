"""``sslunet_pretrain`` on the command line (in process, through ``main(argv)``): a run, the
finetune command it prints, finished and continued runs, and objective options' errors.

The dataset (fixture ``tiny``) is the stack dataset of :mod:`tests.helpers.datasets`, a tiny
hand-made MR-like stack whose anatomy changes along the slice axis (a disc growing from the
first slice to the last, with a brighter core as the label), so that slices of the same
partition look alike across volumes, as Chaitanya et al.'s G^D assumes. Plans are shrunk to a
3-stage, 1-conv-per-stage U-Net with 4..16 features.
"""

from __future__ import annotations

import json

import pytest

from sslunet.cli.pretrain import main
from tests.helpers.cli import refusal_line, run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_cli_pretrains_and_prints_the_finetune_command(tiny, tmp_path, monkeypatch, capsys):
    paths, plans = tiny
    monkeypatch.setenv("SSLUNET_HOME", str(paths.preprocessed.parent))
    monkeypatch.setenv("SSLUNET_RESULTS", str(tmp_path / "results"))
    args = ["-d", "901", "-l", "mae", "-c", "2d", "--epochs", "1", "--iters-per-epoch", "2",
            "--val-iters", "1", "--batch-size", "4", "--num-workers", "1", "--device", "cpu",
            "--mask-ratio", "0.7", "--block-size", "4"]
    main(args)  # one background worker: the views/corruptions are built in a worker process
    out = capsys.readouterr().out
    assert f"sslunet_finetune -d {plans.dataset_name} -c 2d --init mae" in out
    config = json.loads((tmp_path / "results" / plans.dataset_name / "pretrain" / "mae__2d" /
                         "pretrain_config.json").read_text())
    assert config["objective"]["hyperparameters"]["mask_ratio"] == 0.7
    assert config["objective"]["hyperparameters"]["block_size"] == [4, 4]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and "already finished" in capsys.readouterr().err
    main(args + ["--continue"])
    assert "nothing to do" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["-d", "901", "-l", "simclr", "--mask-ratio", "0.5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--mask-ratio does not apply to objective 'simclr'" in err


def test_cli_objective_option_errors_name_the_flag(tiny, tmp_path, monkeypatch, capsys):
    paths, plans = tiny
    monkeypatch.setenv("SSLUNET_HOME", str(paths.preprocessed.parent))
    monkeypatch.setenv("SSLUNET_RESULTS", str(tmp_path / "results"))
    cases = {  # an option of another objective; a value the plan's network cannot take
        ("-l", "mae", "--temperature", "0.2"): "error: option --temperature does not apply to "
        "objective 'mae' (its options: --block-size, --mask-ratio)",
        ("-l", "contrastive", "--local-level", "9"): "error: invalid option for objective "
        "'contrastive': --local-level must be in [0, 1] for configuration '2d', got 9",
        ("-l", "mae", "--block-size", "2,2,2"): "--block-size needs 1 or 2 entries",
    }
    for argv, message in cases.items():
        code, out, err = run_main(main, ["-d", "901", *argv, "--device", "cpu"], capsys)
        refusal_line(code, out, err, message, own=False)
    assert not (tmp_path / "results").exists()  # refused before anything was written
