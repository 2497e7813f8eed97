"""The worst-case hunt on a Dask cluster (``xent-harness hunt --scheduler local[:N]|tcp://...``):
independent search branches, one per worker, exchanging their best inputs every round.

Each of the B branches (B = the cluster's workers when the hunt starts) has its own strategies,
seeded from the hunt's seed and the branch number (:func:`branch_seed`), and its own archive;
both live on the client, since proposing rows is cheap and evaluating them (the implementation's
call and the exact reference) is the work. A round:

1. every branch proposes ``ceil(ROUND / B)`` rows per strategy, so that a round of B branches
   evaluates about as many rows as a local round (``--evaluations N`` counts the rows of all
   branches; the last round is shared evenly between them);
2. the client sends one task per branch (its candidates and the implementation's locator,
   :func:`harness.executor.tasks.entry_spec`); the worker scores them with the local hunt's own
   :class:`~harness.hunt.search.Evaluator`, the implementation called through
   :class:`~harness.runner.Runner` with the same isolation as a local hunt (kept alive in the
   worker process between rounds, closed at the end);
3. when every branch's scores are in, in branch order whatever order the tasks finished in:
   each branch journals and observes its own, the client's archive takes them all, and then
   every branch's archive receives the client's top :data:`EXCHANGE` rows, which its ``refine``
   strategy mutates in the next round (the exchange).

So the run is deterministic for a fixed seed, evaluation count and branch count: the same
journal and ``hunt.json`` (``tests/test_dask_hunt.py``). Another number of workers means other
branches, hence another search. The journal keys each branch's rounds by ``<phase>.b<branch>``
and its header records the branch count, so ``--resume`` replays what it holds and refuses a
cluster of another size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.hunt.search import ROUND, HuntError, _objective
from harness.hunt.strategies import Archive, make

#: Rows of the client's archive every branch receives after each round.
EXCHANGE = 8

#: Runners kept in a worker process between the rounds of a hunt (``close_runners`` ends them).
_RUNNERS: dict = {}


def branch_seed(seed: int, branch: int) -> int:
    """The seed of one branch's strategies: independent streams for every (seed, branch)."""
    return int(np.random.SeedSequence([seed, branch, 0x48554E54]).generate_state(1)[0])


# -- on a worker -----------------------------------------------------------------------------------


def evaluate(spec: dict, dtype: str, quantity: str, budget: dict, timeout: float, cands: list) -> tuple[list, int]:
    """A branch's round on a worker: the scores of ``cands`` and the implementation calls made."""
    from harness.executor import tasks
    from harness.formats import FORMATS
    from harness.hunt import search
    from harness.runner import Runner

    tasks._allow_children()
    key = (repr(spec["locator"]), spec["isolate"], timeout)
    runner = _RUNNERS.get(key)
    if runner is None:
        runner = _RUNNERS[key] = Runner(tasks._entry(spec), isolate=spec["isolate"], timeout=timeout)
    ev = search.Evaluator(runner, FORMATS[dtype], quantity, budget)
    scores = ev(cands)
    return scores, ev.calls


def close_runners() -> int:
    """End the runners (and their isolated children) this worker kept for a hunt."""
    n = len(_RUNNERS)
    for r in _RUNNERS.values():
        r.close()
    _RUNNERS.clear()
    return n


# -- on the client ---------------------------------------------------------------------------------


@dataclass
class Stats:
    """What :func:`harness.hunt.output.pair_record` reads from an Evaluator: rows evaluated (not
    replayed from the journal) and implementation calls, summed over the branches."""

    evaluations: int = 0
    calls: int = 0


@dataclass
class _Branch:
    index: int
    archive: Archive
    strats: list
    cands: list = field(default_factory=list)
    owners: list = field(default_factory=list)


def _shares(total: int, sizes: list[int]) -> list[int]:
    """``total`` rows split as evenly as possible over branches proposing ``sizes`` rows."""
    B = len(sizes)
    want = [total // B + (b < total % B) for b in range(B)]
    return [min(w, s) for w, s in zip(want, sizes, strict=True)]


def search(ex, spec: dict, dtype: str, quantity: str, budget: dict, space, *, strategies: list[str], seed: int,
           objective: str, evaluations: int | None, deadline: float | None, journal, pair: str, phase: str, top: int,
           timeout: float = 60.0, progress: Callable | None = None) -> tuple[dict, Stats]:
    """:func:`harness.hunt.search.search` over ``ex.n_workers()`` branches on a Dask executor:
    the same result dict (plus ``branches``) and the evaluation counts."""
    from harness.executor.cluster import failure

    B = ex.n_workers()
    per = max(1, math.ceil(ROUND / B))
    keep = max(64, 4 * top)
    branches = []
    for b in range(B):
        archive = Archive(keep=keep)
        branches.append(_Branch(b, archive, make(strategies, space, branch_seed(seed, b), archive)))
    merged = Archive(keep=keep)
    stats = Stats()
    done, rnd, replayed = 0, 0, 0
    t0 = time.monotonic()
    convergence = []
    while (evaluations is None or done < evaluations) and (deadline is None or time.monotonic() < deadline):
        for br in branches:
            br.cands, br.owners = [], []
            for s in br.strats:
                got = s.propose(per)
                br.cands += got
                br.owners += [s] * len(got)
        if evaluations is not None and evaluations - done < sum(len(br.cands) for br in branches):
            for br, n in zip(branches, _shares(evaluations - done, [len(br.cands) for br in branches]), strict=True):
                br.cands, br.owners = br.cands[:n], br.owners[:n]
        scores: dict = {}
        futures: dict = {}
        for br in branches:
            rec = journal.get((pair, f"{phase}.b{br.index}", rnd)) or {"candidates": [], "scores": []}
            cand_json = [c.to_json() for c in br.cands]
            known = min(len(rec["candidates"]), len(br.cands))
            if rec["candidates"][:known] != cand_json[:known]:
                raise HuntError(f"--resume: round {rnd} of {pair} {phase} branch {br.index} in {journal.path} does "
                                "not match this request's proposals; use a new --out")
            scores[br.index] = list(rec["scores"][:known])
            replayed += known
            if known < len(br.cands):
                fut = ex.submit("hunt", len(br.cands) - known, evaluate, spec, dtype, quantity, budget, timeout,
                                br.cands[known:])
                futures[fut] = (br, known, cand_json)
        try:
            fresh = {}
            for fut in ex.as_completed(list(futures)):
                br, known, cand_json = futures[fut]
                try:
                    fresh[br.index] = fut.result()
                except Exception as exc:
                    raise HuntError(f"hunt {pair}: branch {br.index} {failure(exc)}") from None
                fut.release()
        finally:
            for fut in futures:  # a failure or an interrupt: the other branches' rounds are not wanted
                if not fut.done():
                    fut.cancel()
        for br, known, cand_json in sorted(futures.values(), key=lambda v: v[0].index):
            got, calls = fresh[br.index]
            journal.append({"pair": pair, "phase": f"{phase}.b{br.index}", "round": rnd, "offset": known,
                            "branch": br.index, "candidates": cand_json[known:], "scores": got})
            scores[br.index] += got
            stats.evaluations += len(got)
            stats.calls += calls
        for br in branches:  # observe in branch order: what makes the run deterministic
            objs = [_objective(s, objective) for s in scores[br.index]]
            for s in br.strats:
                mine = [(c, o) for c, o, w in zip(br.cands, objs, br.owners, strict=True) if w is s]
                s.observe([c for c, _ in mine], [o for _, o in mine])
            for c, o, sc, w in zip(br.cands, objs, scores[br.index], br.owners, strict=True):
                detail = {**sc, "strategy": w.name, "branch": br.index}
                br.archive.add(c, o, detail)
                merged.add(c, o, detail)
        best = merged.top(EXCHANGE)
        for br in branches:  # the exchange: every branch refines the global best next round
            for o, _, c, detail in best:
                br.archive.add(c, o, detail)
        n = sum(len(br.cands) for br in branches)
        done += n
        rnd += 1
        convergence.append([done, round(time.monotonic() - t0, 3), merged.worst])
        if progress:
            progress(n, merged.worst)
    return ({"evaluations": done, "replayed": replayed, "rounds": rnd, "seconds": time.monotonic() - t0,
             "worst": merged.worst, "convergence": convergence, "top": merged.top(top, distinct=True), "branches": B},
            stats)


def finish(ex) -> None:
    """Close the runners the workers kept (a remote cluster outlives the hunt)."""
    try:
        ex.client.run(close_runners)
    except Exception:  # a worker gone at the end loses nothing: its runner died with it
        pass
