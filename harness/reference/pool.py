"""The worker processes of the MPFR path (row chunks of one problem) and of ``evaluate_many``
(whole problems): when a pool pays for itself, and how its workers are started."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

#: Problems with fewer logits than this are evaluated in-process (a pool costs ~50 ms).
_PARALLEL_MIN = 40_000


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool. fork is fastest, but forking a process in which JAX or torch already
    started threads can deadlock; then the workers come from a clean forkserver instead."""
    import multiprocessing as mp
    import sys
    import threading

    # numba's fast pass starts OpenMP/TBB worker threads too: a forked child then dies
    # (BrokenProcessPool), so it counts like the others.
    # So does a pool started from a thread while other threads run (the sweeps drive the
    # reference from a thread while the main one calls the implementations).
    threaded = any(m in sys.modules for m in ("jax", "torch", "cupy", "harness.fastpath"))
    threaded = threaded or threading.active_count() > 1
    method = "forkserver" if threaded or sys.platform != "linux" else "fork"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))


def _chunks(M: int, workers: int) -> list[slice]:
    per = max(1, -(-M // (workers * 4)))
    return [slice(i, min(M, i + per)) for i in range(0, M, per)]
