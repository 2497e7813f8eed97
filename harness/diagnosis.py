"""Diagnosis: say what went wrong in a failing cell.

The library of bug hypotheses is data (``harness/hypotheses.toml``): each entry names one of the
functions below (:data:`FUNCTIONS`) with its parameters. A function computes an *alternative
contract* -- what ``cross_entropy`` returns with one specific bug -- as exactly as the contract
itself: mostly by the reference (:func:`harness.reference.evaluate`, MPFR) on a derived problem
(another reduction, no weights, probability targets in float64 that spell out a smoothing
variant, the inputs rounded to a narrower format, ...), else by a short formula in MPFR (gmpy2,
256 bits) from reference values and the exact inputs. Its docstring says which.

For a failing accuracy or gradient cell, :func:`diagnose` judges the implementation's output
against every hypothesis that applies to the problem, with the cell's own metrics and budgets
(:func:`harness.verdicts.judge`, plus the inf/NaN positions the alternative has). A hypothesis
*matches* when

1. the output is within the alternative's budgets (and has its inf/NaN values),
2. the output is not within the contract's (the failure reproduces), and
3. the alternative is *distinct*: its own exact value, rounded to the format, fails the contract
   (else this problem cannot tell the two apart, and agreeing with it proves nothing).

Several hypotheses can match one output (on an unweighted problem "mean over N" and "ignored
samples in the denominator" are the same number); they are listed closest first.

:func:`run` is the campaign's step after the sweeps: it diagnoses the failing cells (a bounded
number, real implementations before canaries), recomputing each implementation's output once
through :class:`harness.runner.Runner` (the sweeps do not keep outputs), stores a ``diagnosis``
in each cell (docs/results-schema.md) and writes the cell's reproducer (:mod:`harness.repro`).
Special-value cells and problems of more than :data:`MAX_LOGITS` logits are not diagnosed.
"""

from __future__ import annotations

import math
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import gmpy2
import numpy as np

from harness import metrics, verdicts, vocabulary
from harness.formats import FORMATS
from harness.problem import Problem, ProblemError

RESOURCE = "hypotheses.toml"
#: Problems with more logits are not diagnosed (the derived references cost ~1 µs a logit).
MAX_LOGITS = 1 << 18
#: The MPFR-formula hypotheses (per-logit MPFR arithmetic) take problems up to this size.
MPFR_LOGITS = 1 << 16
#: At most this many failing cells are diagnosed per run, and for at most this long; the rest
#: can be diagnosed one at a time with ``xent-harness repro``.
CELLS = 32
SECONDS = 60.0
#: Working precision of the MPFR formulas.
PRECISION = 256


# -- the library -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypothesis:
    """One entry of hypotheses.toml."""

    name: str
    text: str
    function: str
    params: Mapping
    quantities: tuple[str, ...]
    why: str


def parse(data: Mapping) -> tuple[Hypothesis, ...]:
    """The hypotheses of a parsed hypotheses.toml; ValueError naming the entry and the field."""
    import inspect

    out, names = [], set()
    for i, h in enumerate(data.get("hypothesis", [])):
        where = f"hypotheses.toml: entry #{i} ({h.get('name', '?')!r})"
        unknown = set(h) - {"name", "text", "function", "params", "quantities", "why"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("name", "text", "function", "why"):
            if not isinstance(h.get(key), str) or not h[key].strip():
                raise ValueError(f"{where}: {key} is required (a non-empty string)")
        if h["name"] in names:
            raise ValueError(f"{where}: duplicate name")
        fn = FUNCTIONS.get(h["function"])
        if fn is None:
            raise ValueError(f"{where}: unknown function {h['function']!r}; use one of {', '.join(FUNCTIONS)}")
        params = dict(h.get("params", {}))
        accepted = set(inspect.signature(fn).parameters) - {"ctx"}
        if set(params) - accepted:
            raise ValueError(f"{where}: {h['function']} takes no parameter(s) "
                             f"{', '.join(sorted(set(params) - accepted))}")
        quantities = tuple(h.get("quantities", ()))
        if not quantities or set(quantities) - set(vocabulary.QUANTITIES):
            raise ValueError(f"{where}: quantities must be a non-empty subset of {list(vocabulary.QUANTITIES)}")
        names.add(h["name"])
        out.append(Hypothesis(h["name"], h["text"], h["function"], params, quantities, h["why"]))
    return tuple(out)


@cache
def library() -> tuple[Hypothesis, ...]:
    """Every hypothesis of harness/hypotheses.toml, in its order."""
    text = resources.files("harness").joinpath(RESOURCE).read_text(encoding="utf-8")
    return parse(tomllib.loads(text))


# -- alternatives and their context ------------------------------------------------------------------


@dataclass
class Alternative:
    """An alternative contract's value of one quantity: ``hi + lo`` (double-double, the shape of
    the output; inf/NaN are exact values the output must have), and where it claims less:
    ``nonfinite`` (the output must be inf or NaN, either), ``skip`` (no claim). ``problem``,
    when given, is the problem it is judged in (its format, scales and budgets: a narrower
    format), ``representable`` demands that every output value is a number of that format."""

    hi: np.ndarray
    lo: np.ndarray
    nonfinite: np.ndarray | None = None
    skip: np.ndarray | None = None
    problem: Problem | None = None
    representable: bool = False


@dataclass
class Context:
    """What a hypothesis function sees: the problem, the quantity judged, the contract's exact
    values, the implementation's output ``y`` (functions may look at it only to decline early,
    when no output of that shape could agree, to save an evaluation) and memoised reference
    evaluations of derived problems (:meth:`exact`), through the on-disk cache when one is
    given."""

    problem: Problem
    quantity: str
    contract: object  # reference.Exact, with the gradient
    y: np.ndarray
    cache: object = None  # harness.cache.ReferenceCache
    workers: int | None = 1
    #: derived references by digest (share one dict between outputs of the same problem)
    shared: dict = field(default_factory=dict)
    _memo: dict = field(default_factory=dict)

    # -- reference evaluations -----------------------------------------------------------------
    def exact(self, problem: Problem):
        """The reference (loss and gradient) of a derived problem, computed once."""
        key = problem.digest
        if key == self.problem.digest:
            return self.contract
        if key not in self.shared:
            from harness import reference

            ex = self.cache.load(problem) if self.cache is not None else None
            if ex is None or ex.grad_hi is None:
                ex = reference.evaluate(problem, workers=self.workers)
                if self.cache is not None:
                    self.cache.store(problem, ex)
            self.shared[key] = ex
        return self.shared[key]

    def value(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) of the judged quantity of a derived problem."""
        return self.exact(problem).pair(self.quantity)

    def own(self) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) of the contract's judged quantity."""
        return self.contract.pair(self.quantity)

    # -- the problem's facts ---------------------------------------------------------------------
    @property
    def index(self) -> bool:
        return not self.problem.probability_target

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Logits as float64 (M, C) rows and the targets (M,) or (M, C)."""
        x, t = self.problem.rows()
        return x.astype(np.float64), t

    def kept(self) -> np.ndarray:
        """(M,) True for the samples that count (not ignored; every sample for probabilities)."""
        _, t = self.problem.rows()
        if not self.index:
            return np.ones(self.problem.num_samples, bool)
        return t != self.problem.ignore_index

    def target_weights(self) -> np.ndarray:
        """(M,) w[target] of the kept samples (1 without weights), 0 for ignored ones."""
        p = self.problem
        _, t = p.rows()
        kept = self.kept()
        if not self.index:
            return kept.astype(np.float64)
        w = np.ones(p.num_classes) if p.weight is None else p.weight.astype(np.float64)
        safe = np.where(kept, t, 0)
        return np.where(kept, w[safe] if p.num_classes else 0.0, 0.0)

    def denominator(self):
        """The contract's 'mean' denominator as an MPFR number: Σ w[target] over the kept
        samples, or N for probability targets."""
        if not self.index:
            return _mpfr(self.problem.num_samples)
        return _fsum(self.target_weights())

    def sum_value(self) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) of the quantity under reduction 'sum': the contract's 'mean' times its
        denominator (106 bits), or the reference of the 'sum' problem when that is 0."""
        p = self.problem
        if p.reduction == "sum":
            return self.own()
        if "sum" not in self._memo:
            D = self.denominator()
            if p.reduction == "mean" and D != 0 and gmpy2.is_finite(D):
                self._memo["sum"] = _dd_scale(*self.own(), D)
            else:
                self._memo["sum"] = self.value(p.replace(reduction="sum"))
        return self._memo["sum"]

    def reduce(self, hi: np.ndarray, lo: np.ndarray):
        """The contract's reduction applied to per-sample values given as (M,) double-doubles:
        'none' reshapes, 'sum' adds, 'mean' adds and divides by :meth:`denominator` (MPFR)."""
        p = self.problem
        if p.reduction == "none":
            return hi.reshape(p.output_shape), lo.reshape(p.output_shape)
        with _context():
            total = _fsum_dd(hi, lo)
            if p.reduction == "mean":
                total = total / self.denominator()
        return _split_one(total)


def _context():
    return gmpy2.context(gmpy2.get_context(), precision=PRECISION, emin=-(2**40), emax=2**40)


def _mpfr(v):
    with _context():
        return gmpy2.mpfr(v)


def _fsum(values) -> object:
    with _context():
        return gmpy2.fsum(gmpy2.mpfr(float(v)) for v in np.ravel(values))


def _fsum_dd(hi, lo):
    with _context():
        terms = [gmpy2.mpfr(float(v)) for v in np.ravel(hi)] + [gmpy2.mpfr(float(v)) for v in np.ravel(lo)]
        return gmpy2.fsum(terms) if terms else gmpy2.mpfr(0)


def _split_one(v) -> tuple[np.ndarray, np.ndarray]:
    h = float(v)
    if not math.isfinite(h):
        return np.array(h), np.array(0.0)
    with _context():
        lo = float(v - gmpy2.mpfr(h))
    return np.array(h), np.array(lo)


def _dd_map(fn: Callable, hi, lo, *more) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` to every double-double hi + lo (and the matching elements of ``more``) in
    MPFR; inf/NaN pass through unchanged."""
    hi = np.asarray(hi, np.float64)
    lo = np.asarray(lo, np.float64)
    out_hi = np.empty(hi.shape)
    out_lo = np.zeros(hi.shape)
    extra = [np.broadcast_to(np.asarray(m), hi.shape) for m in more]
    with _context():
        for k in np.ndindex(hi.shape):
            h = float(hi[k])
            if not math.isfinite(h):
                out_hi[k] = h
                continue
            v = fn(gmpy2.mpfr(h) + gmpy2.mpfr(float(lo[k])), *(e[k] for e in extra))
            out_hi[k] = float(v)
            if math.isfinite(out_hi[k]):
                out_lo[k] = float(v - gmpy2.mpfr(out_hi[k]))
    return out_hi, out_lo


def _split27(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Veltkamp's split: a = high + low, each with at most 26 significant bits."""
    c = 134217729.0 * a  # 2^27 + 1
    high = c - (c - a)
    return high, a - high


def _dd_scale(hi, lo, factor) -> tuple[np.ndarray, np.ndarray]:
    """(hi + lo) · factor for an MPFR ``factor``, vectorised in double-double arithmetic
    (Dekker's product: a relative error below 2^-100); elements where it could overflow or
    underflow go through MPFR (:func:`_dd_map`), inf/NaN pass through."""
    hi = np.asarray(hi, np.float64)
    lo = np.asarray(lo, np.float64)
    with _context():
        fh = float(factor)
        fl = float(factor - gmpy2.mpfr(fh))
    if not math.isfinite(fh) or abs(fh) > 2.0**500 or 0 < abs(fh) < 2.0**-500:
        return _dd_map(lambda v: v * factor, hi, lo)
    with np.errstate(all="ignore"):
        p = hi * fh
        (ah, al), (bh, bl) = _split27(hi), _split27(np.float64(fh))
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl + (hi * fl + lo * fh)
        s = p + e
        t = e - (s - p)
    safe = np.isfinite(hi) & (np.abs(hi) < 2.0**500) & ((np.abs(p) > 2.0**-900) | (hi == 0)) & np.isfinite(s)
    out_h = np.where(safe, s, hi)
    out_l = np.where(safe, np.where(hi == 0, 0.0, t), 0.0)
    rest = np.isfinite(hi) & ~safe
    if rest.any():
        rh, rl = _dd_map(lambda v: v * factor, hi[rest], lo[rest])
        out_h[rest], out_l[rest] = rh, rl
    return out_h, out_l


def _rows_of(problem: Problem, arr: np.ndarray) -> np.ndarray:
    """A logits-shaped array as (M, C) rows (class axis last), a copy."""
    M, C = problem.num_samples, problem.num_classes
    return np.moveaxis(np.asarray(arr), problem.class_axis, -1).reshape(M, C).copy()


def _prob_problem(ctx: Context, q_rows: np.ndarray, *, weighted: bool, smoothing: float,
                  reduction: str) -> Problem:
    """A float64 probability-target problem on the exact logits: how the smoothing variants
    are spelled out for the reference (its contract is −Σ_j w_j q'_j log p_j per sample)."""
    p = ctx.problem
    return Problem(p.logits.astype(np.float64), np.ascontiguousarray(p.unrows(q_rows)),
                   weight=p.weight.astype(np.float64) if weighted and p.weight is not None else None,
                   ignore_index=-100, reduction=reduction, label_smoothing=smoothing)


def _onehot(ctx: Context) -> np.ndarray:
    """(M, C) one-hot rows of the kept index targets, zero rows for ignored samples."""
    _, t = ctx.problem.rows()
    kept = ctx.kept()
    q = np.zeros((ctx.problem.num_samples, ctx.problem.num_classes))
    q[np.flatnonzero(kept), t[kept]] = 1.0
    return q


def _summed_then_divided(ctx: Context, make: Callable[[str], Problem]) -> Alternative | None:
    """The alternative of a derived problem evaluated with the contract's reduction, except that
    'mean' is evaluated as 'sum' and divided by the contract's denominator (index targets'
    Σ w[target]: the derived problems have probability targets, whose own mean divides by N)."""
    p = ctx.problem
    derived = make("sum" if p.reduction == "mean" else p.reduction)
    hi, lo = ctx.value(derived)
    if p.reduction == "mean":
        D = ctx.denominator()
        if D == 0:
            return None
        with _context():
            hi, lo = _dd_scale(hi, lo, 1 / D)
    return Alternative(hi, lo)


# -- the hypothesis functions --------------------------------------------------------------------------


def denominator(ctx: Context, count: str) -> Alternative | None:
    """'mean' divided by another count: ``samples`` is N, every sample (ignored ones
    included); ``ignored-as-one`` is Σ w[target] over the kept samples plus one per ignored
    sample (unweighted: N as well). Value: the contract's sum (its mean times Σ w[target], or
    the reference of the 'sum' problem) divided by the count, in MPFR. Index targets only."""
    p = ctx.problem
    if p.reduction != "mean" or not ctx.index or p.num_samples == 0:
        return None
    ignored = int(np.count_nonzero(~ctx.kept()))
    if count == "samples":
        new = _mpfr(p.num_samples)
    elif count == "ignored-as-one":
        if not ignored:
            return None
        with _context():
            new = ctx.denominator() + ignored
    else:
        raise ValueError(f"denominator: unknown count {count!r}")
    hi, lo = ctx.sum_value()
    with _context():
        inverse = 1 / new
    return Alternative(*_dd_scale(hi, lo, inverse))


def sum_for_mean(ctx: Context) -> Alternative | None:
    """'mean' returns the sum: the contract under reduction 'sum', i.e. the reference's mean
    times its denominator in MPFR, or the reference of the 'sum' problem (:meth:`Context.sum_value`)."""
    if ctx.problem.reduction != "mean":
        return None
    return Alternative(*ctx.sum_value())


def weights_ignored(ctx: Context) -> Alternative | None:
    """The class weights left out: the reference of the problem without ``weight``."""
    p = ctx.problem
    if p.weight is None:
        return None
    return Alternative(*ctx.value(p.replace(weight=None)))


def ignore_index_inside(ctx: Context) -> Alternative | None:
    """ignore_index in [0, C) treated as a class: the reference of the problem with
    ignore_index = −100 (the targets equal to the old one become ordinary class indices)."""
    p = ctx.problem
    if not ctx.index or not 0 <= p.ignore_index < p.num_classes or not (p.target == p.ignore_index).any():
        return None
    return Alternative(*ctx.value(p.replace(ignore_index=-100)))


def smoothing_ignored(ctx: Context) -> Alternative | None:
    """label_smoothing left out: the reference of the problem with label_smoothing = 0."""
    p = ctx.problem
    if p.label_smoothing <= 0:
        return None
    return Alternative(*ctx.value(p.replace(label_smoothing=0.0)))


def smoothing_over_others(ctx: Context) -> Alternative | None:
    """ε spread over the C − 1 other classes: per kept sample
    (1 − ε) w_t (−log p_t) + ε/(C − 1) Σ_{j≠t} w_j (−log p_j). Evaluated by the reference as a
    float64 probability-target problem on the exact logits with q_t = 1 − ε, q_j = ε/(C − 1)
    (each rounded once to float64, a relative 2^-53 of the smoothing term), zero rows for
    ignored samples, no smoothing; 'mean' as its sum over Σ w[target]."""
    p = ctx.problem
    eps, C = p.label_smoothing, p.num_classes
    if not ctx.index or eps <= 0 or C < 2:
        return None
    kept = ctx.kept()
    q = np.where(kept[:, None], eps / (C - 1), 0.0) * np.ones((1, C))
    onehot = _onehot(ctx)
    q = np.where(onehot > 0, 1.0 - eps, q)
    return _summed_then_divided(ctx, lambda red: _prob_problem(ctx, q, weighted=True, smoothing=0.0, reduction=red))


def smoothing_includes_ignored(ctx: Context) -> Alternative | None:
    """The smoothing term summed over every sample, ignored ones included (their loss is
    ε/C Σ_j −w_j log p_j; the denominator stays Σ w[target] of the kept samples). Evaluated by
    the reference as a float64 probability-target problem: one-hot rows for kept samples, zero
    rows for ignored ones, the same ε (PyTorch's q' = (1 − ε) q + ε/C gives both terms)."""
    p = ctx.problem
    if not ctx.index or p.label_smoothing <= 0 or ctx.kept().all():
        return None
    q = _onehot(ctx)
    return _summed_then_divided(ctx, lambda red: _prob_problem(ctx, q, weighted=True, smoothing=p.label_smoothing,
                                                               reduction=red))


def smoothing_weighted_by_target(ctx: Context) -> Alternative | None:
    """The whole smoothed loss of a sample weighted by w[target]:
    w_t ((1 − ε)(−log p_t) + ε/C Σ_j −log p_j), instead of PyTorch's per-class w_j in the
    smoothing term. The unweighted per-sample losses (and gradient rows) come from the
    reference of a float64 probability-target problem without weights; each is multiplied by
    w_t, then reduced, in MPFR."""
    p = ctx.problem
    if not ctx.index or p.label_smoothing <= 0 or p.weight is None:
        return None
    q = _onehot(ctx)
    wt = ctx.target_weights()
    derived = _prob_problem(ctx, q, weighted=False, smoothing=p.label_smoothing, reduction="none")
    if ctx.quantity == "loss":
        hi, lo = ctx.exact(derived).pair("loss")
        hi, lo = _dd_map(lambda v, w: v * w, hi.reshape(-1), lo.reshape(-1), wt)
        return Alternative(*ctx.reduce(hi, lo))
    gh, gl = ctx.exact(derived).pair("grad")
    D = ctx.denominator() if p.reduction == "mean" else _mpfr(1)
    if D == 0:
        return None
    with _context():
        factor = np.array([gmpy2.mpfr(float(w)) / D for w in wt], dtype=object)
    hi, lo = _dd_map(lambda v, f: v * f, _rows_of(p, gh), _rows_of(p, gl), factor[:, None])
    return Alternative(p.unrows(hi).copy(), p.unrows(lo).copy())


def narrowed(ctx: Context, dtype: str) -> Alternative | None:
    """Computed in a narrower format: the reference of the problem with its logits (weights,
    probability targets) rounded to ``dtype``, judged in that format with its budgets, and
    every value returned must be a number of that format. Declines when the output has no
    finite value or one that is not such a number."""
    p = ctx.problem
    fmt = FORMATS[dtype]
    if fmt.precision >= p.format.precision:
        return None
    y = np.asarray(ctx.y).astype(np.float64)
    finite = np.isfinite(y)
    with np.errstate(over="ignore"):
        if not finite.any() or not np.array_equal(y[finite].astype(fmt.dtype).astype(np.float64), y[finite]):
            return None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = p.astype(dtype)
    except ProblemError:
        return None
    hi, lo = ctx.value(narrow)
    return Alternative(hi, lo, problem=narrow, representable=True)


def sum_in_dtype(ctx: Context) -> Alternative | None:
    """'mean' formed from a sum rounded to the input format: where the exact sum (the
    reference's mean times its denominator, in MPFR) rounds to ±inf in that format the result
    is that inf; elsewhere the sum does not overflow and the hypothesis does not apply."""
    p = ctx.problem
    if p.reduction != "mean" or ctx.quantity != "loss":
        return None
    hi, lo = ctx.sum_value()
    rounded = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), p.format).astype(np.float64)
    if np.isfinite(rounded).all() or np.isnan(rounded).any():
        return None
    return Alternative(rounded.reshape(np.shape(hi)), np.zeros(np.shape(hi)))


def capped(ctx: Context, p_min: float | None = None, log_min: float | None = None) -> Alternative | None:
    """Each sample's unweighted loss −log p_t clamped: to [−log(1 − p_min), −log p_min] when
    the probabilities are clipped to [p_min, 1 − p_min], to at most −log_min when log p is
    clamped at log_min; weighted by w_t and reduced as the contract does, in MPFR from the
    reference's per-sample losses. The gradient of a clamped sample is 0 (a clamp's derivative
    outside its range), the contract's elsewhere. Index targets without smoothing."""
    p = ctx.problem
    if not ctx.index or p.label_smoothing > 0 or p.num_samples == 0 or p.num_classes == 0:
        return None
    with _context():
        if p_min is not None:
            cap, floor = -gmpy2.log(gmpy2.mpfr(p_min)), -gmpy2.log1p(-gmpy2.mpfr(p_min))
        elif log_min is not None:
            cap, floor = -gmpy2.mpfr(log_min), None
        else:
            raise ValueError("capped: give p_min or log_min")
    x, t = ctx.rows()
    kept = ctx.kept()
    # a float64 estimate first: when no sample is near the clamp, there is nothing to evaluate
    with np.errstate(all="ignore"):
        m = x.max(axis=1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
        approx = lse - x[np.arange(x.shape[0]), np.where(kept, t, 0)]
        near = approx > float(cap) * (1 - 1e-6)
        if floor is not None:
            near |= approx < float(floor) * (1 + 1e-6)
    near &= kept & np.isfinite(approx)
    if not near.any():
        return None
    per = ctx.exact(p.replace(reduction="none")) if p.reduction != "none" else ctx.contract
    ph, pl = (a.reshape(-1) for a in per.pair("loss"))
    wt = ctx.target_weights()
    clamped = np.zeros(wt.shape, bool)
    out_h, out_l = np.array(ph, copy=True), np.array(pl, copy=True)
    with _context():
        for n in np.flatnonzero(kept & (wt != 0) & np.isfinite(ph)):
            w = gmpy2.mpfr(float(wt[n]))
            v = (gmpy2.mpfr(float(ph[n])) + gmpy2.mpfr(float(pl[n]))) / w
            if v > cap:
                v = cap
            elif floor is not None and v < floor:
                v = floor
            else:
                continue
            clamped[n] = True
            out_h[n], out_l[n] = (float(a) for a in _split_one(v * w))
    if not clamped.any():
        return None
    if ctx.quantity == "loss":
        return Alternative(*ctx.reduce(out_h, out_l))
    gh, gl = ctx.own()
    rows_h, rows_l = _rows_of(p, gh), _rows_of(p, gl)
    rows_h[clamped], rows_l[clamped] = 0.0, 0.0
    return Alternative(p.unrows(rows_h).copy(), p.unrows(rows_l).copy())


def _loss_rows(ctx: Context, work: str):
    """What the range hypotheses of the loss start from: the problem, its (M, C) rows and
    targets, the kept samples and the thresholds of the ``work`` format (None for a gradient
    or an empty problem: no claim)."""
    p = ctx.problem
    if ctx.quantity != "loss" or p.num_samples == 0 or p.num_classes == 0:
        return None
    x, t = ctx.rows()
    fmt = p.format if work == "input" else FORMATS[work]
    return p, x, t, ctx.kept(), _limits(fmt, x.shape[1])


def _limits(fmt, C: int) -> tuple[float, float, float, float]:
    """(x above which exp(x) rounds to inf in ``fmt``, x below which it rounds to 0, the band of
    rounding uncertainty around them, the wider band for a sum of C terms)."""
    ln2 = math.log(2.0)
    over = (fmt.emax + 1) * ln2 + math.log1p(-(2.0 ** (-fmt.precision - 1)))  # RN(v) = inf iff v >= 2^(emax+1)(1 - 2^-p-1)
    under = (fmt.emin - fmt.precision) * ln2  # RN(v) = 0 iff v <= min_subnormal / 2
    band = 2.0 ** (2 - fmt.precision) + 1e-12 * abs(over)
    return over, under, band, 2.0 ** -fmt.precision * max(16, C) + 1e-12 * abs(over)


def _row_lse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of float64 logits: (a NaN or +inf in it, its max, log-sum-exp) in float64."""
    with np.errstate(all="ignore"):
        bad = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1)
        m = np.where(bad, 0.0, x.max(axis=1))
        mm = np.where(np.isneginf(m), 0.0, m)
        lse = mm + np.log(np.exp(x - mm[:, None]).sum(axis=1))
    return bad | np.isneginf(m), m, lse


def _nonfinite_claim(ctx: Context, nonfinite: np.ndarray, skip: np.ndarray) -> Alternative | None:
    """The alternative "inf or NaN for these samples, no claim for those, the contract for the
    rest", reduced as the contract is: a reduced loss is inf/NaN as soon as one sample is.
    None when it claims nothing the contract does not (where the contract itself rounds to
    inf or NaN, "inf or NaN" says nothing)."""
    p = ctx.problem
    hi, lo = ctx.own()
    rounded_finite = np.isfinite(ctx.contract.rounded("loss", p.dtype).astype(np.float64))
    if p.reduction == "none":
        shape = p.output_shape
        skip = skip.reshape(shape) | ~rounded_finite
        nonfinite = nonfinite.reshape(shape) & ~skip
        if not nonfinite.any():
            return None
        return Alternative(hi, lo, nonfinite=nonfinite, skip=skip)
    if not nonfinite.any() or not rounded_finite.all():
        return None
    return Alternative(hi, lo, nonfinite=np.ones(np.shape(hi), bool))


def no_max_shift(ctx: Context, work: str = "input") -> Alternative | None:
    """log Σ exp(x) without the max shift, the exponentials formed in ``work`` (the input
    format, or "float64"): a sample whose exp(x_j) overflows there (x_j above the format's
    overflow threshold), whose Σ exp(x_j) does (log-sum-exp above it), or whose exponentials all
    underflow to 0, has an inf or NaN loss (which of them depends on the code: either is
    accepted); where p_t (or, with smoothing or probability targets, any p_j) underflows the
    result depends on the formula and no claim is made; the contract elsewhere. Samples within
    the rounding uncertainty of a threshold (a few units of 2^-p of the work format, more for
    the sum) make no claim either. A reduced loss is inf/NaN as soon as one kept sample is.
    Loss only; the thresholds are decided from the exact logits in float64 (log-sum-exp to a
    few units of 2^-53), the values elsewhere are the reference's."""
    rows = _loss_rows(ctx, work)
    if rows is None:
        return None
    p, x, t, kept, (t_over, t_under, band, band_sum) = rows
    M = x.shape[0]
    bad, m, lse = _row_lse(x)
    with np.errstate(all="ignore"):
        over = (x > t_over + band).any(axis=1) | (lse > t_over + band_sum) | (m < t_under - band)
        unsure = ((np.abs(x - t_over) <= band).any(axis=1) | (np.abs(lse - t_over) <= band_sum)
                  | (np.abs(m - t_under) <= band))
        if ctx.index and p.label_smoothing == 0:
            xt = x[np.arange(M), np.where(kept, t, 0)]
        else:
            xt = np.where(np.isneginf(x), np.inf, x).min(axis=1)
        tiny = (xt - lse < t_under + band) | (xt < t_under + band)
    nonfinite = kept & over & ~unsure & ~bad
    skip = (kept & (unsure | tiny | bad) & ~nonfinite) | (~kept & (over | unsure))
    return _nonfinite_claim(ctx, nonfinite, skip)


def log_of_softmax(ctx: Context, work: str = "input") -> Alternative | None:
    """log(softmax(x)) instead of log_softmax(x): the probabilities are formed (max-shifted) in
    ``work`` (the input format) and then their log is taken, so a sample whose p_t -- with
    smoothing, any p_j; with probability targets, any p_j of a nonzero target (a zero target's
    0 · log 0 depends on the code: no claim) -- underflows to 0 there (log p below
    ln(min_subnormal / 2)) has an inf or NaN loss; the contract elsewhere. Within the rounding
    band of that threshold no claim. Loss only; log p_j = x_j − lse(x) from the exact logits in
    float64, the values elsewhere are the reference's."""
    rows = _loss_rows(ctx, work)
    if rows is None:
        return None
    p, x, t, kept, (_, t_under, band, _) = rows
    M = x.shape[0]
    bad, _, lse = _row_lse(x)
    with np.errstate(all="ignore"):
        logp = np.where(np.isneginf(x), -np.inf, x - lse[:, None])
        if ctx.index and p.label_smoothing == 0:
            counted = np.zeros(x.shape, bool)
            counted[np.arange(M), np.where(kept, t, 0)] = True
        elif ctx.index or p.label_smoothing > 0:
            counted = np.ones(x.shape, bool)
        else:
            _, q = p.rows()
            counted = q.astype(np.float64) != 0
        low = np.where(counted, logp, np.inf).min(axis=1)
        low_any = logp.min(axis=1) if not ctx.index and p.label_smoothing == 0 else low
        certain = low < t_under - band
        unsure = (np.abs(low - t_under) <= band) | (~certain & (low_any < t_under + band))
    nonfinite = kept & certain & ~bad
    skip = (kept & (unsure | bad) & ~nonfinite) | (~kept & (certain | unsure))
    return _nonfinite_claim(ctx, nonfinite, skip)


def targets_renormalised(ctx: Context) -> Alternative | None:
    """Probability targets divided by their row sums first: the reference of a float64
    problem on the exact logits with q / Σ q (rows that sum to 0 unchanged)."""
    p = ctx.problem
    if ctx.index:
        return None
    _, q = p.rows()
    q = q.astype(np.float64)
    s = q.sum(axis=1, keepdims=True)
    if np.all(s == 1.0) or not np.isfinite(s).all():
        return None
    qn = np.where(s != 0, q / np.where(s != 0, s, 1.0), q)
    derived = Problem(p.logits.astype(np.float64), np.ascontiguousarray(p.unrows(qn)),
                      weight=None if p.weight is None else p.weight.astype(np.float64),
                      reduction=p.reduction, label_smoothing=p.label_smoothing)
    return Alternative(*ctx.value(derived))


def targets_assumed_normalised(ctx: Context) -> Alternative | None:
    """The fused form lse(x) − Σ_j q'_j x_j, which equals −Σ q'_j log p_j only when Σ q' = 1:
    per sample the contract's loss plus (1 − Σ q') lse(x), with q' = (1 − ε) q + ε/C; the
    gradient is the contract's plus (1 − Σ q') softmax(x) (times 1/N for 'mean'). In MPFR from
    the reference's per-sample losses and gradient and the exact logits. Unweighted
    probability targets."""
    p = ctx.problem
    if ctx.index or p.weight is not None or p.logits.size > MPFR_LOGITS:
        return None
    x, q = ctx.rows()
    q = q.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(q).all()):
        return None
    M, C = x.shape
    eps = p.label_smoothing
    with _context():
        s = [gmpy2.fsum(gmpy2.mpfr(float(v)) for v in q[n]) for n in range(M)]
        if eps > 0:
            s = [(1 - gmpy2.mpfr(eps)) * v + gmpy2.mpfr(eps) for v in s]
        defect = [1 - v for v in s]
        if all(d == 0 for d in defect):
            return None
        lse = []
        for n in range(M):
            mx = gmpy2.mpfr(float(x[n].max()))
            lse.append(mx + gmpy2.log(gmpy2.fsum(gmpy2.exp(gmpy2.mpfr(float(v)) - mx) for v in x[n])))
    if ctx.quantity == "loss":
        per = ctx.exact(p.replace(reduction="none")) if p.reduction != "none" else ctx.contract
        ph, pl = (a.reshape(-1) for a in per.pair("loss"))
        hi, lo = _dd_map(lambda v, d, ls: v + d * ls, ph, pl, np.array(defect, dtype=object),
                         np.array(lse, dtype=object))
        if p.reduction == "none":
            return Alternative(hi.reshape(p.output_shape), lo.reshape(p.output_shape))
        with _context():
            total = _fsum_dd(hi, lo)
            if p.reduction == "mean":
                total = total / M
        return Alternative(*_split_one(total))
    gh, gl = ctx.own()
    rows_h, rows_l = _rows_of(p, gh), _rows_of(p, gl)
    extra = np.empty((M, C), dtype=object)
    with _context():
        scale = gmpy2.mpfr(1) / M if p.reduction == "mean" else gmpy2.mpfr(1)
        for n in range(M):
            for j in range(C):
                extra[n, j] = scale * defect[n] * gmpy2.exp(gmpy2.mpfr(float(x[n, j])) - lse[n])
    hi, lo = _dd_map(lambda v, e: v + e, rows_h, rows_l, extra)
    return Alternative(p.unrows(hi).copy(), p.unrows(lo).copy())


#: The functions hypotheses.toml may name.
FUNCTIONS: dict[str, Callable[..., Alternative | None]] = {
    f.__name__: f for f in (
        denominator, sum_for_mean, weights_ignored, ignore_index_inside, smoothing_ignored,
        smoothing_over_others, smoothing_includes_ignored, smoothing_weighted_by_target, narrowed,
        sum_in_dtype, capped, no_max_shift, log_of_softmax, targets_renormalised, targets_assumed_normalised,
    )
}


# -- judging -------------------------------------------------------------------------------------------


def agrees(problem: Problem, quantity: str, y, hi, lo, budgets: dict, *, nonfinite=None, skip=None,
           representable: bool = False) -> tuple[bool, dict]:
    """Whether output ``y`` agrees with the values hi + lo as the sweeps judge a cell
    (:func:`harness.verdicts.judge` with ``budgets[problem's dtype]`` where the value is finite),
    with the same inf/NaN where it has them, inf or NaN wherever ``nonfinite`` says, and no
    claim where ``skip`` says. ``y`` of another dtype is rounded to the problem's (with
    ``representable``, every value must already be one of its numbers). Returns (agrees, the
    figures: ulp_max, scaled_max, failing, mismatch)."""
    fmt = problem.format
    y = np.asarray(y)
    if y.dtype != problem.dtype:
        yf = y.astype(np.float64)
        with np.errstate(over="ignore"):
            y = yf.astype(problem.dtype)
        if representable and not np.array_equal(y.astype(np.float64), yf, equal_nan=True):
            return False, {"why": f"returns values that are not {fmt.name} numbers"}
    shape = np.shape(hi)
    hi = np.array(hi, np.float64, copy=True).reshape(shape)
    lo = np.array(lo, np.float64, copy=True).reshape(shape)
    none = np.zeros(shape, bool)
    nonfinite = none if nonfinite is None else np.asarray(nonfinite, bool)
    skip = none if skip is None else np.asarray(skip, bool)
    hidden = nonfinite | skip
    hi[hidden], lo[hidden] = np.nan, 0.0
    status, _, m = verdicts.judge(problem, quantity, y, hi, lo, budgets[fmt.name])
    rf = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(shape).astype(np.float64)
    yf = y.astype(np.float64)
    special = ~np.isfinite(rf) & ~hidden
    same = (np.isnan(yf) & np.isnan(rf)) | (yf == rf)
    mismatch = int(np.count_nonzero(special & ~same)) + int(np.count_nonzero(nonfinite & ~skip & np.isfinite(yf)))
    figures = {"ulp_max": m.get("ulp_max"), "scaled_max": m.get("scaled_max"), "failing": m.get("failing", 0),
               "mismatch": mismatch, "exact": int(m.get("count", 0)) + int(np.count_nonzero(special))}
    return status == "pass" and mismatch == 0, figures


def _exactly(alt: Alternative, problem: Problem, quantity: str, contract) -> np.ndarray:
    """What an exact implementation of the alternative returns, in the problem's dtype: its
    value rounded to its format, NaN where it is only known to be inf or NaN, the contract's
    correctly rounded value where it claims nothing."""
    fmt = (alt.problem or problem).format
    shape = np.shape(alt.hi)
    r = metrics.round_to_format(np.atleast_1d(alt.hi), np.atleast_1d(alt.lo), fmt).reshape(shape).astype(np.float64)
    rc = contract.rounded(quantity, problem.dtype).astype(np.float64).reshape(shape)
    if alt.skip is not None:
        r = np.where(alt.skip, rc, r)
    if alt.nonfinite is not None:  # "inf or NaN" where the contract is inf or NaN already: its value
        r = np.where(alt.nonfinite, np.where(np.isfinite(rc), np.nan, rc), r)
    with np.errstate(over="ignore"):
        return r.astype(problem.dtype)


def evaluate(problem: Problem, quantity: str, y, contract, budgets: dict, *, cache=None, workers: int | None = 1,
             hypotheses: tuple[Hypothesis, ...] | None = None, shared: dict | None = None) -> list[dict]:
    """Every hypothesis judged against output ``y`` of ``quantity``: one row each, with
    ``verdict`` "not applicable" (the function declined), "indistinct" (the alternative's exact
    value passes the contract: this problem cannot tell them apart), "consistent" (``y`` is
    within the alternative's budgets), "rejected", or "error" (the function raised: ``why``)."""
    ctx = Context(problem, quantity, contract, np.asarray(y), cache=cache, workers=workers,
                  shared={} if shared is None else shared)
    hc, lc = contract.pair(quantity)
    # where the contract is inf or NaN is the special-value cell's business, not this cell's
    ignore = ~np.isfinite(contract.rounded(quantity, problem.dtype).astype(np.float64).reshape(np.shape(hc)))
    rows = []
    for h in hypotheses or library():
        row = {"name": h.name, "text": h.text}
        rows.append(row)
        if quantity not in h.quantities:
            row["verdict"] = "not applicable"
            continue
        try:
            alt = FUNCTIONS[h.function](ctx, **h.params)
            if alt is None:
                row["verdict"] = "not applicable"
                continue
            exactly = _exactly(alt, problem, quantity, contract)
            if agrees(problem, quantity, exactly, hc, lc, budgets, skip=ignore)[0]:
                row["verdict"] = "indistinct"
                continue
            skip = ignore if alt.skip is None else (alt.skip | ignore)
            ok, figures = agrees(alt.problem or problem, quantity, y, alt.hi, alt.lo, budgets,
                                 nonfinite=alt.nonfinite, skip=skip, representable=alt.representable)
        except Exception as exc:  # a hypothesis that cannot be evaluated is reported, not fatal
            from harness.runner import one_line

            row |= {"verdict": "error", "why": one_line(exc)}
            continue
        row |= {"verdict": "consistent" if ok else "rejected"} | figures
    return rows


def diagnose(problem: Problem, quantity: str, y, contract, budgets: dict, *, cache=None,
             workers: int | None = 1, hypotheses: tuple[Hypothesis, ...] | None = None,
             shared: dict | None = None) -> dict:
    """The diagnosis of one output (see the module docstring): ``reproduced`` (the output
    fails the contract), ``matches`` (the matching hypotheses, closest first: name, text,
    ulp_max, scaled_max against the alternative), ``tested`` (the hypotheses that applied and
    were distinct from the contract), ``errors`` and ``text`` (one sentence)."""
    t0 = time.perf_counter()
    hc, lc = contract.pair(quantity)
    # the cell's own verdict (harness.verdicts.judge: where the contract is finite)
    failing = verdicts.judge(problem, quantity, np.asarray(y), hc, lc, budgets[problem.format.name])[0] == "fail"
    out: dict = {"reproduced": failing}
    if not failing:
        out |= {"matches": [], "tested": [],
                "text": "not reproduced: the recomputed output is within the contract's budgets"}
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out
    rows = evaluate(problem, quantity, y, contract, budgets, cache=cache, workers=workers, hypotheses=hypotheses,
                    shared=shared)
    tested = [r for r in rows if r["verdict"] in ("consistent", "rejected")]
    # closest first: hypotheses that pin values down before those that only say "inf or NaN",
    # then by the distance to the output, then in the library's order
    order = {r["name"]: k for k, r in enumerate(rows)}
    matches = sorted((r for r in rows if r["verdict"] == "consistent"),
                     key=lambda r: (not r.get("exact"), _key(r.get("scaled_max")), _key(r.get("ulp_max")),
                                    order[r["name"]]))
    out["matches"] = [{k: r.get(k) for k in ("name", "text", "ulp_max", "scaled_max")} for r in matches]
    out["tested"] = [r["name"] for r in tested]
    errors = [f"{r['name']}: {r['why']}" for r in rows if r["verdict"] == "error"]
    if errors:
        out["errors"] = errors
    out["text"] = summary_text(out)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _key(v) -> float:
    """A distance for sorting: none measured is 0 (nothing finite compared), NaN is inf."""
    if v is None:
        return 0.0
    return math.inf if isinstance(v, float) and math.isnan(v) else float(v)


def summary_text(d: Mapping) -> str:
    """The diagnosis in one sentence: "matches: X" (", also consistent: Y" for the others),
    else how many hypotheses were tested."""
    if d.get("error"):
        return f"not diagnosed: {d['error']}"
    if not d.get("reproduced", True):
        return str(d.get("text") or "not reproduced")
    matches = d.get("matches") or []
    if matches:
        text = f"matches: {matches[0]['text']}"
        if len(matches) > 1:
            text += "; also consistent: " + "; ".join(m["text"] for m in matches[1:])
        return text
    n = len(d.get("tested") or [])
    return f"no hypothesis of the library matches ({n} applied to this problem)"


# -- the campaign's step ---------------------------------------------------------------------------------


def _call(runner, impl, problem: Problem, ops: list[str]) -> dict:
    """The implementation's outputs of ``ops`` ("loss", "grad"), called as the sweeps call it
    (one fused call when it has one and both are needed); ValueError / CallFailed propagate."""
    if len(ops) == 2 and impl.fused:
        pair = runner.call("loss_and_grad", problem)
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError("loss_and_grad did not return a (loss, grad) pair")
        return {op: verdicts.check_output(problem, y, op) for op, y in zip(("loss", "grad"), pair, strict=True)}
    return {op: verdicts.check_output(problem, runner.call(op, problem), op) for op in ops}


def outputs(entry, problem: Problem, ops: list[str], *, isolate: bool | None = None, timeout: float = 60.0,
            runner=None) -> dict:
    """Call an implementation once more for ``ops`` (through a :class:`~harness.runner.Runner`,
    isolated for plugins), as the sweeps did."""
    from harness.runner import Runner, isolated

    own = runner is None
    if own:
        runner = Runner(entry, isolate=isolated(entry, isolate), timeout=timeout)
    try:
        return _call(runner, entry.impl, problem, ops)
    finally:
        if own:
            runner.close()


def spread(cells: list[dict], canary: Callable[[str], bool]) -> list[dict]:
    """The order failing cells are diagnosed in under a bounded budget: real implementations
    before canaries; within them the first cell of each (implementation, kind, dtype) before the
    second of any, so the budget reaches every kind of finding; the sweeps' order otherwise."""
    rank: Counter = Counter()
    key = {}
    for c in cells:
        group = (c["impl"], c["kind"], c["dtype"])
        key[id(c)] = (canary(c["impl"]), rank[group])
        rank[group] += 1
    return sorted(cells, key=lambda c: key[id(c)])


def run(res, entries, scenarios, budgets: dict, *, isolate: bool | None = None, timeout: float = 60.0,
        log: Callable[[str], None] = print, cells: int | None = None, seconds: float | None = None,
        cache=None, workers: int | None = None, repro_dir: Path | None = None) -> int:
    """Diagnose the failing accuracy and gradient cells of ``res`` (a :class:`harness.results.
    Results`) that have no diagnosis yet: at most ``cells`` of them (default :data:`CELLS`),
    for at most ``seconds`` (default :data:`SECONDS`), real implementations before canaries.
    The sweeps keep no outputs, so each implementation is called once more per problem (as the
    sweeps call it: one fused call when it has one). Each cell gets ``diagnosis`` (and its
    reproducer in ``repro_dir``, default the run's ``repro/``) and is written to the journal
    again. Returns how many were diagnosed. Never raises for one cell: a failure to diagnose is
    that cell's diagnosis."""
    from harness import repro
    from harness.cache import ReferenceCache
    from harness.runner import CallFailed, Runner, Unsupported, isolated, one_line

    cells = CELLS if cells is None else cells
    seconds = SECONDS if seconds is None else seconds
    by_name = {e.name: e for e in entries if e.impl is not None}
    by_scen = {s.name: s for s in scenarios}
    todo = [c for c in res.cells if c["status"] == "fail" and c["kind"] in ("accuracy", "gradient")
            and "diagnosis" not in c and c["impl"] in by_name and c["scenario"] in by_scen
            and by_scen[c["scenario"]].size <= MAX_LOGITS]
    if not todo:
        return 0
    todo = spread(todo, lambda name: bool(by_name[name].impl.canary))
    chosen = todo[:cells]
    groups: dict[tuple, list[dict]] = {}
    for c in chosen:
        groups.setdefault((c["impl"], c["scenario"], c["dtype"]), []).append(c)
    cache = cache or ReferenceCache()
    repro_dir = Path(repro_dir) if repro_dir is not None else res.directory / "repro"
    runners: dict[str, Runner] = {}
    t0 = time.monotonic()
    done = matched = 0
    try:
        for (name, scen, dtype), cs in groups.items():
            if time.monotonic() - t0 > seconds:
                break
            entry = by_name[name]
            if name not in runners:
                runners[name] = Runner(entry, isolate=isolated(entry, isolate), timeout=timeout)
            ops = [vocabulary.quantity(c["kind"]) for c in cs]
            try:
                problem = by_scen[scen].problem(dtype)
                exact = cache.get_many([problem], workers=workers)[0]
                ys = outputs(entry, problem, ["loss", "grad"] if entry.impl.has_grad else ["loss"],
                             runner=runners[name])
            except (CallFailed, Unsupported, ValueError) as exc:
                for c in cs:
                    c["diagnosis"] = {"error": f"could not recompute the output: {one_line(exc)}"}
                    c["diagnosis"]["text"] = summary_text(c["diagnosis"])
                    res.add_cell(c)
                continue
            shared: dict = {}  # the derived references, for both cells of the problem
            for c, op in zip(cs, ops, strict=True):
                try:
                    d = diagnose(problem, op, ys[op], exact, budgets, cache=cache, workers=workers, shared=shared)
                except Exception as exc:  # the diagnosis never loses a run
                    d = {"error": one_line(exc)}
                    d["text"] = summary_text(d)
                d["output"] = "recomputed"
                d["digest"] = problem.digest
                try:
                    written = repro.write(repro_dir, c, problem, exact, ys[op], op, budgets, d,
                                          impl_row={"name": name, "origin": entry.origin, **entry.extra})
                    d["repro"] = str(written.script.relative_to(res.directory)) \
                        if written.script.is_relative_to(res.directory) else str(written.script)
                except OSError as exc:
                    d["repro_error"] = f"{exc.strerror or exc}"
                c["diagnosis"] = d
                res.add_cell(c)
                done += 1
                matched += bool(d.get("matches"))
    except KeyboardInterrupt:
        log("diagnosis: interrupted; the failing cells not yet diagnosed can be with `xent-harness repro`")
    finally:
        for r in runners.values():
            r.close()
    left = sum(1 for c in todo if "diagnosis" not in c)
    more = (f"; {left} more not diagnosed (at most {cells} cells, {seconds:g} s a run): "
            "`xent-harness repro RESULTS CELL` diagnoses any one") if left else ""
    log(f"diagnosis: {done} failing cells diagnosed, {matched} matched a bug hypothesis, "
        f"in {time.monotonic() - t0:.1f} s (outputs recomputed){more}")
    return done
