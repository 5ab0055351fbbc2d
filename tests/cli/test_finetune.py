"""``sslunet_finetune`` on the command line: argument wiring, run folders, refusals (exit 2).

Two tests start a real ``python -m sslunet.cli.finetune`` process; the others call
``main(argv)`` in-process (same code path, without paying for a Python start-up each).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslunet.cli.finetune import main
from sslunet.planning.splits import choose_labeled
from tests.helpers.cli import refusal_line, refused, run_cli, run_main, snapshot
from tests.helpers.datasets import DATASET, tiny_home, trained_home

TINY = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--batch-size", "2",
        "--num-workers", "0", "--device", "cpu"]
ENV_VARS = ("SSLUNET_RAW", "SSLUNET_PREPROCESSED", "SSLUNET_RESULTS", "WORLD_SIZE", "RANK",
            "LOCAL_RANK")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(args: list[str], home: Path, timeout: float = 240):
    return run_cli("finetune", args, home, timeout=timeout)


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(args, home) -> (exit code, stdout, stderr)`` through ``main`` in this process."""
    def call(args: list[str], home: Path) -> tuple[int, str, str]:
        for k in ENV_VARS:
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("SSLUNET_HOME", str(home))
        return run_main(main, args, capsys)

    return call


@pytest.mark.slow
def test_cli_run_with_checkpoint_init_and_label_budget(tmp_path_factory, tmp_path):
    paths, trained = trained_home(tmp_path_factory, tmp_path / "home")
    init = trained / "checkpoint_final.pt"
    proc = run(["-d", "42", "-f", "1", "--init", str(init), "--num-labeled", "2",
                    "--seed", "3", "--no-validation", *TINY], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (paths.results / DATASET / "finetune").glob("ckpt-*__2d__2__seed3/fold_1")
    assert f"model and logs: {run_dir}" in proc.stdout
    assert (run_dir / "checkpoint_final.pt").is_file()
    assert not (run_dir / "validation").exists()
    splits = json.loads((paths.preprocessed / DATASET / "splits.json").read_text())
    chosen = json.loads((run_dir / "labeled_cases.json").read_text())
    assert chosen["cases"] == choose_labeled(splits[1]["train"], 2, 3)
    report = json.loads((run_dir / "loaded_weights.json").read_text())
    assert report["checkpoint"] == str(init)
    assert all(not k.startswith("decoder.seg_layers.") for k in report["loaded"])
    assert any(k.startswith("decoder.seg_layers.") for k in report["not_loaded"])
    training = json.loads((run_dir / "run_config.json").read_text())["training"]
    # pretrained defaults (docs/payoff.md): AdamW, lr 3e-3, no warm-up
    assert training["optimizer"] == "adamw" and training["lr"] == 3e-3
    assert training["warmup_epochs"] == 0 and training["epochs"] == 1


def test_cli_num_labeled_above_available_exits_2(tmp_path_factory, tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    proc = run(["-d", DATASET, "--num-labeled", "9", *TINY], tmp_path / "home")
    refused(proc, "--num-labeled 9 exceeds the 4 training cases")
    assert not (paths.results / DATASET).exists()


def test_cli_init_objective_without_pretraining_gives_the_command(tmp_path_factory, tmp_path,
                                                                   cli):
    tiny_home(tmp_path_factory, tmp_path / "home")
    code, out, err = cli(["-d", "Tiny", "--init", "contrastive", *TINY], tmp_path / "home")
    refusal_line(code, out, err, f"sslunet_pretrain -d {DATASET} -l contrastive -c 2d")


def test_cli_init_from_other_configuration_exits_2(tmp_path_factory, tmp_path, cli):
    paths, trained = trained_home(tmp_path_factory, tmp_path / "home")
    code, out, err = cli(["-d", DATASET, "-c", "3d_fullres", "--init",
                          str(trained / "checkpoint_final.pt"), *TINY], tmp_path / "home")
    refusal_line(code, out, err, "trained for configuration '2d', not '3d_fullres'")
    assert not list((paths.results / DATASET / "finetune").glob("*3d_fullres*"))


def test_cli_finished_run_is_never_overwritten(tmp_path_factory, tmp_path, cli):
    _, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    before = snapshot(run_dir)
    code, out, err = cli(["-d", DATASET, *TINY], tmp_path / "home")
    refusal_line(code, out, err, "already finished")
    code, _, err = cli(["-d", DATASET, "--continue", *TINY], tmp_path / "home")
    assert code == 0 and "nothing to do" in err
    assert snapshot(run_dir) == before


def test_cli_interrupted_run_needs_continue_then_resumes(tmp_path_factory, tmp_path, cli):
    _, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    # the state a kill after epoch 2 leaves: a latest checkpoint (epoch 2) and no final one
    (run_dir / "checkpoint_final.pt").rename(run_dir / "checkpoint_latest.pt")
    code, out, err = cli(["-d", DATASET, "--epochs", "3", *TINY[2:]], tmp_path / "home")
    refusal_line(code, out, err, "add --continue")
    assert (run_dir / "checkpoint_latest.pt").exists()
    code, out, err = cli(["-d", DATASET, "--epochs", "3", "--continue", "--no-validation",
                          *TINY[2:]], tmp_path / "home")
    assert code == 0, err
    assert "resumed from checkpoint_latest.pt at epoch 2" in err
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [0, 1, 2]
    assert torch.load(run_dir / "checkpoint_final.pt", weights_only=True)["epoch"] == 3
    assert not (run_dir / "checkpoint_latest.pt").exists()
