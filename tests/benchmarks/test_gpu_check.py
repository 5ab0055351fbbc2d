"""benchmarks/gpu_check.sh in its tiny CPU mode: every step of the GPU check runs (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSLUNET_", "nnUNet_"))}
    env.update(GPU_CHECK_OUT=str(tmp_path), OMP_NUM_THREADS="1", TMPDIR=str(tmp_path),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = (tmp_path / "gpu_check_cpu.log").read_text()
    assert done.returncode == 0, log + done.stderr[-2000:]
    steps = [ln for ln in log.splitlines() if ": ok (" in ln]
    assert len(steps) == 8 and "FAILED" not in log, log
    engine = json.loads((tmp_path / "engine_cpu_channels-last.json").read_text())
    assert engine["training"]["2d"]["channels_last"] is True
    assert set(json.loads((tmp_path / "pretrain_cpu_2d_check.json").read_text()))
