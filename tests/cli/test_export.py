"""``sslunet_export``: an sslunet checkpoint as nnU-Net pretrained weights."""

from __future__ import annotations

import torch

from sslunet.cli.export import main
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.runs.nnunet import load_nnunet_checkpoint
from tests.helpers.cli import run_main
from tests.helpers.datasets import trained_home


def test_fold_checkpoint_round_trips_through_nnunet_names(tmp_path_factory, tmp_path, capsys):
    _, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    out = tmp_path / "out" / "pretrained.pth"
    code, stdout, err = run_main(main, ["--pretrained", run_dir / "checkpoint_final.pt",
                                        "--to-nnunet-weights", out], capsys)
    assert code == 0, err
    assert f"-pretrained_weights {out}" in stdout
    names = torch.load(out, weights_only=True)["network_weights"]
    assert any(".all_modules." in k for k in names) and any(k.startswith("decoder.encoder.")
                                                            for k in names)
    back = load_nnunet_checkpoint(out)["network_weights"]
    ours = load_checkpoint(run_dir / "checkpoint_final.pt")["network_weights"]
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)


def test_not_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "x.pt").write_text("nope")
    code, _, err = run_main(main, ["--pretrained", tmp_path / "x.pt", "--to-nnunet-weights",
                                   tmp_path / "o.pth"], capsys)
    assert code == 2 and "x.pt" in err and "Traceback" not in err
    assert not (tmp_path / "o.pth").exists()
