"""The CLI-probe harness: run a command as a user does, and check that a refusal is clean.

A clean refusal is: exit status 2; exactly one ``error:`` line on stderr (ours, ``error: ...``,
or argparse's ``prog: error: ...``) that names the offending file, flag or value; no traceback
(nor any other noise asked for); the user's folders unchanged (:func:`snapshot` before and
after) and no output created.

- :func:`run_cli` runs ``python -m sslunet.cli.<command>`` in a subprocess, :func:`run_main` a
  command's ``main(argv)`` in this process; :func:`refusal_line` checks a refusal's exit status
  and output and returns its error line.
- :class:`Probe` describes one subprocess run with the folders it must leave alone;
  :func:`run_probes` runs many of them a few at a time (each is mostly interpreter and torch
  start-up) and :func:`check_probe` / :func:`check_probes` check them afterwards.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pytest

from tests.helpers.paths import REPO

# variables of the caller's environment a command must not see (torchrun's too)
DROPPED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any ``SSLUNET_*`` or torchrun variable, with
    ``SSLUNET_HOME=home``, one OpenMP thread and ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SSLUNET_") and k not in DROPPED_ENV}
    env.update(SSLUNET_HOME=str(home), OMP_NUM_THREADS="1", **extra)
    return env


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else str(out or "")


def run_cli(module: str, args: Sequence, home: Path, env: dict | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m sslunet.cli.<module> args`` from the repository root, with :func:`cli_env`;
    a run that hangs fails the test with the tail of its stderr."""
    cmd = [sys.executable, "-m", f"sslunet.cli.{module}", *map(str, args)]
    try:
        return subprocess.run(cmd, cwd=REPO, env=cli_env(home, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # say where it hung
        pytest.fail(f"sslunet.cli.{module} timed out; stderr tail:\n{_text(e.stderr)[-3000:]}")


def run_main(main: Callable[[list[str]], object], argv: Sequence,
             capsys) -> tuple[int, str, str]:
    """A command's ``main(argv)`` in this process: ``(exit status, stdout, stderr)``; output
    printed before the call is discarded."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def lines(text: str) -> list[str]:
    """Non-blank lines; progress bars (tqdm) separate theirs with carriage returns."""
    return [ln for ln in re.split(r"[\r\n]+", text) if ln.strip()]


def refusal_line(code: int, stdout: str, stderr: str, *words: str, own: bool = True,
                 last: bool = False, noise: Sequence[str] = ("Traceback",)) -> str:
    """Check a refused command and return its one error line.

    Exit status 2, none of ``noise`` in stdout or stderr, exactly one stderr line containing
    ``error:``, and every one of ``words`` in it. ``own``: the line is one of ours, i.e. starts
    with ``error:`` (argparse's start with the program name); ``last``: it is stderr's last line.
    """
    both = stdout + stderr
    for word in noise:
        assert word not in both, both
    assert code == 2, stderr
    found = [ln for ln in lines(stderr) if "error:" in ln]
    assert len(found) == 1, stderr
    line = found[0]
    if own:
        assert line.startswith("error:"), stderr
    if last:
        assert lines(stderr)[-1] == line, stderr
    for word in words:
        assert word in line, line
    return line


def refused(result: subprocess.CompletedProcess, *words: str, **kwargs) -> str:
    """:func:`refusal_line` of a finished subprocess."""
    return refusal_line(result.returncode, result.stdout, result.stderr, *words, **kwargs)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, mtime, content hash) and folder (mtime) under ``root``, or ``root``
    itself when it is a file: equal snapshots mean nothing was written, touched or removed."""
    def entry(p: Path) -> tuple:
        st = p.stat()
        if p.is_dir():
            return ("dir", st.st_mtime_ns)
        return (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())

    if root.is_file():
        return {".": entry(root)}
    return {str(p.relative_to(root)): entry(p) for p in sorted(root.rglob("*"))}


@dataclass
class Probe:
    """One subprocess run of a command, what it must say and what it must leave alone."""

    module: str  # sslunet.cli.<module>
    args: list
    home: Path  # SSLUNET_HOME
    words: tuple[str, ...]  # all must appear in the error (or warning) line
    keep: list[Path] = field(default_factory=list)  # snapshotted before, compared after
    absent: list[Path] = field(default_factory=list)  # must not exist afterwards
    env: dict = field(default_factory=dict)
    ok: bool = False  # a warning case: exit status 0 and exactly one "warning:" line
    own: bool = False  # see refusal_line: our own error line, and stderr's last one
    noise: tuple[str, ...] = ("Traceback",)  # never in stdout or stderr
    before: dict = field(default_factory=dict)
    result: subprocess.CompletedProcess | None = None


def run_probes(probes: Iterable[Probe], workers: int = 2,
               first: Callable[[Probe], bool] | None = None) -> None:
    """Snapshot every probe's ``keep`` folders, then run the probes ``workers`` at a time
    (those for which ``first`` is true first, so that the quick ones fill the gaps)."""
    probes = list(probes)
    for p in probes:
        p.before = {root: snapshot(root) for root in p.keep}
    if first is not None:
        probes.sort(key=lambda p: not first(p))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: run_cli(p.module, p.args, p.home, p.env), probes)
        for p, result in zip(probes, results):
            p.result = result


def check_probe(p: Probe) -> str:
    """Check a finished probe (see :class:`Probe`); returns its error (or warning) line."""
    r = p.result
    if p.ok:
        for word in p.noise:
            assert word not in r.stdout + r.stderr, r.stdout + r.stderr
        assert r.returncode == 0, r.stderr
        warnings = [ln for ln in lines(r.stderr) if ln.startswith("warning:")]
        assert len(warnings) == 1, r.stderr
        line = warnings[0]
        for word in p.words:
            assert word in line, line
    else:
        line = refused(r, *p.words, own=p.own, last=p.own, noise=p.noise)
    for root, before in p.before.items():
        assert snapshot(root) == before, f"{root} changed"
    for path in p.absent:
        assert not path.exists(), f"{path} was written"
    return line


def check_probes(probes: dict[str, Probe], names: Iterable[str]) -> None:
    """:func:`check_probe` of each named probe; a failure says which one."""
    for name in names:
        try:
            check_probe(probes[name])
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
