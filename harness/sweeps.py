"""The accuracy, gradient and special-value sweeps: the cells of a campaign (its verdict is
:mod:`harness.campaign`'s).

For every implementation × dtype × scenario: build the problem, take its reference from the
cache (computed once, in parallel processes), call the implementation (fault-isolated, see
:mod:`harness.runner`), and judge the loss, the gradient and the inf/NaN pattern
(:mod:`harness.verdicts`). Finished cells go straight to the results file, so ``--resume`` skips
them.

Large problems (at least ``cache.BLOCKWISE_LOGITS`` logits: the language-model scenarios) are
taken one at a time, in bounded memory: the problem is built when its turn comes; each
implementation is called and its gradient held; then one pass of the reference in row blocks
(:func:`harness.reference.blocks`) judges every held gradient block by block
(:mod:`harness.blockwise`) and yields the loss, which the cache keeps (the gradient it never
stores: 17 GB for 8192 x 128256). Gradients are held together up to :data:`HOLD_BYTES` (or one
at a time, if one is larger), so a mid-size problem costs one reference pass for all
implementations and an 8192 x 128256 one holds a single 4.2 GB gradient at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness import registry, scenarios, verdicts, vocabulary
from harness.cache import ReferenceCache, is_large
from harness.results import Results
from harness.runner import CallFailed, Runner, Unsupported, isolated

KINDS = vocabulary.KINDS
#: Bytes of implementation gradients held for one blockwise reference pass (large problems).
HOLD_BYTES = 2 << 30


@dataclass
class Plan:
    entries: list[registry.Entry]
    scenarios: list[scenarios.Scenario]
    dtypes: list[str]
    budgets: dict
    kinds: tuple[str, ...] = KINDS
    workers: int | None = None
    isolate: bool | None = None  # None: isolate plugins only (runner.isolated)
    timeout: float = 60.0
    cache: ReferenceCache = field(default_factory=ReferenceCache)
    #: A distributed executor (harness.executor, ``--scheduler``): its workers take the small
    #: problems' references and cells; None: this process, as always.
    executor: object = None
    #: The contract profile every cell is judged by (``--contract``, harness.contracts); a cell
    #: that fails it but passes its implementation's own profile is a convention difference.
    contract: str = "pytorch"


def _pairs(plan: Plan):
    for s in plan.scenarios:
        for d in s.dtypes:
            if d in plan.dtypes:
                yield s, d


def _cell(kind, impl, dtype, scenario, status, message=None, metrics=None, budget=None, seconds=None,
          detail=None):
    cell = {"kind": kind, "impl": impl, "dtype": dtype, "scenario": scenario, "status": status,
            "message": message, "metrics": metrics, "budget": budget, "seconds": seconds}
    if detail:  # an error's bounded traceback, or what an isolated plugin printed
        cell["detail"] = detail
    return cell


_make_cell = _cell


class _Failure(str):
    """An error message (one line, what the console shows) with its bounded ``detail``."""

    detail: str | None = None

    @classmethod
    def of(cls, exc: Exception) -> _Failure:
        failure = cls(str(exc))
        failure.detail = getattr(exc, "detail", None)
        return failure


class _NotSupported(_Failure):
    """An op the implementation declined for this problem (it raised ``NotImplementedError``,
    or an isolated plugin's ``supports()`` said no): its cell is 'unsupported', with the message."""


def _failed(errors: dict, ops) -> list[str]:
    """What a special-value cell reports as errors: the ops that failed, not those declined."""
    return [f"{o}: {errors[o]}" for o in ops if o in errors and not isinstance(errors[o], _NotSupported)]


def _detail(errors: dict, ops) -> str | None:
    parts = [f"{op}: {errors[op].detail}" for op in ops if getattr(errors.get(op), "detail", None)]
    return "\n".join(parts) or None


def run(plan: Plan, results: Results, *, log: Callable[[str], None] = print, progress=None) -> None:
    """Fill ``results`` with every cell of the plan not already there."""
    pairs = list(_pairs(plan))
    wanted = [k for k in plan.kinds if k in KINDS]
    todo_pairs = [(s, d) for s, d in pairs
                  if any(not results.has((k, e.name, d, s.name)) for e in plan.entries for k in wanted)]
    if not todo_pairs:
        return
    large = [(s, d) for s, d in todo_pairs if is_large(s.size)]
    small = [(s, d) for s, d in todo_pairs if not is_large(s.size)]
    total = len(todo_pairs) * len(plan.entries)
    bar = progress(total) if progress else None
    try:
        if small:
            if getattr(plan.executor, "distributed", False):  # --scheduler: the same cells on Dask
                plan.executor.run_small(plan, results, small, wanted, log, bar)
            else:
                _run_small(plan, results, small, wanted, log, bar)
        if large:
            _run_large(plan, results, large, wanted, log, bar)
        plan.cache.report(log)
    finally:
        if bar:
            bar.close()


def _run_small(plan, results, todo_pairs, wanted, log, bar):
    """Reference and implementations at the same time, then the verdicts. The reference runs in
    worker processes (driven from a thread) while this process calls the implementations: they
    are independent, and on 2 cores this hides most of the reference behind jax's compilations
    (a cold default run: ~20 s less)."""
    from concurrent.futures import ThreadPoolExecutor

    problems = {(s.name, d): s.problem(d) for s, d in todo_pairs}
    keys = list(problems)
    t0 = time.monotonic()
    pool = ThreadPoolExecutor(1, thread_name_prefix="reference")
    try:
        future = pool.submit(plan.cache.get_many, [problems[k] for k in keys], workers=plan.workers, log=log)
        computed = {}
        for entry in plan.entries:
            runner = Runner(entry, isolate=isolated(entry, plan.isolate), timeout=plan.timeout)
            try:
                for s, d in todo_pairs:
                    computed[entry.name, s.name, d] = _compute(results, runner, entry, s, d, problems[s.name, d], wanted)
            finally:
                runner.close()
        exacts = dict(zip(keys, future.result()))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    log(f"reference: {len(keys)} problems ready in {time.monotonic() - t0:.1f} s (with the implementations' calls)")
    for entry in plan.entries:
        for s, d in todo_pairs:
            _record(plan, results, entry, s, d, problems[s.name, d], exacts[s.name, d],
                    computed[entry.name, s.name, d])
            if bar:
                bar.update(1)


def _call(runner, impl, problem, need) -> tuple[dict, dict, dict]:
    """Call loss and/or grad as the needed cells require: (outputs, errors, timings)."""
    outputs: dict = {}
    errors: dict = {}
    timings: dict = {}
    ops = []
    if "accuracy" in need or "special" in need:
        ops.append("loss")
    if ("gradient" in need or "special" in need) and impl.has_grad:
        ops.append("grad")
    if len(ops) == 2 and impl.fused:
        # one fused call; its time is both cells' (a training step's forward+backward)
        t0 = time.perf_counter()
        try:
            ys = runner.call("loss_and_grad", problem)
        except CallFailed as exc:
            ys = None
            errors["loss"] = errors["grad"] = _Failure.of(exc)
        timings["loss"] = timings["grad"] = time.perf_counter() - t0
        if ys is not None:
            if not (isinstance(ys, tuple) and len(ys) == 2):
                errors["loss"] = errors["grad"] = _Failure("loss_and_grad did not return a (loss, grad) pair")
                return outputs, errors, timings
            for op, y in zip(ops, ys, strict=True):
                try:
                    outputs[op] = verdicts.check_output(problem, y, op)
                except ValueError as exc:
                    errors[op] = _Failure(str(exc))
        return outputs, errors, timings
    for op in ops:
        t0 = time.perf_counter()
        try:
            y = runner.call(op, problem)
            outputs[op] = verdicts.check_output(problem, y, op)
        except Unsupported as exc:  # NotImplementedError: this op only is not supported
            errors[op] = _NotSupported(str(exc))
        except (CallFailed, ValueError) as exc:
            errors[op] = _Failure.of(exc)
        timings[op] = time.perf_counter() - t0
    if ops and all(isinstance(errors.get(op), _NotSupported) for op in ops):
        raise Unsupported(str(errors[ops[0]]))  # nothing supported: the problem is unsupported
    return outputs, errors, timings


def _compute(results, runner, entry, s, d, problem, wanted):
    """The implementation's side of the cells of one problem still to do: (need, unsupported
    reason, outputs, errors, timings), or None when every cell is done."""
    need = [k for k in wanted if not results.has((k, entry.name, d, s.name))]
    if not need:
        return None
    reason = entry.impl.supports(problem)
    if reason:
        return need, reason, {}, {}, {}
    try:
        outputs, errors, timings = _call(runner, entry.impl, problem, need)
    except Unsupported as exc:  # supports() asked in an isolated child, or NotImplementedError
        return need, str(exc), {}, {}, {}
    return need, None, outputs, errors, timings, runner.take_output()


def _record(plan, results, entry, s, d, problem, exact, computed):
    """Judge what :func:`_compute` got against the reference and add the cells."""
    if computed is None:
        return
    need, reason, outputs, errors, timings, *printed = computed
    from harness import contracts

    run_exact = contracts.expected(problem, exact, plan.contract)[0]  # `exact` itself for pytorch
    impl = entry.impl
    name = entry.name
    printed = printed[0] if printed else None

    def _cell(*args, **kwargs):  # what an isolated plugin printed goes with every cell it made
        cell = _make_cell(*args, **kwargs)
        if printed and "detail" not in cell:
            cell["detail"] = printed
        return cell

    if reason:
        for k in need:
            if k != "special" or _has_special(run_exact):
                results.add_cell(_cell(k, name, d, s.name, "unsupported", reason))
            else:
                results.mark_not_applicable((k, name, d, s.name))
        return
    for k in need:
        op = "grad" if k == "special" else vocabulary.quantity(k)
        if k == "gradient" and not impl.has_grad:
            results.add_cell(_cell(k, name, d, s.name, "unsupported", f"{name} provides no gradient"))
            continue
        if k == "special":
            if not _has_special(run_exact):  # no inf/NaN in the contract: no cell, and resume knows
                results.mark_not_applicable((k, name, d, s.name))
                continue
            failed = _failed(errors, ("loss", "grad"))
            if failed:
                results.add_cell(_cell(k, name, d, s.name, "error", "; ".join(failed),
                                       detail=_detail(errors, ("loss", "grad"))))
                continue
            if isinstance(errors.get("loss"), _NotSupported):
                results.add_cell(_cell(k, name, d, s.name, "unsupported", str(errors["loss"])))
                continue
            judged = contracts.judge(k, problem, outputs, exact, plan.budgets, run=plan.contract,
                                     own=contracts.of(impl))  # without a declined grad
            if judged is not None:
                status, message, metrics, record = judged
                results.add_cell(_cell(k, name, d, s.name, status, message, metrics) | record)
            continue
        if isinstance(errors.get(op), _NotSupported):
            results.add_cell(_cell(k, name, d, s.name, "unsupported", str(errors[op])))
            continue
        if op in errors:
            results.add_cell(_cell(k, name, d, s.name, "error", str(errors[op]), seconds=timings.get(op),
                                   detail=errors[op].detail))
            continue
        budget = vocabulary.budget_of(plan.budgets, d, vocabulary.quantity(k))
        status, message, metrics, record = contracts.judge(k, problem, outputs, exact, plan.budgets,
                                                           run=plan.contract, own=contracts.of(impl))
        results.add_cell(_cell(k, name, d, s.name, status, message, metrics, budget, timings.get(op)) | record)


# -- large problems: blockwise ---------------------------------------------------------------------


class _LargeReference:
    """The reference of one large problem: the loss and whether the gradient has inf/NaN, from
    the cache or from a blockwise pass; :meth:`judge` runs a pass judging held gradients."""

    def __init__(self, plan: Plan, problem, name: str, log):
        self.plan, self.problem, self.name, self.log = plan, problem, name, log
        hit = plan.cache.load_loss(problem)
        self.exact, self.grad_nonfinite = hit if hit is not None else (None, None)

    def loss(self):
        if self.exact is None:
            t0 = time.monotonic()
            if getattr(self.plan.executor, "distributed", False):  # --scheduler: row blocks on the cluster
                self.exact = self.plan.executor.large_loss(self.problem, self.plan.cache, name=self.name)
            else:
                self.exact = self.plan.cache.loss(self.problem, workers=self.plan.workers)
            self.log(f"reference: {self.name} loss (blockwise, {self.problem.logits.size:,} logits) "
                     f"in {time.monotonic() - t0:.1f} s")
        return self.exact

    def has_special(self) -> bool | None:
        """Whether a special-value cell exists (the loss or the gradient has inf/NaN); None
        while the gradient has not been seen."""
        import numpy as np

        if self.exact is not None and not np.isfinite(self.exact.loss_hi).all():
            return True
        return self.grad_nonfinite

    def judge(self, judges: list) -> None:
        """One pass of the reference in row blocks, feeding every judge each block; records the
        loss and the gradient's inf/NaN flag, and caches them."""
        import numpy as np

        from harness import reference

        if getattr(self.plan.executor, "distributed", False):  # --scheduler: the pass in row blocks on the cluster
            t0 = time.monotonic()
            exact, nonfinite = self.plan.executor.judge_large(self.problem, judges, name=self.name)
            self._judged(exact, nonfinite)
            self.log(f"reference: {self.name} (blockwise, {self.problem.logits.size:,} logits) on the cluster, "
                     f"judging {len(judges)} gradients there, in {time.monotonic() - t0:.1f} s")
            return
        blocks = reference.blocks(self.problem, grad=True, workers=self.plan.workers)
        it = iter(blocks)
        t_ref = t_judge = 0.0
        nonfinite = False
        while True:
            t0 = time.perf_counter()
            b = next(it, None)
            t_ref += time.perf_counter() - t0
            if b is None:
                break
            nonfinite = nonfinite or not bool(np.isfinite(b.hi).all())
            t0 = time.perf_counter()
            for j in judges:
                j.add(b)
            t_judge += time.perf_counter() - t0
            del b
        t0 = time.perf_counter()
        exact = blocks.loss()
        t_ref += time.perf_counter() - t0
        self._judged(exact, nonfinite)
        self.log(f"reference: {self.name} (blockwise, {self.problem.logits.size:,} logits) in {t_ref:.1f} s; "
                 f"judged {len(judges)} gradients in {t_judge:.1f} s")


    def _judged(self, exact, nonfinite: bool) -> None:
        if self.exact is None:
            self.exact = exact
        self.grad_nonfinite = nonfinite
        self.plan.cache.store_loss(self.problem, self.exact, nonfinite)


@dataclass
class _Item:
    """One implementation's outputs on a large problem, waiting for its cells."""

    entry: registry.Entry
    need: list
    reason: str | None = None
    outputs: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    judge: object = None  # blockwise.GradJudge, once judged

    def wants_pass(self, ref: _LargeReference) -> bool:
        if self.reason or self.outputs.get("grad") is None:
            return False
        return "gradient" in self.need or ("special" in self.need and ref.has_special() is not False)


def _run_large(plan, results, pairs, wanted, log, bar):
    runners: dict = {}
    try:
        for s, d in pairs:
            t0 = time.monotonic()
            problem = s.problem(d)
            log(f"problem: {s.name}/{d} built in {time.monotonic() - t0:.1f} s "
                f"({problem.logits.nbytes / 1e9:.2f} GB of logits)")
            _large_pair(plan, results, runners, s, d, problem, wanted, log, bar)
            del problem
    finally:
        for r in runners.values():
            r.close()


def _large_pair(plan, results, runners, s, d, problem, wanted, log, bar):
    from harness import blockwise

    ref = _LargeReference(plan, problem, f"{s.name}/{d}", log)
    held: list[_Item] = []
    done: list[_Item] = []

    def flush():
        if held:
            for it in held:
                it.judge = blockwise.GradJudge(problem, it.outputs["grad"], plan.budgets[d])
            ref.judge([it.judge for it in held])
            for it in held:
                _large_cells(plan, results, it, s, d, problem, ref)
                it.outputs.pop("grad", None)  # release the gradient
            held.clear()

    for entry in plan.entries:
        need = [k for k in wanted if not results.has((k, entry.name, d, s.name))]
        if not need:
            if bar:
                bar.update(1)
            continue
        item = _Item(entry, need, entry.impl.supports(problem))
        if item.reason is None:
            if held and sum(it.outputs["grad"].nbytes for it in held) + problem.logits.nbytes > HOLD_BYTES:
                flush()  # the next gradient would not fit beside the held ones
            if entry.name not in runners:
                runners[entry.name] = Runner(entry, isolate=isolated(entry, plan.isolate), timeout=plan.timeout)
            try:
                item.outputs, item.errors, item.timings = _call(runners[entry.name], entry.impl, problem, need)
            except Unsupported as exc:
                item.reason = str(exc)
        if item.wants_pass(ref):
            held.append(item)
        else:
            done.append(item)
        if bar:
            bar.update(1)
    flush()
    for it in done:
        _large_cells(plan, results, it, s, d, problem, ref)


def _large_cells(plan, results, it: _Item, s, d, problem, ref: _LargeReference) -> None:
    """The cells of one implementation on a large problem (the same decisions as :func:`_one`)."""
    from harness import blockwise

    name, impl = it.entry.name, it.entry.impl
    judged_by = {"contract": "pytorch"}  # large problems are judged by PyTorch's contract only (docs/contracts.md)

    def has_special() -> bool:
        ref.loss()
        if ref.has_special() is None:
            ref.judge([])  # learn whether the gradient has inf/NaN (no output to judge)
        return bool(ref.has_special())

    if it.reason:
        for k in it.need:
            if k != "special" or has_special():
                results.add_cell(_cell(k, name, d, s.name, "unsupported", it.reason))
            else:
                results.mark_not_applicable((k, name, d, s.name))
        return
    for k in it.need:
        op = "grad" if k == "special" else vocabulary.quantity(k)
        if k == "gradient" and not impl.has_grad:
            results.add_cell(_cell(k, name, d, s.name, "unsupported", f"{name} provides no gradient"))
            continue
        if k == "special":
            if not has_special():
                results.mark_not_applicable((k, name, d, s.name))
                continue
            failed = _failed(it.errors, ("loss", "grad"))
            if failed:
                results.add_cell(_cell(k, name, d, s.name, "error", "; ".join(failed),
                                       detail=_detail(it.errors, ("loss", "grad"))))
                continue
            if isinstance(it.errors.get("loss"), _NotSupported):
                results.add_cell(_cell(k, name, d, s.name, "unsupported", str(it.errors["loss"])))
                continue
            exact = ref.loss()
            judged = blockwise.judge_special(problem, it.outputs, exact.loss_hi, exact.loss_lo, it.judge)
            if judged is not None:
                status, message, metrics = judged
                results.add_cell(_cell(k, name, d, s.name, status, message, metrics) | judged_by)
            continue
        if isinstance(it.errors.get(op), _NotSupported):
            results.add_cell(_cell(k, name, d, s.name, "unsupported", str(it.errors[op])))
            continue
        if op in it.errors:
            results.add_cell(_cell(k, name, d, s.name, "error", str(it.errors[op]), seconds=it.timings.get(op),
                                   detail=it.errors[op].detail))
            continue
        budget = vocabulary.budget_of(plan.budgets, d, vocabulary.quantity(k))
        if op == "loss":
            exact = ref.loss()
            status, message, metrics = blockwise.judge_loss(problem, it.outputs["loss"], exact.loss_hi,
                                                            exact.loss_lo, plan.budgets[d])
        else:
            status, message, metrics = it.judge.result()
        results.add_cell(_cell(k, name, d, s.name, status, message, metrics, budget, it.timings.get(op)) | judged_by)


def _has_special(exact) -> bool:
    import numpy as np

    arrays = [exact.loss_hi] + ([exact.grad_hi] if exact.grad_hi is not None else [])
    return any(not np.isfinite(a).all() for a in arrays)
