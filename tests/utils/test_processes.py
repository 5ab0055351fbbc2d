"""Tests for sslunet.utils.processes: worker processes (augmentation workers, export workers and
the resource tracker) die with a parent killed by ``kill -9``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers.paths import REPO


WORKERS_SCRIPT = """
import os, sys, time
import numpy as np
from sslunet.data.loader import make_loader
from sslunet.inference.api import _make_exporter

class Loader:  # the smallest batchgenerators-style data loader
    def set_thread_id(self, i):
        self.i = i
    def __iter__(self):
        return self
    def __next__(self):
        return {"data": np.zeros((1, 1, 4, 4), np.float32)}

if __name__ == "__main__":  # (spawned workers import this file)
    stream = make_loader(Loader(), None, num_workers=2, seed=0)  # augmentation workers (fork)
    next(stream)
    pool = _make_exporter(1)  # export workers (spawn) and the resource tracker
    pool.submit(os.getpid).result()
    print("ready", flush=True)
    time.sleep(600)
"""


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for f in Path(f"/proc/{p}/task").glob("*/children"):
            for child in f.read_text().split():
                if int(child) not in found:
                    found.add(int(child))
                    todo.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (init may not reap it at once)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not sys.platform.startswith("linux"),
                    reason="needs Linux /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(textwrap.dedent(WORKERS_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: set[int] = set()
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        children = _descendants(proc.pid)
        if not children:
            pytest.skip("/proc/<pid>/task/*/children is not available")
        assert len(children) >= 4  # 2 augmentation workers, 1 export worker, the tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(c) for c in children):
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)], "workers outlived their parent"
    finally:
        for c in children:
            if _alive(c):
                os.kill(c, signal.SIGKILL)  # only the processes this test started
        if proc.poll() is None:
            proc.kill()
            proc.wait()
