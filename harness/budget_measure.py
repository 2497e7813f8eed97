"""Budgets from measured maxima: the float64 control and ``xent-harness budgets measure``.

NumPy's accuracy suite sets its ULP budgets from the largest errors its implementations were
measured to make. The harness does the same, per output dtype and quantity (the loss, the
gradient): :func:`measure` runs the accuracy and gradient sweeps of the correct implementations
(by default numpy, torch and jax, plus :class:`Float64Control`) over the selected scenarios
through :func:`harness.campaign.run`, with budgets under which every finite error passes (so
every cell records its metrics), and collects each cell's ``ulp_max`` and ``scaled_max``.
:func:`derive` turns them into budgets, :func:`write` records both in ``harness/budgets.toml``
(its budget tables, and the ``[measured]`` record after :data:`MEASURED_MARKER`), keeping the
file's comments. The scenarios are whatever :func:`harness.scenarios.select` selects, so
re-running the command is how the budgets follow the scenario space when it grows (by default
the whole space: the generated scenarios beyond `check`'s subset too, so the budgets hold for
`check --full`).

How the two budgets are derived. An element passes when its error is within the ULP budget *or*
the scaled budget (harness/budgets.toml), so the two maxima are not independent: torch's
``lse(x) - x_t`` is 1e7 float32 ULPs off a tiny loss, and the scaled budget admits it; an
overflow to inf next to the largest finite number is 1 ULP off but infinitely many scaled units.
Per dtype:

* **ULP budget** (``loss_ulp`` and ``grad_ulp``): the correct-digits door, so it is measured on
  the implementation built for correct digits, the float64 control (:data:`ULP_SOURCES`), on
  the loss: its largest ULP error times the headroom, rounded up on :data:`GRID`. In the
  formats narrower than float64 its loss is the exact value rounded twice (0.5 ULP measured),
  in float64 the log1p form's few ULPs. numpy, torch and jax compute in the format itself (their
  sums over 32768 classes are several ULPs off in float32, ordinary arithmetic that the scaled
  budget admits), so their ULP maxima are shown, not used. The gradient has the loss's door: no
  float arithmetic gives correct digits in every gradient element (p_j - t_j cancels for
  probability targets and smoothing; in float64 the e^(x_j - m) tails lose log2|x_j - m|
  bits).
* **scaled budget**: per implementation, the largest ``scaled_max`` of its cells whose
  ``ulp_max`` exceeds the ULP budget (a cell within the ULP budget needs no scaled budget; for
  the others scaled_max bounds what their elements beyond the ULP budget need, since a cell
  keeps maxima, not pairs); the budget is the largest over the implementations times the
  headroom, rounded up on :data:`GRID`.

Headroom :data:`HEADROOM` = 2: an implementation whose errors are up to twice the worst measured
ones still passes; one a few more ULPs off than the correct implementations does not. The grid
(0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, ...: powers of two and their 1.5 multiples) keeps a
re-measurement that moves a maximum a little from moving the budget. Maxima are recorded to 3
significant digits (:func:`sig3`).

Outliers: a cell that needs more than :data:`OUTLIER` (4, twice what the headroom admits) times
the larger of 1 unit and the largest any other implementation needs is an accuracy weakness of
its implementation, not a budget: it is left out, and printed (with whether it fails the
budget), to be listed with the reason as known failures in pyproject.toml
([[tool.xent-harness.known-failures]]).
Cells that already are known failures, and cells with inf/NaN where the contract is finite
(their ULP error is inf, or beyond :data:`OVERFLOW_ULP` with an infinite scaled error: a failure
under any budget), define no budget; the table lists them.

The control, :class:`Float64Control`, is what a float64 computation of the contract achieves:
the logits upcast to float64, the max-shifted log-sum-exp in the log1p form (a tiny loss keeps
its digits), the target gradient without cancellation, float64 sums, each result rounded once
to the logits' dtype (``metrics.round_to_format``: bfloat16 without a double rounding through
float32), in blocks of rows (an LM-sized batch needs no float64 copy). It is not a registered
implementation (a measuring instrument, not a library under test): ``--impl`` takes it as
:data:`CONTROL_SPEC`. tests/test_budget_measure.py measures it against the reference.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from harness import metrics, vocabulary
from harness.implementations._degenerate import degenerate_result, is_degenerate
from harness.problem import Problem
from harness.registry import Implementation

F64 = np.float64

#: The control's spec for ``--impl`` (it is not a registered built-in: it is a measuring
#: instrument, not a library under test).
CONTROL_SPEC = "harness.budget_measure:Float64Control"
CONTROL_NAME = "float64-control"
#: Implementations measured by default (those not installed are skipped with their reason).
DEFAULT_IMPLS = ("numpy", "torch", "jax")
#: The implementations whose loss errors set the ULP budgets: the float64 control, the one
#: built for correct digits (float64 sums, the log1p form, one rounding to the format).
ULP_SOURCES = (CONTROL_NAME,)
#: The largest ULP error of an infinite result next to the largest finite value (the
#: reference rounds to it; metrics.ulp_error counts inf as its neighbour): beyond it, a
#: non-finite scaled error is a failure under any budget.
OVERFLOW_ULP = 1.5
#: The budget is the measured maximum times this.
HEADROOM = 2.0
#: A cell needing more than OUTLIER x what the other implementations need (or OUTLIER units) is a
#: finding about its implementation, not a budget.
OUTLIER = 4.0
#: Budget values: powers of two and 1.5 times them.
GRID = tuple(sorted({m * 2.0**k for k in range(-1, 60) for m in (1.0, 1.5)}))


# -- the float64 control ---------------------------------------------------------------------------


class Float64Control(Implementation):
    """The contract in float64, each result rounded once to the logits' dtype."""

    name = CONTROL_NAME
    description = ("control: float64 max-shifted log-sum-exp in the log1p form, cancellation-free "
                   "target gradient, rounded once to the logits' dtype (what float64 achieves)")

    def loss(self, problem: Problem) -> np.ndarray:
        return _control(problem, want_grad=False)[0]

    def grad(self, problem: Problem) -> np.ndarray:
        return _control(problem, want_grad=True)[1]

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        return _control(problem, want_grad=True)


#: Logits per block of rows (the float64 temporaries of a block: a few times 8 MB).
_BLOCK = 1 << 20


def _round(v, fmt) -> np.ndarray:
    """float64 values rounded once to ``fmt`` (0-d stays 0-d)."""
    v = np.asarray(v, F64)
    return metrics.round_to_format(v, np.zeros_like(v), fmt).reshape(v.shape)


def _control(problem: Problem, want_grad: bool):
    """(loss, gradient or None) in the logits' dtype and shapes, computed in float64 in blocks
    of rows (an LM-sized batch needs no float64 copy of its logits) and rounded once."""
    if is_degenerate(problem):
        loss, g = degenerate_result(problem)
        return loss, (g if want_grad else None)
    x, t = problem.rows()
    M, C = x.shape
    fmt = problem.format
    eps = problem.label_smoothing
    w = np.ones(C) if problem.weight is None else problem.weight.astype(F64)
    if problem.probability_target:
        kept = None
        denom = float(M)  # PyTorch divides by numel / C
    else:
        kept = t != problem.ignore_index
        wy_all = np.where(kept, w[np.where(kept, t, 0)], 0.0)
        denom = float(wy_all.sum())
    red = problem.reduction
    # 'mean' divides the gradient by denom (a batch with nothing kept: PyTorch's gradient is 0;
    # kept weights summing to 0 divide by 0, inf/NaN as in the reference)
    nothing = red == "mean" and kept is not None and not kept.any()
    divisor = denom if red == "mean" else 1.0
    per = np.empty(M)
    grad = np.empty((M, C), problem.dtype) if want_grad else None
    step = max(1, _BLOCK // C)
    with np.errstate(all="ignore"):
        for a in range(0, M, step):
            r = slice(a, min(M, a + step))
            per[r], g = _control_rows(x[r].astype(F64), t[r], None if kept is None else kept[r], w, eps, want_grad)
            if want_grad:
                grad[r] = _round(np.zeros_like(g) if nothing else g / divisor, fmt)
        if red == "none":
            loss = per
        elif red == "sum":
            loss = per.sum()
        else:
            loss = per.sum() / denom
    out = _round(np.asarray(loss).reshape(problem.output_shape), fmt)
    return out, (problem.unrows(grad) if want_grad else None)


def _control_rows(x, t, kept, w, eps: float, want_grad: bool):
    """Per-row losses (float64, weighted, ignored rows 0) and the unreduced gradient rows.

    The gradient of a row is G_j = Q p_j - q_j with q_c the row's target weights (w_c t'_c for
    probability targets; (1 - eps) w_y [c = y] + (eps / C) w_c for class indices) and Q their
    sum, written without the cancellation of 1 - p_j: G_j = p_j (Q - q_j) - q_j (1 - p_j), where
    1 - p_j = (sum_{k != j} e_k) / S and Q - q_j are summed directly for the dominant entry (for
    the others they are at least half of S and Q). So p_t - 1 of a near-certain target keeps its
    digits; what cancels is only a true difference of the two terms."""
    M, C = x.shape
    rows = np.arange(M)
    m = x.max(axis=1)
    k = x.argmax(axis=1)
    e = np.exp(x - m[:, None])
    e[rows, k] = 0.0
    s = e.sum(axis=1)  # the sum over j != argmax: S = 1 + s, and log S = log1p(s) exactly
    e[rows, k] = 1.0
    S = 1.0 + s
    neg_logp = (m[:, None] - x) + np.log1p(s)[:, None]  # -log p_c: both terms >= 0
    if kept is None:  # probability targets
        q = w * (t.astype(F64) if eps == 0 else (1.0 - eps) * t.astype(F64) + eps / C)
        per = (q * neg_logp).sum(axis=1)
    else:
        tt = np.where(kept, t, 0)
        wy = np.where(kept, w[tt], 0.0)
        per = wy * neg_logp[rows, tt]
        if eps > 0:
            per = (1.0 - eps) * per + (eps / C) * (w * neg_logp).sum(axis=1)
        per = np.where(kept, per, 0.0)
        if want_grad:
            q = np.zeros((M, C)) if eps == 0 else np.broadcast_to((eps / C) * w, (M, C)).copy()
            q[rows, tt] += (1.0 - eps) * wy
    if not want_grad:
        return per, None
    p = e / S[:, None]
    # 1 - p_j = (sum_{k != j} e_k) / S: s for the argmax, 1 + (s - e_j) >= 1 for the others
    one_minus_p = (1.0 + (s[:, None] - e)) / S[:, None]
    one_minus_p[rows, k] = s / S
    # Q - q_j: summed without the dominant entry for it, a subtraction of at most half for the others
    kq = np.abs(q).argmax(axis=1)
    q_top = q[rows, kq].copy()
    q[rows, kq] = 0.0
    q_rest_top = q.sum(axis=1)
    q[rows, kq] = q_top
    Q = q_rest_top + q_top
    q_rest = Q[:, None] - q
    q_rest[rows, kq] = q_rest_top
    g = p * q_rest - q * one_minus_p
    return per, (g if kept is None else np.where(kept[:, None], g, 0.0))


# -- the measurement -------------------------------------------------------------------------------


class MeasureError(ValueError):
    """Bad arguments or an unusable budgets file: one line naming the option or the file."""


def _number(v) -> float:
    """A cell's metric as a float: None and the results file's "nan"/"inf" strings included
    (None, no value compared, reads as 0; NaN as inf: it passes no budget)."""
    if v is None:
        return 0.0
    v = float(v)
    return math.inf if math.isnan(v) else v


@dataclass
class Cell:
    """What one accuracy or gradient cell contributes: its maxima and why it may not count."""

    impl: str
    dtype: str
    quantity: str
    scenario: str
    ulp_max: float
    scaled_max: float
    excluded: str | None = None  # why this cell defines no budget

    @property
    def id(self) -> str:
        return f"{self.impl}/{self.dtype}/{vocabulary.kind(self.quantity)}/{self.scenario}"

    def needs_scaled(self, ulp_budget: float) -> float:
        """The scaled budget this cell needs beside ``ulp_budget``: 0 when every element is
        within it (ulp_max <= it), else its scaled_max (an upper bound of what the elements
        beyond the ULP budget need: the cell keeps maxima, not pairs)."""
        return 0.0 if self.ulp_max <= ulp_budget else self.scaled_max

    def as_dict(self) -> dict:
        return {"cell": self.id, "ulp_max": self.ulp_max, "scaled_max": self.scaled_max,
                **({"excluded": self.excluded} if self.excluded else {})}


@dataclass
class Measurement:
    """The cells of one measurement run and where they came from."""

    cells: list[Cell]
    impls: list[str]
    scenarios: int
    problems: int
    seconds: float
    command: str
    date: str
    dtypes: list[str]
    other: dict = field(default_factory=dict)  # cells that are neither measured nor excluded: status counts

    def counted(self, dtype: str, quantity: str, impl: str | None = None) -> list[Cell]:
        return [c for c in self.cells if c.dtype == dtype and c.quantity == quantity and not c.excluded
                and (impl is None or c.impl == impl)]


def _cells_of(data: dict, known: list[dict]) -> tuple[list[Cell], dict]:
    """The accuracy and gradient cells of a results file as Cells, with exclusions."""
    from harness.budgets import known_reason

    cells, other = [], {}
    for c in data["cells"]:
        if c["kind"] not in ("accuracy", "gradient"):
            continue
        m = c.get("metrics") or {}
        if c["status"] in ("error", "unsupported") or not m.get("count"):
            why = c["status"] if c["status"] in ("error", "unsupported") else "no finite reference value"
            key = f"{why} ({c['impl']})"
            other[key] = other.get(key, 0) + 1
            continue
        cell = Cell(c["impl"], c["dtype"], vocabulary.quantity(c["kind"]), c["scenario"],
                    _number(m.get("ulp_max")), _number(m.get("scaled_max")))
        reason = known_reason(c, known)
        if reason:
            cell.excluded = f"known failure: {reason}"
        elif math.isinf(cell.ulp_max) or (math.isinf(cell.scaled_max) and cell.ulp_max > OVERFLOW_ULP):
            cell.excluded = "inf/NaN where the contract is finite: fails under any budget"
        cells.append(cell)
    return cells, other


def _available(names) -> list[str]:
    from harness import registry

    chosen = []
    for name in names:
        entry = registry.builtin(name) if name in registry.BUILTINS else None
        if entry is not None and entry.unavailable():
            continue
        chosen.append(name)
    return chosen


def loose_budgets() -> str:
    """A budgets TOML under which every finite error passes: the cells record their metrics."""
    from harness.formats import DTYPE_NAMES

    rows = "".join(f"[{d}]\n" + "".join(f"{k} = 1e300\n" for k in vocabulary.BUDGET_KEYS) for d in DTYPE_NAMES)
    return "# budgets measure: every finite error passes, so every cell records its metrics\n" + rows


def measure(impls=None, *, scenarios=None, dtypes=None, quick: bool = False, include_large: bool = False,
            full: bool = True, workers: int | None = None, known: str | None = None, run_dir: str | Path | None = None,
            timeout: float = 60.0, command: str = "xent-harness budgets measure",
            log: Callable[[str], None] = print) -> Measurement:
    """Run the accuracy and gradient sweeps of ``impls`` (default :data:`DEFAULT_IMPLS`, those
    installed) and the float64 control over the selected scenarios (``full``: the whole
    generated space, not only the subset `check` runs by default; the budgets must hold for
    `check --full` too), with budgets under which every finite error passes, and collect the
    cells' maxima. ``run_dir`` keeps the run (its results.json); by default it goes to a
    temporary directory, removed afterwards."""
    from harness import budgets as budgets_mod
    from harness import campaign

    if impls:
        names = list(dict.fromkeys(impls))
    else:
        names = _available(DEFAULT_IMPLS)
        for n in DEFAULT_IMPLS:
            if n not in names:
                log(f"skip {n}: not available here (see `xent-harness list`)")
    names = [n for n in names if n not in (CONTROL_NAME, CONTROL_SPEC)] + [CONTROL_SPEC]
    try:
        known_entries, _ = budgets_mod.load_known(known)
    except budgets_mod.BudgetError as exc:
        raise MeasureError(str(exc)) from None
    tmp = Path(tempfile.mkdtemp(prefix="xent-budgets-"))
    try:
        loose = tmp / "loose-budgets.toml"
        loose.write_text(loose_budgets())
        out = Path(run_dir) if run_dir else tmp / "run"
        req = campaign.Request(kinds=("accuracy", "gradient"), impls=names, dtypes=dtypes, scenarios=scenarios,
                               quick=quick, include_large=include_large, full=full, out=out, force=True,
                               workers=workers,
                               budgets=str(loose), known=known, isolate=False, timeout=timeout,
                               argv=command.split()[1:], reports=tmp / "reports")
        t0 = time.monotonic()
        try:
            done = campaign.run(req, log=log)
        except campaign.CampaignError as exc:
            raise MeasureError(str(exc)) from None
        seconds = time.monotonic() - t0
        if done.interrupted:
            raise KeyboardInterrupt
        data = done.data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return collect(data, known_entries, seconds=seconds, command=command)


def collect(data: dict, known: list[dict], *, seconds: float | None = None,
            command: str = "xent-harness budgets measure") -> Measurement:
    """The measurement of a results file's accuracy and gradient cells (``known``: the known
    failures, whose cells define no budget)."""
    cells, other = _cells_of(data, known)
    names = [r["name"] for r in data["implementations"]]
    impls = [n for n in names if any(c.impl == n for c in cells)]
    problems = len({(c["scenario"], c["dtype"]) for c in data["cells"]})
    if seconds is None:
        seconds = (data["run"].get("seconds") or {}).get("total") or 0.0
    return Measurement(cells, impls, len(data.get("scenarios") or []), problems, round(float(seconds), 1),
                       command, _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"), list(data["run"]["dtypes"]),
                       other)


# -- budgets from the maxima -----------------------------------------------------------------------


def sig3(v: float) -> float:
    """``v`` to 3 significant digits (nearest): how maxima are recorded (0.5 ULP plus float64's
    2^-29 ULP of double rounding is recorded as 0.5)."""
    if v == 0 or not math.isfinite(v):
        return v
    return float(f"{v:.3g}")


def grid_up(v: float) -> float:
    """The smallest value of :data:`GRID` that is >= v."""
    for g in GRID:
        if g >= v:
            return g
    return math.inf


def _grid_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass
class Derived:
    """One dtype x quantity: the measured figures and the two budgets derived from them."""

    dtype: str
    quantity: str
    ulp: float  # the ULP budget's measured source
    ulp_from: str  # the cell that reached it
    ulp_budget: float
    scaled: float  # the largest scaled error needed beyond the ULP budget
    scaled_from: str
    scaled_budget: float
    ulp_by_impl: dict  # impl -> ulp_max over its counted cells
    scaled_by_impl: dict  # impl -> the largest scaled error it needs beyond the ULP budget
    outliers: list = field(default_factory=list)  # cell ids left out of the scaled budget
    over_budget: list = field(default_factory=list)  # the outlier cells above the new budget


def _ulp_source(m: Measurement, dtype: str) -> tuple[float, str]:
    """The ULP budget's source (see the module docstring): the largest ULP error of the loss
    by the implementation built for correct digits, :data:`ULP_SOURCES`."""
    cells = [c for i in ULP_SOURCES for c in m.counted(dtype, "loss", i)]
    if not cells:
        return 0.0, "-"
    worst = max(cells, key=lambda c: c.ulp_max)
    return sig3(worst.ulp_max), worst.id


def derive(m: Measurement, headroom: float = HEADROOM) -> list[Derived]:
    """The budgets of every measured dtype and quantity (see the module docstring)."""
    if not (math.isfinite(headroom) and headroom >= 1):
        raise MeasureError(f"--headroom: must be a number >= 1, got {headroom!r}")
    out = []
    for d in m.dtypes:
        for q in vocabulary.QUANTITIES:
            cells = m.counted(d, q)
            if not cells:
                continue
            ulp, ulp_from = _ulp_source(m, d)
            b_ulp = grid_up(headroom * ulp)
            by_ulp, by_scaled = {}, {}
            needs = [(c, sig3(c.needs_scaled(b_ulp))) for c in cells]
            for c, need in needs:
                by_ulp[c.impl] = max(by_ulp.get(c.impl, 0.0), sig3(c.ulp_max))
                by_scaled[c.impl] = max(by_scaled.get(c.impl, 0.0), need)
            # a cell more than OUTLIER x what every other implementation needs (or 1 unit) is a
            # finding about its implementation, not a budget
            outliers = []
            for c, need in needs:
                others = max((v for i, v in by_scaled.items() if i != c.impl), default=None)
                if others is not None and need > OUTLIER * max(1.0, others):
                    outliers.append(c)
            left_out = {id(c) for c in outliers}
            counted = [(c, need) for c, need in needs if id(c) not in left_out]
            top = max(counted, key=lambda cn: cn[1], default=(None, 0.0))
            scaled = top[1]
            b_scaled = grid_up(headroom * scaled)
            over = sorted(c.id for c in outliers if c.needs_scaled(b_ulp) > b_scaled)
            out.append(Derived(d, q, ulp, ulp_from, b_ulp, scaled, top[0].id if scaled else "-", b_scaled,
                               by_ulp, by_scaled, sorted(c.id for c in outliers), over))
    return out


# -- the table -------------------------------------------------------------------------------------


def _num(v: float) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def table(m: Measurement, derived: list[Derived], current: dict, headroom: float) -> str:
    """The measured maxima per dtype x quantity and implementation, and the budgets."""
    impls = [i for i in m.impls if i != CONTROL_NAME] + [CONTROL_NAME]
    short = {CONTROL_NAME: "control"}
    head = (f"{'dtype':9s} {'budget':12s}" + "".join(f"{short.get(i, i):>10s}" for i in impls)
            + f"{'measured':>10s} {'x' + format(headroom, 'g'):>5s} {'budget':>7s} {'was':>6s}  from")
    lines = [head]
    for r in derived:
        key_u, key_s = (vocabulary.budget_key(r.quantity, x) for x in vocabulary.METRICS)
        was = current.get(r.dtype, {})
        for key, by, value, budget, source in (
                (key_u, r.ulp_by_impl, r.ulp, r.ulp_budget, r.ulp_from),
                (key_s, r.scaled_by_impl, r.scaled, r.scaled_budget, r.scaled_from)):
            row = f"{r.dtype:9s} {key:12s}"
            for i in impls:
                v = by.get(i)
                mark = "*" if key == key_s and any(o.startswith(i + "/") for o in r.outliers) else ""
                row += f"{(_num(v) + mark) if v is not None else '-':>10s}"
            row += f"{_num(value):>10s} {_num(headroom * value):>5s} {_grid_text(budget):>7s} {_grid_text(was.get(key, 0)):>6s}  {source}"
            lines.append(row)
    lines.append("")
    lines.append(f"{len(m.cells)} cells of {len(m.impls)} implementations on {m.problems} problems "
                 f"({m.scenarios} scenarios) in {m.seconds:.0f} s.")
    lines.append("ULP rows: each implementation's largest ULP error; the ULP budgets come from the loss of "
                 f"{' and '.join(ULP_SOURCES)} (built for correct digits), for both quantities.")
    lines.append("scaled rows: each implementation's largest scaled error in cells with errors beyond "
                 "the ULP budget; budget = measured x headroom, rounded up on the grid 1, 1.5, 2, 3, 4, 6, ...")
    excluded = [c for c in m.cells if c.excluded]
    if excluded:
        lines.append(f"\nleft out ({len(excluded)} cells):")
        for c in excluded:
            lines.append(f"  {c.id}: {c.excluded}")
    for k, n in sorted(m.other.items()):
        lines.append(f"not measured: {n} {k} cells")
    for r in derived:
        if r.outliers:
            lines.append(f"\noutliers ({r.dtype} {r.quantity}): cells more than {OUTLIER:g} x what the other "
                         f"implementations need (or {OUTLIER:g} units), left out of the budget "
                         f"({_grid_text(r.scaled_budget)}); those above it fail: list them as known "
                         "failures with the reason")
            for c in r.outliers:
                cell = next(x for x in m.cells if x.id == c)
                state = "fails" if c in r.over_budget else "passes"
                lines.append(f"  {c}: {_num(cell.scaled_max)} scaled units, {_num(cell.ulp_max)} ULP ({state})")
    return "\n".join(lines)


def as_json(m: Measurement, derived: list[Derived], headroom: float) -> dict:
    return {"command": m.command, "date": m.date, "seconds": m.seconds, "scenarios": m.scenarios,
            "problems": m.problems, "implementations": m.impls, "dtypes": m.dtypes, "headroom": headroom,
            "grid": list(GRID[:20]), "outlier_factor": OUTLIER,
            "derived": [{"dtype": r.dtype, "quantity": r.quantity, "ulp": r.ulp, "ulp_from": r.ulp_from,
                         "ulp_budget": r.ulp_budget, "scaled": r.scaled, "scaled_from": r.scaled_from,
                         "scaled_budget": r.scaled_budget, "ulp_by_impl": r.ulp_by_impl,
                         "scaled_by_impl": r.scaled_by_impl, "outliers": r.outliers,
                         "over_budget": r.over_budget} for r in derived],
            "cells": [c.as_dict() for c in m.cells], "not_measured": m.other}


# -- budgets.toml ----------------------------------------------------------------------------------

#: The line that starts the measured record in budgets.toml; everything after it is rewritten.
MEASURED_MARKER = "# -- measured: written by `xent-harness budgets measure --write`"


def budgets_path() -> Path:
    """The package's budgets.toml (what --write rewrites by default)."""
    return Path(str(resources.files("harness").joinpath("budgets.toml")))


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_num(v: float) -> str:
    if math.isinf(v):
        return "inf"
    return _grid_text(v) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def _inline(d: dict) -> str:
    return "{ " + ", ".join(f"{_toml_str(k)} = {_toml_num(v)}" for k, v in d.items()) + " }"


def measured_section(m: Measurement, derived: list[Derived], headroom: float) -> str:
    lines = [MEASURED_MARKER + " (the maxima the budgets above were derived from)", "",
             "[measured]",
             f"command = {_toml_str(m.command)}",
             f"date = {_toml_str(m.date)}",
             f"seconds = {_toml_num(m.seconds)}",
             f"scenarios = {m.scenarios}",
             f"problems = {m.problems}",
             f"cells = {sum(1 for c in m.cells if not c.excluded)}",
             f"implementations = [{', '.join(_toml_str(i) for i in m.impls)}]",
             f"headroom = {_toml_num(headroom)}",
             f"ulp_sources = [{', '.join(_toml_str(i) for i in ULP_SOURCES)}]",
             f"outlier_factor = {_toml_num(OUTLIER)}"]
    excluded = [c.id for c in m.cells if c.excluded]
    lines.append(f"excluded = [{', '.join(_toml_str(c) for c in excluded)}]")
    for r in derived:
        lines += ["", f"[measured.{r.dtype}.{r.quantity}]",
                  f"ulp = {_toml_num(r.ulp)}",
                  f"ulp_from = {_toml_str(r.ulp_from)}",
                  f"scaled = {_toml_num(r.scaled)}",
                  f"scaled_from = {_toml_str(r.scaled_from)}",
                  f"ulp_by_impl = {_inline(r.ulp_by_impl)}",
                  f"scaled_by_impl = {_inline(r.scaled_by_impl)}",
                  f"outliers = [{', '.join(_toml_str(i) for i in r.outliers)}]",
                  f"over_budget = [{', '.join(_toml_str(c) for c in r.over_budget)}]"]
    return "\n".join(lines) + "\n"


_ASSIGN = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)(?P<value>[^#\s]+)(?P<rest>\s*(#.*)?)$")
_TABLE = re.compile(r"^\[(?P<name>[^\]]+)\]\s*(#.*)?$")


def rewrite(text: str, m: Measurement, derived: list[Derived], headroom: float) -> str:
    """budgets.toml with the derived budgets in its [dtype] tables (comments and layout kept;
    a missing key is added at the end of its table, a missing table at the end) and the
    measured record after :data:`MEASURED_MARKER` replaced."""
    new = {}
    for r in derived:
        new.setdefault(r.dtype, {})[vocabulary.budget_key(r.quantity, "ulp")] = r.ulp_budget
        new.setdefault(r.dtype, {})[vocabulary.budget_key(r.quantity, "scaled")] = r.scaled_budget
    head = text.split(MEASURED_MARKER, 1)[0].rstrip("\n").splitlines()
    out: list[str] = []
    table_name = None
    done: dict = {d: set() for d in new}

    def close_table():
        if table_name in new:
            missing = [k for k in new[table_name] if k not in done[table_name]]
            # before the blank lines that end the table
            tail = []
            while out and not out[-1].strip():
                tail.append(out.pop())
            out.extend(f"{k} = {_toml_num(new[table_name][k])}" for k in missing)
            done[table_name].update(missing)
            out.extend(tail)

    for line in head:
        t = _TABLE.match(line.strip())
        if t:
            close_table()
            table_name = t.group("name").strip()
            out.append(line)
            continue
        a = _ASSIGN.match(line)
        if a and table_name in new and a.group("key") in new[table_name]:
            key = a.group("key")
            out.append(f"{key}{a.group('eq')}{_toml_num(new[table_name][key])}{a.group('rest')}")
            done[table_name].add(key)
            continue
        out.append(line)
    close_table()
    for d, keys in new.items():
        if not done[d]:
            out += ["", f"[{d}]"] + [f"{k} = {_toml_num(v)}" for k, v in keys.items()]
            done[d].update(keys)
    return "\n".join(out).rstrip("\n") + "\n\n" + measured_section(m, derived, headroom)


def write(path: str | Path, m: Measurement, derived: list[Derived], headroom: float) -> Path:
    """Rewrite ``path`` (a budgets.toml) atomically; MeasureError naming the file."""
    import os
    import tomllib

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8") if p.exists() else ""
    except OSError as exc:
        raise MeasureError(f"--write: cannot read {p} ({exc.strerror or exc})") from None
    bad = [f"{r.dtype} {r.quantity}" for r in derived
           if not (math.isfinite(r.ulp_budget) and math.isfinite(r.scaled_budget))]
    if bad:
        raise MeasureError(f"--write: the budgets of {', '.join(bad)} came out infinite; not written")
    new = rewrite(text, m, derived, headroom)
    tomllib.loads(new)  # what is written parses
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MeasureError(f"--write: cannot write {p} ({exc.strerror or exc})") from None
    return p
