"""Worker processes that never outlive the command that started them.

A command killed with ``kill -9`` cannot stop its workers; without help they keep running
(export workers, augmentation workers, preprocessing pools), and keep the multiprocessing
resource tracker alive with them, until killed by hand. :func:`die_with_parent`, called first
thing in every worker, binds the worker to its parent: on Linux the kernel sends the worker
SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls
the parent's process id. Once the workers are gone, the resource tracker sees its last client
leave and exits by itself.

The Linux signal is tied to the *thread* that started the worker: start workers from a thread
that lives as long as they do (the main thread, as every sslunet command does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make the calling (worker) process exit when its parent process dies.

    Args:
        parent_pid: the parent's pid as the parent saw it (``os.getpid()`` there). If the
            parent already died before this call (a race the kernel signal cannot cover),
            the worker exits at once.
    """
    if not (sys.platform.startswith("linux") and _prctl_pdeathsig(signal.SIGTERM)):
        _start_watchdog(parent_pid if parent_pid is not None else os.getppid())
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _prctl_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _start_watchdog(parent_pid: int, interval: float = 1.0) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="sslunet-parent-watchdog", daemon=True).start()
