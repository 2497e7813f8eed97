"""What a Dask worker runs: top-level functions of the installed package (Dask pickles them by
reference, so the workers need the same xent-harness; no code travels).

* :func:`reference` — the exact references of a batch of small problems (gradients included);
* :func:`cells` — one implementation's outputs on a batch of problems, called through
  :class:`harness.runner.Runner` with the same isolation as a local run (a raising, hanging or
  crashing plugin becomes an error in its result, its child dies, the worker goes on);
* :func:`row_losses` / :func:`reduce_losses` — one large problem's per-row losses in blocks,
  and their exact reduction on the client;
* :func:`grad_blocks` — one large problem's reference gradient in blocks, judging the held
  implementation gradients there (the blockwise gradient cells, merged on the client).
"""

from __future__ import annotations

from types import SimpleNamespace

from harness import registry, sweeps
from harness.runner import Runner

#: Built-ins loaded in this worker process, kept between tasks (jax's compilations, torch's
#: threads), as one local run keeps them.
_LOADED: dict[str, registry.Entry] = {}


def _allow_children() -> None:
    """Let this task start child processes. A Dask worker is a daemonic process unless its
    nanny was told otherwise (``distributed.worker.daemon: False``, what the LocalCluster here
    and docs/dask.md's workers set); a daemon may not have children, and the Runner's isolated
    child and the reference's pool are children. The worker's children are killed by the Runner
    (``close``) before the task returns, so none outlives it."""
    import multiprocessing as mp

    proc = mp.current_process()
    if proc.daemon:
        proc._config["daemon"] = False  # the flag multiprocessing checks; no public setter


def entry_spec(entry: registry.Entry, isolate: bool) -> dict:
    """What a worker needs to find the same implementation: its locator and, for an isolated
    one, its declarations (the worker never imports an isolated plugin either)."""
    from harness import runner

    declared = _declarations(entry.impl) if isolate else None
    return {"name": entry.name, "origin": entry.origin, "extra": {k: v for k, v in entry.extra.items()
                                                                  if isinstance(v, str)},
            "locator": runner.locator(entry), "isolate": isolate, "declared": declared}


def _declarations(impl: registry.Implementation) -> dict:
    if isinstance(impl, registry.Declared):
        return {"name": impl.name, "description": impl.description, "origin": impl.origin,
                "dtypes": sorted(impl.dtypes), "devices": list(impl.devices), "features": sorted(impl.features),
                "canary": impl.canary, "opt_in": impl.opt_in, "grad": impl.has_grad, "fused": impl.fused,
                "available": impl.available()}
    from harness import runner

    return runner.describe(impl)


def _entry(spec: dict) -> registry.Entry:
    if spec["isolate"]:
        return registry.Entry(spec["name"], spec["origin"], registry.Declared(spec["declared"]), extra=spec["extra"])
    key = repr(spec["locator"])
    if key not in _LOADED:
        from harness import runner

        impl = runner._load(tuple(spec["locator"]))
        _LOADED[key] = registry.Entry(spec["name"], spec["origin"], impl, extra=spec["extra"])
    return _LOADED[key]


class _Nothing:
    """The results of a task's view: no cell is done (the client sent only the needed ones)."""

    @staticmethod
    def has(key) -> bool:
        return False


def cells(spec: dict, items: list, timeout: float) -> list:
    """For each ``(scenario, dtype, problem, need)``: what :func:`harness.sweeps._compute`
    returns for it locally (outputs, errors, timings, printed output, or the unsupported
    reason); the client judges them against the reference."""
    _allow_children()
    entry = _entry(spec)
    runner = Runner(entry, isolate=spec["isolate"], timeout=timeout)
    out = []
    try:
        for scenario, dtype, problem, need in items:
            out.append(sweeps._compute(_Nothing, runner, entry, SimpleNamespace(name=scenario), dtype,
                                       problem, need))
    finally:
        runner.close()
    return out


def reference(problems: list) -> list:
    """The references (with gradients) of small problems, in this worker process (one core:
    the cluster's parallelism is across tasks)."""
    from harness import reference as ref

    return [ref.evaluate(p, workers=1) for p in problems]


# Blocks has no public API for blocks evaluated elsewhere: these two use its _block (one block's
# rows) and the state its loss() reduces, exactly as its own iteration fills it.
def row_losses(problem, start: int, stop: int):
    """Rows ``start:stop`` of a problem's per-row losses (the values the reduction sums, at the
    reference's starting precision), with the precision and unresolved count of the block."""
    from harness import reference as ref
    from harness.reference.arithmetic import START_BITS

    if problem.num_classes == 0:  # Blocks.loss answers C = 0 without rows
        return [], START_BITS, 0
    ev = ref.blocks(problem, grad=False, workers=1)
    per = ev.slices[0].stop - ev.slices[0].start or 1  # the reference's own cache-sized blocks
    losses, bits, unresolved = [], START_BITS, 0
    for a in range(start, stop, per):
        b = ev._block(slice(a, min(stop, a + per)), ev.su, START_BITS)
        losses.extend(b.losses)
        bits, unresolved = max(bits, b.bits), unresolved + b.unresolved
    return losses, bits, unresolved


def grad_blocks(problem, ys: list, options: list, row_scale, start: int, stop: int):
    """Rows ``start:stop`` of a large problem's reference with its gradient, judging there the
    same rows of each implementation gradient in ``ys`` (``options``: its budget and exact-quantile
    allowance; ``row_scale``: the problem's per-row gradient scale, computed once on the
    client): the :func:`row_losses` triple, the judges (:class:`harness.blockwise.Judge`, merged
    on the client by ``GradJudge.take``) and whether the reference gradient has inf/NaN there.
    Only the judges' accumulators go back, never a gradient."""
    import numpy as np

    from harness import blockwise
    from harness import reference as ref
    from harness.reference.arithmetic import START_BITS
    from harness.reference.row_blocks import GradBlock

    judges = [blockwise.GradJudge(problem, y, o["budget"], row_scale=row_scale, exact_quantiles=o["exact_quantiles"],
                                  threads=1) for y, o in zip(ys, options, strict=True)]
    losses, bits, unresolved, nonfinite = [], START_BITS, 0, False
    if problem.num_classes:  # C = 0: no rows to judge, Blocks.loss answers without them
        ev = ref.blocks(problem, grad=True, workers=1)
        per = ev.slices[0].stop - ev.slices[0].start or 1  # the reference's own cache-sized blocks
        for a in range(start, stop, per):
            rows = slice(a, min(stop, a + per))
            b = ev._block(rows, ev.su, START_BITS)
            losses.extend(b.losses)
            bits, unresolved = max(bits, b.bits), unresolved + b.unresolved
            block = GradBlock(rows, b.g_hi, b.g_lo, b.g_bound)
            nonfinite = nonfinite or not bool(np.isfinite(block.hi).all())
            for j in judges:
                j.add(block)
    return (losses, bits, unresolved), [j.judge for j in judges], nonfinite


def reduce_losses(problem, parts: list):
    """The loss from :func:`row_losses` blocks in row order: what ``Blocks.loss`` does after its
    own iteration (including its retry at a higher precision, done here on the client)."""
    from harness import reference as ref

    ev = ref.blocks(problem, grad=False, workers=1)
    for losses, bits, unresolved in parts:
        ev._losses.extend(losses)
        ev._bits = max(ev._bits, bits)
        ev._unresolved += unresolved
    ev._done = True
    return ev.loss()
