"""Certifying reference values against the oracle: the value sets, findings and report.

Certification (:func:`certify`): a reference value v passes when it lies within its ball widened
by 2^-106·|v| (plus an absolute 2^-1074 for double-doubles, whose low part cannot carry 106
bits below 2^-969: :data:`DD_FLOOR`), and each correctly rounded value must equal the rounding of the
ball, which is *decided* when both ends of the ball round to the same value (IEEE round to nearest
even with the format's subnormals and overflow, computed exactly in integers). Undecided balls are
recomputed at twice the precision up to :data:`MAX_PREC` bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from harness.certify.arb import MAX_PREC, START_PREC, load_flint
from harness.certify.exact import PENDING, RationalBall
from harness.certify.ieee_classes import is_special
from harness.certify.oracle import Oracle
from harness.certify.rounding import ball_ends, round_range
from harness.formats import FORMATS
from harness.problem import Problem

#: Correct bits the reference promises for every value it returns.
GOOD_BITS = 106
#: Absolute error allowed on top of 2^-106·|v| for double-double values (hi + lo), as a power of
#: two. An ideal double-double errs by at most 2^-1075 below float64's subnormals; the reference's
#: keep a *sticky* low part (the smallest subnormal with the residual's sign, so that hi + lo stays
#: on v's side of hi and ties round the right way), and document |v − (hi + lo)| ≤ 2^-1074 there.
DD_FLOOR = -1074


@dataclass
class Values:
    """One set of reference values to certify.

    ``kind`` is 'loss' (``problem.output_shape``) or 'grad' (the logits' shape). Elements may be
    ``mpmath.mpf``, floats, decimal strings (certified as the decimal they spell) or (hi, lo)
    double-double pairs (pass ``hi`` and ``lo`` arrays as ``array=(hi, lo)``). With the tolerance
    τ = 2^-rel_bits·|v| + 2^floor (no absolute term when ``floor`` is None), a value fails when
    every point of the ball is farther than τ from it (a certain violation), passes when every
    point is within τ, and is undecided otherwise (after the precision loop).
    """

    label: str
    kind: str
    array: object
    rel_bits: float = GOOD_BITS
    floor: int | None = None

    @property
    def double_double(self) -> bool:
        return isinstance(self.array, tuple)


@dataclass
class Finding:
    """One disagreement (or undecided check) between a reference value and the oracle."""

    kind: str  # 'loss' or 'grad'
    index: tuple  # in the loss's ('none') or the logits' layout
    check: str  # a Values label (value check) or 'rounded:<format>'
    got: str
    oracle: str
    detail: str

    def line(self) -> str:
        where = f"{self.kind}[{', '.join(map(str, self.index))}]"
        return f"{where} {self.check}: got {self.got}, oracle {self.oracle} ({self.detail})"


@dataclass
class Report:
    """The outcome of certifying one problem."""

    problem: Problem
    failures: list[Finding] = field(default_factory=list)
    undecided: list[Finding] = field(default_factory=list)
    prec: int = START_PREC  # the largest arb precision used
    checked: int = 0  # individual checks made

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        return [f.line() for f in self.failures]

    def __str__(self) -> str:
        head = (f"{self.problem!r}: {len(self.failures)} failure(s), {len(self.undecided)} undecided, "
                f"{self.checked} checks, up to {self.prec} bits")
        return "\n".join([head] + ["  FAIL " + s for s in self.lines()]
                         + ["  UNDECIDED " + f.line() for f in self.undecided])


def _show(v, digits: int = 20, prec: int = START_PREC) -> str:
    """A value for a report line; balls are evaluated at ``prec`` (the precision that decided)."""
    if is_special(v):
        return repr(v)
    if v is None or v is PENDING:
        return "undecided sign"
    if isinstance(v, RationalBall):
        if v.exact:
            return f"{v.r} (exact)"
        return v.ball(prec).str(digits, radius=True)
    if hasattr(v, "str"):  # arb
        return v.str(digits, radius=True)
    return repr(v)


def reference_ball(v):
    """A reference value as an exact arb (decimal strings: a ball containing the decimal), or a
    special float."""
    import mpmath

    fl = load_flint()
    if isinstance(v, tuple):  # double-double
        hi, lo = float(v[0]), float(v[1])
        if not math.isfinite(hi):
            return hi
        with fl.ctx.workprec(2200):  # exact: hi and lo span < 2200 bits
            return fl.arb(hi) + fl.arb(lo)
    if isinstance(v, mpmath.mpf):
        if mpmath.isnan(v) or mpmath.isinf(v):
            return float(v)
        sign, man, exp, _ = v._mpf_
        return fl.arb((-int(man) if sign else int(man), int(exp)))
    if isinstance(v, str):
        s = v.strip().lower().lstrip("+")
        if s in ("nan", "inf", "-inf"):
            return float(s)
        with fl.ctx.workprec(512):
            return fl.arb(v)
    f = float(v)
    return f if not math.isfinite(f) else fl.arb(f)


def _same_special(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _value_outcome(ref, truth, rel_bits: float, floor: int | None, prec: int, dd: bool = False) -> tuple[str, str]:
    """('pass' | 'fail' | 'open', detail) for one reference value against one truth."""
    fl = load_flint()
    if dd and is_special(ref) and isinstance(truth, RationalBall) and not math.isnan(ref):
        # A double-double's hi is RN_float64(v): ±inf stands for a finite v beyond float64's range.
        lo, hi = round_range(truth, FORMATS["float64"], prec)
        if lo == hi:
            return ("pass", "") if lo == ref else ("fail", "special value differs")
        return "open", "ball too wide to decide float64 overflow"
    if is_special(truth) or is_special(ref):
        if is_special(truth) and is_special(ref) and _same_special(truth, ref):
            return "pass", ""
        return "fail", "special value differs"
    if truth is PENDING:
        return "open", "the oracle cannot decide the sign of a numerator over +0"
    P = prec + 128
    with fl.ctx.workprec(P):
        X = truth.ball(P)
        Z = ref - X  # contains v - t for every t in the ball
        tol = abs(ref) * fl.arb(2) ** (-rel_bits)
        if floor is not None:
            tol += fl.arb((1, floor))
        if Z.abs_lower() > tol:
            err = Z.abs_lower()
            rel = err / abs(X) if not X.contains(0) else None
            bits = (-rel.log() / fl.arb(2).log()) if rel is not None and rel > 0 else None
            return "fail", f"error {err.str(3)}" + (f", {bits.str(4)} correct bits" if bits is not None else "")
        if Z.abs_upper() <= tol:
            return "pass", ""
    return "open", "ball too wide to decide"


class _Item:
    """One true value and everything to check against it."""

    __slots__ = ("index", "kind", "pos", "refs", "rounded", "truth")

    def __init__(self, kind, pos, index):
        self.kind, self.pos, self.index = kind, pos, index
        self.refs: list[tuple] = []  # (label, ref arb or special, rel_bits, floor, double-double?)
        self.rounded: dict[str, float] = {}  # format name -> given value
        self.truth = None


def _flatten(problem: Problem, kind: str, arr) -> list:
    """Reference values in oracle order: losses flattened, gradients in problem.rows() order."""
    if isinstance(arr, tuple):  # (hi, lo)
        hi, lo = (_flatten(problem, kind, a) for a in arr)
        return list(zip(hi, lo))
    a = np.asarray(arr, dtype=object) if not isinstance(arr, np.ndarray) else arr
    if kind == "loss":
        return list(np.reshape(a, -1))
    if a.ndim != problem.logits.ndim:
        raise ValueError(f"gradient values must have the logits' shape {problem.logits.shape}, got {a.shape}")
    return list(np.moveaxis(a, problem.class_axis, -1).reshape(-1))  # rows order (C = 0 safe)


def _grad_index(problem: Problem) -> list[tuple]:
    """For each (n, j) in rows() order, its index in the logits' layout."""
    M, C = problem.num_samples, problem.num_classes
    pos = problem.unrows(np.arange(M * C).reshape(M, C))
    out = [()] * (M * C)
    for idx in np.ndindex(pos.shape):
        out[int(pos[idx])] = tuple(int(i) for i in idx)
    return out


def certify(
    problem: Problem,
    *,
    loss_values=None,
    grad_values=None,
    rounded: Mapping[str, tuple] | None = None,
    values: Iterable[Values] = (),
    rel_bits: float = GOOD_BITS,
    loss_floor: int | None = None,
    grad_floor: int | None = DD_FLOOR,
    max_prec: int = MAX_PREC,
) -> Report:
    """Certify reference values of ``problem`` against the arb oracle.

    ``loss_values`` (output shape) and ``grad_values`` (logits' shape) are arrays of
    ``mpmath.mpf`` (as returned by ``reference.cross_entropy`` / ``cross_entropy_grad``); each
    must lie within its ball widened by 2^-rel_bits·|value| (+ 2^loss_floor / 2^grad_floor; the
    gradient API rebuilds values from double-doubles, hence :data:`DD_FLOOR`). ``rounded``
    maps a format name to (rounded loss, rounded gradient or None): each must equal the rounding
    of the ball in that format. ``values`` adds further :class:`Values` sets. Balls that do not
    decide are recomputed at twice the precision up to ``max_prec`` bits; what stays undecided is
    listed in ``Report.undecided``, never counted as a pass or a failure.
    """
    load_flint()
    oracle = Oracle(problem)
    M, C = oracle.M, oracle.C
    sets = list(values)
    if loss_values is not None:
        sets.append(Values("value", "loss", loss_values, rel_bits, loss_floor))
    if grad_values is not None:
        sets.append(Values("value", "grad", grad_values, rel_bits, grad_floor))
    n_loss = M if problem.reduction == "none" else 1
    sample_shape = problem.sample_shape
    loss_items = [_Item("loss", i, tuple(int(v) for v in np.unravel_index(i, sample_shape)) if problem.reduction == "none" else ())
                  for i in range(n_loss)]
    gidx = None
    grad_items: list[_Item] = []
    wants_grad = any(s.kind == "grad" for s in sets) or any(g is not None for _, g in (rounded or {}).values())
    if wants_grad:
        gidx = _grad_index(problem)
        grad_items = [_Item("grad", (n, j), gidx[n * C + j]) for n in range(M) for j in range(C)]
    for s in sets:
        items = loss_items if s.kind == "loss" else grad_items
        flat = _flatten(problem, s.kind, s.array)
        if len(flat) != len(items):
            raise ValueError(f"{s.label}: expected {len(items)} {s.kind} values, got {len(flat)}")
        for it, v in zip(items, flat):
            it.refs.append((s.label, reference_ball(v), s.rel_bits, s.floor, s.double_double))
    for name, (lv, gv) in (rounded or {}).items():
        for items, arr, kind in ((loss_items, lv, "loss"), (grad_items, gv, "grad")):
            if arr is None:
                continue
            flat = _flatten(problem, kind, np.asarray(arr).astype(np.float64))
            for it, v in zip(items, flat):
                it.rounded[name] = float(v)

    report = Report(problem)
    pending_loss, pending_grad = list(loss_items), list(grad_items)
    prec = START_PREC
    while True:
        report.prec = prec
        if pending_loss:
            truths = oracle.losses(prec)
            for it in pending_loss:
                it.truth = truths[it.pos]
        for n in sorted({it.pos[0] for it in pending_grad}):
            row = oracle.grad_row(n, prec)
            for it in pending_grad:
                if it.pos[0] == n:
                    it.truth = row[it.pos[1]]
        last = prec >= max_prec
        pending_loss = [it for it in pending_loss if not _settle(it, prec, report, final=last)]
        pending_grad = [it for it in pending_grad if not _settle(it, prec, report, final=last)]
        if last or not (pending_loss or pending_grad):
            break
        prec = min(2 * prec, max_prec)
    return report


def _settle(it: _Item, prec: int, report: Report, *, final: bool) -> bool:
    """Check one item at this precision. Record its findings and return True when every check is
    decided (or ``final``); return False to recompute it at a higher precision."""
    truth = it.truth
    outcomes = []
    for label, ref, rel_bits, floor, dd in it.refs:
        status, detail = _value_outcome(ref, truth, rel_bits, floor, prec, dd)
        outcomes.append((label, _show(ref, 25), status, detail))
    ends = ball_ends(truth, prec) if it.rounded and isinstance(truth, RationalBall) else None
    for name, given in it.rounded.items():
        fmt = FORMATS[name]
        if truth is PENDING:
            outcomes.append((f"rounded:{name}", repr(given), "open", "sign over +0 undecided"))
            continue
        lo, hi = round_range(truth, fmt, prec, ends)
        if is_special(truth) or lo == hi:
            ok = _same_special(lo, given) if is_special(lo) else (not math.isnan(given) and given == lo)
            outcomes.append((f"rounded:{name}", repr(given), "pass" if ok else "fail",
                             "" if ok else f"correctly rounded is {lo!r}"))
        else:
            # RN is monotone: the true rounding lies in [RN(lo), RN(hi)].
            inside = not math.isnan(given) and lo <= given <= hi
            outcomes.append((f"rounded:{name}", repr(given), "open" if inside else "fail",
                             f"ball rounds to {lo!r} .. {hi!r}"))
    if not final and any(s == "open" for *_, s, _ in outcomes):
        return False
    oracle_text = _show(truth, prec=prec)
    for label, got, status, detail in outcomes:
        report.checked += 1
        if status == "fail":
            report.failures.append(Finding(it.kind, it.index, label, got, oracle_text, detail))
        elif status == "open":
            report.undecided.append(Finding(it.kind, it.index, label, got, oracle_text, detail))
    return True
