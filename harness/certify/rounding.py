"""Exact IEEE round-to-nearest-even of rationals and balls to a format (subnormals, overflow),
in integers."""

from __future__ import annotations

import math

import numpy as np

from harness.certify.arb import START_PREC, load_flint
from harness.certify.exact import RationalBall
from harness.certify.ieee_classes import is_special
from harness.formats import FORMATS, Format

_INF = math.inf


def round_ratio(n: int, d: int, fmt: Format) -> float:
    """n/d (d > 0) rounded to nearest-even in ``fmt`` (subnormals, overflow to inf), as a float."""
    if n == 0:
        return 0.0
    neg = n < 0
    n = -n if neg else n
    p = fmt.precision
    e = n.bit_length() - d.bit_length()  # floor(log2(n/d)) is e or e - 1
    if (n << max(0, -e)) < (d << max(0, e)):
        e -= 1
    if e > fmt.emax:
        r = _INF
    elif e < fmt.emin - p - 1:  # below half the smallest subnormal
        r = 0.0
    else:
        q = max(e, fmt.emin) - p + 1  # the quantum (ulp exponent) of n/d's binade
        num, den = (n, d << q) if q >= 0 else (n << -q, d)
        N, rem = divmod(num, den)
        if 2 * rem > den or (2 * rem == den and N & 1):
            N += 1
        r = _INF if N and q + N.bit_length() - 1 > fmt.emax else math.ldexp(N, q)
    return -r if neg else r


#: Rounding boundaries of every format (midpoints, overflow thresholds, ±half the smallest
#: subnormal) are multiples of 2^-1075.
_BOUNDARY_BITS = 1075


def round_rational_plus(r, man: int, exp: int, fmt: Format) -> float:
    """RN_fmt(r + man·2^exp) for a rational r (fmpq), exactly, whatever the size of exp."""
    n, d = int(r.p), int(r.q)
    if man == 0:
        return round_ratio(n, d, fmt)
    # r's distance to any rounding boundary other than r itself exceeds 2^-K, so a smaller offset
    # only matters by its sign: replace it by ±2^-(K+1) (keeps the integers small for e^-1e30).
    K = d.bit_length() + _BOUNDARY_BITS
    if man.bit_length() + exp <= -K:
        man, exp = (1 if man > 0 else -1), -(K + 1)
    if exp >= 0:
        return round_ratio(n + ((man * d) << exp), d, fmt)
    return round_ratio((n << -exp) + man * d, d << -exp, fmt)


def _dyadic(a) -> tuple[int, int]:
    man, exp = a.mid().man_exp()
    return int(man), int(exp)


def ball_ends(val, prec: int):
    """The exact dyadic ends (man, exp) of a value's ball part (outward-rounded), or None."""
    if is_special(val) or val.exact:
        return None
    fl = load_flint()
    with fl.ctx.workprec(prec + 64):
        return _dyadic(val.b.lower()), _dyadic(val.b.upper())


def round_range(val, fmt: Format, prec: int, ends=None) -> tuple[float, float]:
    """(RN(lower end), RN(upper end)) of a value: equal when the ball decides the rounding."""
    if is_special(val):
        return val, val
    if val.exact:
        r = round_ratio(int(val.r.p), int(val.r.q), fmt)
        return r, r
    lo, hi = ends if ends is not None else ball_ends(val, prec)
    return round_rational_plus(val.r, *lo, fmt), round_rational_plus(val.r, *hi, fmt)


def rounded_ball(ball, dtype) -> float | None:
    """The correctly rounded value in ``dtype`` of every point of an arb ball, or None when the
    ball straddles a rounding boundary (public helper for tests and tools)."""
    fl = load_flint()
    fmt = FORMATS[np.dtype(dtype).name] if not isinstance(dtype, str) else FORMATS[dtype]
    lo, hi = round_range(RationalBall(fl.fmpq(0), ball), fmt, max(START_PREC, ball.mid().bits() + 64))
    return lo if lo == hi or (math.isnan(lo) and math.isnan(hi)) else None
