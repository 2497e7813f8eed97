"""The Dask executor: a ``distributed.Client`` on a scheduler (connected, or a LocalCluster it
started), the tasks it submitted (counted, for the resume tests), placement by worker resources,
and the distributed work itself: the small sweeps (:mod:`harness.executor.sweep`), one large
problem's loss split in row blocks (:meth:`DaskExecutor.reference_loss`), its gradient pass
judged in row blocks (:meth:`DaskExecutor.judge_large`) and :meth:`map`.

Only pickled arguments and results cross the network: problems, implementation locators (a
built-in's name, a plugin's ``MODULE:ATTR`` or ``file.py:ATTR``), the Runner options, outputs and
references. Functions are pickled by reference (module + name), so every worker must have the
same xent-harness (and the implementations' libraries) installed; nothing is fetched from the
scheduler.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from harness.executor import INSTALL, ExecutorError, TaskError

#: Seconds to wait for a scheduler (``--scheduler tcp://...``) before giving up.
CONNECT_TIMEOUT = 10
#: Rows of a large problem per reference task (about 2**24 logits at C = 32768).
BLOCK_LOGITS = 1 << 24


def _config() -> dict:
    """The Dask settings the harness's tasks need. Worker processes are not daemons: an
    isolated implementation (harness.runner) and the reference's pool start child processes,
    which a daemonic process may not have."""
    return {"distributed.worker.daemon": False}


def failure(exc: BaseException) -> str:
    """Why a task failed on the cluster, as the end of a sentence naming the task: it kept
    killing the workers that ran it (``KilledWorker``), or whatever it raised there, in one line."""
    from distributed import KilledWorker

    from harness.runner import one_line

    if isinstance(exc, KilledWorker):
        return f"killed the Dask workers that ran it ({one_line(exc)})"
    return f"failed on a Dask worker: {one_line(exc)}"


class DaskExecutor:
    """Runs tasks on a Dask cluster; ``submitted`` counts what was sent, by kind: ``reference``
    (problems), ``cells`` ((implementation, scenario, dtype) items), ``rows`` (row blocks of a
    loss), ``grads`` (row blocks of a gradient pass), ``hunt`` (rows of the hunt's branches,
    harness.hunt.distributed), ``map`` (items of :meth:`map`)."""

    distributed = True

    def __init__(self, client, cluster=None, *, address: str, cells_per_task: int = 8,
                 reference_logits: int = 1 << 18):
        self.client = client
        self.cluster = cluster
        self.address = address
        #: (implementation, scenario, dtype) items per cells task: a task spawns one isolated
        #: child for a plugin, so a few items amortize it; few enough to spread and to retry.
        self.cells_per_task = cells_per_task
        #: Logits of small problems per reference task (at least one problem each).
        self.reference_logits = reference_logits
        self.submitted: Counter = Counter()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def local(cls, n: int, *, log: Callable[[str], None] = print, resources: dict | None = None) -> DaskExecutor:
        """A LocalCluster of ``n`` single-threaded worker processes on this machine; with a
        visible GPU each worker has the resource ``GPU=1`` (``resources`` overrides). Its logs
        are silenced below CRITICAL: a task that fails is reported by the harness in one line
        (an error cell, or the campaign's error), not by the worker's multi-line log."""
        import dask
        from distributed import Client, LocalCluster

        from harness import registry

        if resources is None:
            resources = {"GPU": 1} if registry.no_gpu_reason() is None else {}
        t0 = time.monotonic()
        with dask.config.set(_config()):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   resources=resources or None, silence_logs=logging.CRITICAL)
            client = Client(cluster)
        log(f"dask: LocalCluster of {n} worker processes started in {time.monotonic() - t0:.1f} s "
            f"({cluster.scheduler_address})")
        return cls(client, cluster, address=cluster.scheduler_address)

    @classmethod
    def connect(cls, address: str, *, log: Callable[[str], None] = print) -> DaskExecutor:
        try:
            from distributed import Client
        except ImportError:
            raise ExecutorError(f"--scheduler: Dask distributed is not installed; {INSTALL}") from None
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"--scheduler: cannot reach {address} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); start one with `dask scheduler` "
                                "and `dask worker ADDRESS` (docs/dask.md)") from None
        n = len(client.scheduler_info().get("workers", {}))
        log(f"dask: connected to {address} ({n} workers)")
        return cls(client, address=address)

    # -- the cluster ---------------------------------------------------------------------------
    def workers(self) -> dict:
        return self.client.scheduler_info().get("workers", {})

    def n_workers(self) -> int:
        return max(1, len(self.workers()))

    def has_resource(self, name: str) -> bool:
        """Whether some worker declares the resource (``dask worker --resources GPU=1``): a task
        that asks for one nobody has would wait forever."""
        return any((w.get("resources") or {}).get(name, 0) > 0 for w in self.workers().values())

    def describe(self) -> dict:
        workers = self.workers()
        resources = Counter()
        for w in workers.values():
            resources.update(w.get("resources") or {})
        return {"kind": "dask", "scheduler": self.address, "local": self.cluster is not None,
                "workers": len(workers), "threads": sum(w.get("nthreads", 0) for w in workers.values()),
                "resources": dict(resources)}

    def close(self) -> None:
        """Close the client, and the LocalCluster this executor started (not a remote one)."""
        if self.client is None:
            return
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- tasks ---------------------------------------------------------------------------------
    def submit(self, kind: str, count: int, fn: Callable, *args, resources: dict | None = None):
        """Submit one task (``count`` items of ``kind`` for :attr:`submitted`); ``pure=False``:
        two submissions are two runs, never one cached result."""
        self.submitted[kind] += count
        return self.client.submit(fn, *args, resources=resources, pure=False)

    def as_completed(self, futures) -> Iterator:
        from distributed import as_completed

        yield from as_completed(futures)

    def map(self, fn: Callable, items: Iterable, *, resources: dict | None = None) -> Iterator[tuple[int, object]]:
        """See :mod:`harness.executor`: ``(index, fn(item))`` as each task finishes."""
        index = {}
        for i, item in enumerate(items):
            index[self.submit("map", 1, fn, item, resources=resources)] = i
        for fut in self.as_completed(list(index)):
            i = index.pop(fut)
            yield i, fut.result()
            fut.release()

    # -- the work ------------------------------------------------------------------------------
    def run_small(self, plan, results, pairs, wanted, log, bar) -> None:
        from harness.executor import sweep

        sweep.run_small(self, plan, results, pairs, wanted, log, bar)

    def large_loss(self, problem, cache, *, name: str = "a large problem"):
        """A large problem's loss for the sweeps: the cache's, else :meth:`reference_loss`,
        written to the cache."""
        hit = cache.load_loss(problem)
        if hit is not None:
            return hit[0]
        exact = self.reference_loss(problem, name=name)
        cache.store_loss(problem, exact)
        return exact

    def gather(self, futures: list, what: str) -> list:
        """The results of reference tasks, in order; a task that failed on its worker (or kept
        killing workers) is a :class:`TaskError` naming ``what`` and the cause, and the other
        tasks are cancelled."""
        try:
            return self.client.gather(futures)
        except Exception as exc:
            raise TaskError(f"the reference of {what} {failure(exc)}") from None
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()

    def _spans(self, problem, block_logits: int) -> list[tuple[int, int]]:
        M = problem.num_samples if problem.logits.ndim > 1 else 1
        per = max(1, block_logits // max(problem.num_classes, 1))
        return [(a, min(M, a + per)) for a in range(0, M, per)] or [(0, 0)]

    def judge_large(self, problem, judges: list, *, name: str = "a large problem",
                    block_logits: int = BLOCK_LOGITS):
        """One pass of a large problem's reference with its gradient, its rows split in blocks
        over the workers, judging the held implementation gradients there: ``judges`` are
        :class:`harness.blockwise.GradJudge` s, which take the workers' accumulators in row order
        (the same cells as feeding them the blocks here, every accumulator merging exactly).
        The problem, each gradient and the per-row scale go to the cluster once (scattered);
        only accumulators and per-row losses come back. Returns (the loss, whether the reference
        gradient has inf/NaN)."""
        from harness.executor import tasks

        [shared] = self.client.scatter([problem], hash=False)
        ys = self.client.scatter([j.y for j in judges], hash=False) if judges else []
        [scale] = self.client.scatter([judges[0].row_scale], hash=False) if judges else [None]
        options = [{"budget": j.budget, "exact_quantiles": j.exact_quantiles} for j in judges]
        futures = [self.submit("grads", 1, tasks.grad_blocks, shared, ys, options, scale, a, b)
                   for a, b in self._spans(problem, block_logits)]
        parts = self.gather(futures, name)
        del futures, shared, ys, scale
        for k, j in enumerate(judges):
            j.take([p[1][k] for p in parts])
        return tasks.reduce_losses(problem, [p[0] for p in parts]), any(p[2] for p in parts)

    def reference_loss(self, problem, *, block_logits: int = BLOCK_LOGITS, name: str = "a large problem"):
        """The loss of one (large) problem as :meth:`harness.reference.Blocks.loss` computes it,
        its rows split in blocks over the workers: the problem goes to the cluster once
        (scattered), each task evaluates its rows' losses, and the client reduces them in row
        order (the reduction is exact, so the blocking does not change the result)."""
        from harness.executor import tasks

        [shared] = self.client.scatter([problem], hash=False)
        futures = [self.submit("rows", 1, tasks.row_losses, shared, a, b) for a, b in self._spans(problem, block_logits)]
        parts = self.gather(futures, name)
        del futures, shared
        return tasks.reduce_losses(problem, parts)


def task_batches(items: list, size: int, workers: int) -> list[list]:
    """``items`` in consecutive batches of at most ``size``, and at least two per worker when
    there are enough items (so that every worker gets work and a lost one loses little)."""
    if not items:
        return []
    size = max(1, min(size, math.ceil(len(items) / (2 * workers))))
    return [items[i:i + size] for i in range(0, len(items), size)]
