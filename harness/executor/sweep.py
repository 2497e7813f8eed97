"""The small problems' sweeps on a Dask cluster (the client side): the same cells as
:func:`harness.sweeps._run_small`, from the same functions (``_compute`` on the workers,
``_record`` here), in whatever order the tasks finish.

1. The reference cache is read first; only the misses are sent (``reference`` tasks of about
   ``DaskExecutor.reference_logits`` logits each). A returned reference is written to this
   client's cache at once, so nothing is computed twice in a campaign, nor after a resume.
2. The cells still missing from the journal (a resumed run sends only those) are sent as
   ``cells`` tasks: one implementation on a few problems each. An implementation that needs a
   device (a CUDA/GPU device, or ``needs_gpu``) asks for the worker resource ``GPU=1``; when no
   worker has it, its cells are error cells saying so instead of waiting forever.
3. As each task finishes, every cell whose outputs and reference are both in is judged and
   journaled (``Results.add_cell``): a client killed midway keeps them and ``--resume``
   continues from them. A task whose worker died is retried on another by Dask; one that kept
   killing workers (``KilledWorker``: a non-isolated implementation that crashes its process)
   or failed on the worker (its implementation could not be loaded there) gives error cells.
4. A *reference* task that failed on its worker (or kept killing workers) has no cell to become:
   the other tasks are still waited for and everything they make possible is recorded, then
   :class:`~harness.executor.TaskError` names the task's problems and the cause in one line
   (the CLI's exit code 2; ``--resume`` continues without recomputing the rest).
"""

from __future__ import annotations

import time

from harness import sweeps
from harness.executor import TaskError, tasks
from harness.executor.cluster import failure, task_batches
from harness.runner import isolated


def needs_device(entry) -> bool:
    impl = entry.impl
    return bool(getattr(impl, "needs_gpu", False)) or impl.device not in ("cpu",)


def _failed_task(need, message: str):
    """What ``_compute`` would have returned had every call failed with ``message``."""
    failed = sweeps._Failure(message)
    return need, None, {}, {"loss": failed, "grad": failed}, {}, None


def run_small(ex, plan, results, pairs, wanted, log, bar) -> None:
    t0 = time.monotonic()
    problems = {(s.name, d): s.problem(d) for s, d in pairs}
    by_name = {s.name: s for s, _ in pairs}
    exacts: dict = {}
    for k, p in problems.items():
        hit = plan.cache.load(p)
        if hit is not None:
            exacts[k] = hit
    misses = [k for k in problems if k not in exacts]
    workers = ex.n_workers()
    futures: dict = {}
    if misses:
        size = sum(problems[k].logits.size for k in misses)
        log(f"reference: computing {len(misses)} problems ({size:,} logits) on {workers} Dask workers; "
            f"{len(exacts)} cached in {plan.cache.directory}")
        for batch in _reference_batches(misses, problems, ex.reference_logits, workers):
            futures[ex.submit("reference", len(batch), tasks.reference, [problems[k] for k in batch])] = ("ref", batch)

    pending: dict = {}  # problem key -> [(entry, computed)] waiting for the reference
    gpu = None
    for entry in plan.entries:
        todo = []
        for k in problems:
            need = [kind for kind in wanted if not results.has((kind, entry.name, k[1], k[0]))]
            if need:
                todo.append((k, need))
            elif bar:
                bar.update(1)
        if not todo:
            continue
        isolate = isolated(entry, plan.isolate)
        resources = None
        if needs_device(entry):
            gpu = ex.has_resource("GPU") if gpu is None else gpu
            if not gpu:
                message = "no Dask worker has the resource GPU (start one with `dask worker ADDRESS --resources GPU=1`)"
                for k, need in todo:
                    pending.setdefault(k, []).append((entry, _failed_task(need, message)))
                continue
            resources = {"GPU": 1}
        spec = tasks.entry_spec(entry, isolate)
        for batch in task_batches(todo, ex.cells_per_task, workers):
            items = [(k[0], k[1], problems[k], need) for k, need in batch]
            fut = ex.submit("cells", len(items), tasks.cells, spec, items, plan.timeout, resources=resources)
            futures[fut] = ("cells", (entry, batch))

    def record(k, entry, computed):
        s = by_name[k[0]]
        sweeps._record(plan, results, entry, s, k[1], problems[k], exacts[k], computed)
        if bar:
            bar.update(1)

    for k in list(pending):  # device-less cells of cached problems can be recorded now
        if k in exacts:
            for entry, computed in pending.pop(k):
                record(k, entry, computed)
    n_ref = 0
    failed: list = []  # (problem keys, message) of reference tasks that failed on their worker
    try:
        for fut in ex.as_completed(list(futures)):
            tag, payload = futures.pop(fut)
            if tag == "ref":
                try:
                    got = fut.result()
                except Exception as exc:
                    failed.append((payload, failure(exc)))
                    got = None
                if got is None:
                    fut.release()
                    continue
                for k, exact in zip(payload, got, strict=True):
                    exacts[k] = exact
                    plan.cache.store(problems[k], exact)
                    n_ref += 1
                    for entry, computed in pending.pop(k, ()):
                        record(k, entry, computed)
                fut.release()
                continue
            entry, batch = payload
            try:
                got = fut.result()
            except Exception as exc:  # e.g. a crash that kept killing workers, its library missing there
                got = [_failed_task(need, failure(exc)) for _, need in batch]
            fut.release()
            for (k, _), computed in zip(batch, got, strict=True):
                if k in exacts:
                    record(k, entry, computed)
                else:
                    pending.setdefault(k, []).append((entry, computed))
    finally:
        for fut in futures:  # interrupted: what was not finished is not wanted any more
            fut.cancel()
    if failed:
        keys = [k for batch, _ in failed for k in batch]
        names = ", ".join(f"{s}/{d}" for s, d in keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        causes = {m for _, m in failed}
        raise TaskError(f"the reference of {names} {failed[0][1]}"
                        + (f" ({len(causes) - 1} other causes)" if len(causes) > 1 else ""))
    if misses:
        log(f"reference: {n_ref} problems computed on the cluster; {len(problems)} problems judged in "
            f"{time.monotonic() - t0:.1f} s")


def _reference_batches(keys: list, problems: dict, logits: int, workers: int) -> list[list]:
    """Consecutive problems up to ``logits`` logits per batch (at least one each), and at least
    two batches per worker when there are enough problems."""
    cap = max(1, logits)
    total = sum(problems[k].logits.size for k in keys)
    cap = max(1, min(cap, total // max(1, 2 * workers)))
    batches, cur, n = [], [], 0
    for k in keys:
        size = problems[k].logits.size
        if cur and n + size > cap:
            batches.append(cur)
            cur, n = [], 0
        cur.append(k)
        n += size
    if cur:
        batches.append(cur)
    return batches
