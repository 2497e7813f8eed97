"""The accuracy, gradient and special-value sweeps, and the verdicts they add up to.

For every implementation × dtype × scenario: build the problem, take its reference from the
cache (computed once, in parallel processes), call the implementation (fault-isolated, see
:mod:`harness.runner`), and judge the loss, the gradient and the inf/NaN pattern
(:mod:`harness.verdicts`). Finished cells go straight to the results file, so ``--resume`` skips
them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import registry, scenarios, verdicts
from harness.cache import ReferenceCache
from harness.results import Results
from harness.runner import CallFailed, Runner

KINDS = ("accuracy", "gradient", "special")


@dataclass
class Plan:
    entries: list[registry.Entry]
    scenarios: list[scenarios.Scenario]
    dtypes: list[str]
    budgets: dict
    kinds: tuple[str, ...] = KINDS
    workers: int | None = None
    isolate: bool | None = None  # None: isolate --impl plugins only
    timeout: float = 60.0
    cache: ReferenceCache = field(default_factory=ReferenceCache)


def _pairs(plan: Plan):
    for s in plan.scenarios:
        for d in s.dtypes:
            if d in plan.dtypes:
                yield s, d


def _cell(kind, impl, dtype, scenario, status, message=None, metrics=None, budget=None, seconds=None):
    return {"kind": kind, "impl": impl, "dtype": dtype, "scenario": scenario, "status": status,
            "message": message, "metrics": metrics, "budget": budget, "seconds": seconds}


def _budget(budgets: dict, dtype: str, kind: str) -> dict:
    q = "loss" if kind == "accuracy" else "grad"
    return {"ulp": budgets[dtype][f"{q}_ulp"], "scaled": budgets[dtype][f"{q}_scaled"]}


def run(plan: Plan, results: Results, *, log: Callable[[str], None] = print, progress=None) -> None:
    """Fill ``results`` with every cell of the plan not already there."""
    pairs = list(_pairs(plan))
    wanted = [k for k in plan.kinds if k in KINDS]
    todo_pairs = [(s, d) for s, d in pairs
                  if any(not results.has((k, e.name, d, s.name)) for e in plan.entries for k in wanted)]
    if not todo_pairs:
        return
    problems = {(s.name, d): s.problem(d) for s, d in todo_pairs}
    keys = list(problems)
    t0 = time.monotonic()
    exacts = dict(zip(keys, plan.cache.get_many([problems[k] for k in keys], workers=plan.workers, log=log)))
    log(f"reference: {len(keys)} problems ready in {time.monotonic() - t0:.1f} s")
    total = len(todo_pairs) * len(plan.entries)
    bar = progress(total) if progress else None
    for entry in plan.entries:
        isolate = plan.isolate if plan.isolate is not None else ("spec" in entry.extra)
        runner = Runner(entry, isolate=isolate, timeout=plan.timeout)
        try:
            for s, d in todo_pairs:
                _one(plan, results, runner, entry, s, d, problems[(s.name, d)], exacts[(s.name, d)], wanted)
                if bar:
                    bar.update(1)
        finally:
            runner.close()
    if bar:
        bar.close()


def _one(plan, results, runner, entry, s, d, problem, exact, wanted):
    impl = entry.impl
    name = entry.name
    need = [k for k in wanted if not results.has((k, name, d, s.name))]
    if not need:
        return
    reason = impl.supports(problem)
    if reason:
        for k in need:
            if k != "special" or _has_special(exact):
                results.add_cell(_cell(k, name, d, s.name, "unsupported", reason))
        return
    outputs: dict = {}
    errors: dict = {}
    timings: dict = {}
    ops = []
    if "accuracy" in need or "special" in need:
        ops.append("loss")
    if ("gradient" in need or "special" in need) and impl.has_grad:
        ops.append("grad")
    for op in ops:
        t0 = time.perf_counter()
        try:
            y = runner.call(op, problem)
            outputs[op] = verdicts.check_output(problem, y, op)
        except (CallFailed, ValueError) as exc:
            errors[op] = str(exc)
        timings[op] = time.perf_counter() - t0
    for k in need:
        op = "loss" if k == "accuracy" else "grad"
        if k == "gradient" and not impl.has_grad:
            results.add_cell(_cell(k, name, d, s.name, "unsupported", f"{name} provides no gradient"))
            continue
        if k == "special":
            if not _has_special(exact):
                continue
            failed = [f"{o}: {errors[o]}" for o in ("loss", "grad") if o in errors]
            if failed:
                results.add_cell(_cell(k, name, d, s.name, "error", "; ".join(failed)))
                continue
            judged = verdicts.judge_special(problem, outputs, exact)
            if judged is not None:
                status, message, metrics = judged
                results.add_cell(_cell(k, name, d, s.name, status, message, metrics))
            continue
        if op in errors:
            results.add_cell(_cell(k, name, d, s.name, "error", errors[op], seconds=timings.get(op)))
            continue
        hi, lo = (exact.loss_hi, exact.loss_lo) if op == "loss" else (exact.grad_hi, exact.grad_lo)
        budget = _budget(plan.budgets, d, k)
        status, message, metrics = verdicts.judge(problem, op, outputs[op], hi, lo, plan.budgets[d])
        results.add_cell(_cell(k, name, d, s.name, status, message, metrics, budget, timings.get(op)))


def mark_known(cells: list[dict], known: list[dict]) -> int:
    """Annotate failing cells that match a known failure; returns how many."""
    from harness.budgets import known_reason

    n = 0
    for c in cells:
        c.pop("known", None)
        if c["status"] in ("fail", "error"):
            reason = known_reason(c, known)
            if reason:
                c["known"] = reason
                n += 1
    return n


def _has_special(exact) -> bool:
    import numpy as np

    arrays = [exact.loss_hi] + ([exact.grad_hi] if exact.grad_hi is not None else [])
    return any(not np.isfinite(a).all() for a in arrays)


# -- verdicts --------------------------------------------------------------------------------------


def implementation_rows(entries: list[registry.Entry], skipped: list[registry.Entry], cells: list[dict]) -> list[dict]:
    """One row per implementation with its overall verdict: fail > error > pass."""
    rows = []
    for e in entries + skipped:
        reason = e.unavailable()
        row = {"name": e.name, "origin": e.origin, "available": reason is None, "reason": reason}
        if e.impl is not None:
            row |= {k: v for k, v in e.impl.describe().items() if k not in ("name", "origin")}
        counts = Counter("known" if c.get("known") else c["status"] for c in cells if c["impl"] == e.name)
        row["counts"] = {k: counts.get(k, 0) for k in ("pass", "fail", "error", "unsupported", "known")}
        if reason is not None or e not in entries:
            row["verdict"] = "unavailable" if reason is not None else "skipped"
        elif counts.get("fail"):
            row["verdict"] = "fail"
        elif counts.get("error"):
            row["verdict"] = "error"
        else:
            row["verdict"] = "pass"
        rows.append(row)
    return rows


def summary(impl_rows: list[dict], cells: list[dict], throughput: list[dict], *,
            canaries_expected: bool = True) -> dict:
    """The run's verdict. Canaries are expected to fail when the run includes them by default
    (``run``); one named explicitly (``check --impl numpy-naive``) is judged like any other."""
    counts = Counter("known" if c.get("known") else c["status"] for c in cells)
    failing = [r["name"] for r in impl_rows if r["verdict"] in ("fail", "error")]
    gate = [r["name"] for r in impl_rows if r["verdict"] in ("fail", "error")
            and not (canaries_expected and r.get("canary"))]
    errors = sum(1 for r in throughput if r.get("status") == "error")
    return {"verdict": "fail" if gate else "pass",
            "counts": {k: counts.get(k, 0) for k in ("pass", "fail", "error", "unsupported", "known")},
            "failing": failing, "throughput_errors": errors}
