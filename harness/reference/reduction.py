"""The reduction ('mean', 'sum') of the per-row losses into the reference loss, exactly: sums of
heads and tails (so a sum on a rounding boundary is decided like a single row), torch's own
chain for IEEE rows, and mpmath sums for losses below MPFR's range."""

from __future__ import annotations

import gmpy2
import mpmath
from gmpy2 import mpfr

from harness.problem import Problem
from harness.reference.arithmetic import MAX_BITS, _ctx, _mpf, _signed_man_exp
from harness.reference.row_setup import _Setup
from harness.reference.stability import _values_stable
from harness.reference.value import _plus_zero, _sticky, _Value


def _reduce(problem: Problem, su: _Setup, losses: list, prec: int):
    """Apply the reduction to the per-row values (None: ignored, 0); returns (values of record,
    their bounds, accepted). The reduced value is (Σ heads + Σ tails) / denominator, so a sum
    landing on a rounding boundary is decided by :func:`_sticky` like a single row."""
    zero = mpfr(0)
    vals = [v if v is not None else _Value(zero, zero, zero, True, zero, zero) for v in losses]
    if problem.reduction == "none":
        return [v.value for v in vals], [v.bound for v in vals], True  # each passed its own test
    if su.ieee and not su.probability:
        return _reduce_torch(problem, su, losses)
    if any(isinstance(v.value, mpmath.mpf) for v in vals):
        return _reduce_deep(problem, su, vals, prec)
    ph = max([v.head.precision for v in vals] + [prec]) + 64
    with _ctx(ph) as hctx:
        hctx.inexact = False
        H = gmpy2.fsum([v.head for v in vals]) if vals else zero
        hexact = not hctx.inexact and all(v.head_exact for v in vals)
    with _ctx(prec):
        u = mpfr(2) ** -prec
        T = gmpy2.fsum([v.tail for v in vals]) if vals else zero
        terr = gmpy2.fsum([v.tail_err for v in vals]) if vals else zero
        total = gmpy2.fsum([v.value for v in vals]) if vals else zero
        bound = (gmpy2.fsum([v.bound for v in vals]) if vals else zero) + u * abs(total)
        if problem.reduction == "mean":
            den = su.denom
            with _ctx(ph) as hctx:
                hctx.inexact = False
                H = H / den
                hexact = hexact and not hctx.inexact
            T, terr = T / den, terr / abs(den) * (1 + 2 * u)
            total = total / den
            bound = bound / abs(den) + 2 * u * abs(total) if gmpy2.is_finite(total) else zero
    v = _Value(total, bound, H, hexact, T, terr)
    _, _, _, ok = _values_stable([v])
    if not ok[0] and prec >= MAX_BITS:
        z = _sticky(v, prec)
        if z is not None:
            return [z.value], [z.bound], True
    return [_plus_zero(v.value, v.bound)], [v.bound], bool(ok[0])


def _reduce_torch(problem: Problem, su: _Setup, losses: list):
    """The reduction as torch computes it, for IEEE rows (non-finite weights, a zero-weight
    'mean'): (1-ε) (Σ_n nll_n / W) + (ε/C) (Σ_n smooth_n / W) with W the mean's denominator
    (1 for 'sum'): +-inf for a nonzero numerator over 0, NaN for 0/0 (so NaN whenever ε = 1
    and W = 0: 0 * (x/0)). Finite results are exact to a few roundings at 5120 bits."""
    zero = mpfr(0)
    if problem.reduction == "none":
        vals = [v if v is not None else _Value(zero, zero, zero, True, zero, zero) for v in losses]
        return [v.value for v in vals], [v.bound for v in vals], True
    kept = [v for v in losses if v is not None]
    with _ctx(4 * MAX_BITS):
        den = mpfr(1) if su.denom is None else su.denom
        nll = gmpy2.fsum([v.head for v in kept]) if kept else zero
        out = (1 - mpfr(su.eps)) * (nll / den)
        if su.eps:
            smooth = gmpy2.fsum([v.tail for v in kept]) if kept else zero
            out = out + mpfr(su.eps) / su.C * (smooth / den)
        bound = abs(out) * mpfr(2) ** (32 - 4 * MAX_BITS) if gmpy2.is_finite(out) else zero
    return [out], [bound], True


def _reduce_deep(problem: Problem, su: _Setup, vals: list, prec: int):
    """The reduction when some per-sample losses are below MPFR's range (mpmath values): the sum
    is formed in mpmath (unbounded exponents) from exact conversions, then divided."""
    with mpmath.workprec(prec + 64):
        total = mpmath.fsum([_mpf(v.value) for v in vals])
        bound = mpmath.fsum([_mpf(v.bound) if not isinstance(v.bound, float) else mpmath.mpf(v.bound)
                             for v in vals]) + abs(total) * mpmath.mpf(2) ** -prec
        if problem.reduction == "mean":
            den = _mpf(su.denom)
            total = total / den
            bound = bound / abs(den) + abs(total) * mpmath.mpf(2) ** (1 - prec)
    man, exp = _signed_man_exp(total)
    if total != 0 and abs(exp + man.bit_length()) < 2**29:
        with _ctx(man.bit_length() + 2):
            tv = gmpy2.mul_2exp(mpfr(man), exp)
        v = _Value(tv, mpfr(float(bound)) if float(bound) else mpfr(0), tv, False, mpfr(0), mpfr(0))
        _, _, _, ok = _values_stable([v])
        return [tv], [v.bound], bool(ok[0])
    return [total], [mpfr(0)], True  # below every format's range: rounds to a signed zero
