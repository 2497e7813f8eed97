"""The worker threads: one shared pool per size (NumPy releases the GIL inside ufuncs)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def thread_pool(n: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="xent-numpy")
        return pool


def _quiet(fn: Callable[[], None]) -> Callable[[], None]:
    """np.errstate is per thread: silence the expected inf/NaN warnings inside worker tasks."""

    def task():
        with np.errstate(all="ignore"):
            fn()

    return task


def run_parallel(tasks: list[Callable[[], None]], pool: ThreadPoolExecutor | None) -> None:
    """Run the tasks: all but the first on the pool, the first in the calling thread."""
    if len(tasks) == 1 or pool is None:
        for task in tasks:
            task()
        return
    futures = [pool.submit(_quiet(task)) for task in tasks[1:]]
    try:
        tasks[0]()
    finally:
        for fut in futures:
            fut.result()
