"""A process pool map with a progress bar, used by fingerprinting and preprocessing."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

from sslunet.utils.processes import die_with_parent

A = TypeVar("A")
R = TypeVar("R")


def parallel_map(fn: Callable[[A], R], items: Sequence[A], num_processes: int,
                 desc: str = "", progress: bool = True) -> list[R]:
    """``[fn(x) for x in items]`` over ``num_processes`` workers, results in input order.

    With one process (or one item) everything runs in this process, which keeps tracebacks
    and debugging simple. Exceptions raised by ``fn`` propagate to the caller unchanged.
    """
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="case", leave=True)
    try:
        if num_processes <= 1 or len(items) <= 1:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        # fork is cheap and safe here: workers only run numpy/SimpleITK code
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(min(num_processes, len(items)), initializer=die_with_parent,
                      initargs=(os.getpid(),)) as pool:
            out = []
            for r in pool.imap(fn, items, chunksize=1):
                out.append(r)
                bar.update()
            return out
    finally:
        bar.close()
