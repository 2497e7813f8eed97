"""The Ziv loop's acceptance test: a value with its bound is accepted when it has GOOD_BITS
correct bits and its interval rounds to one value in every format. Also the double-double view
(hi, lo) of MPFR values, which the test and :class:`~harness.reference.Exact` use."""

from __future__ import annotations

import math

import gmpy2
import mpmath
import numpy as np
from gmpy2 import mpfr

from harness.formats import FORMATS
from harness.reference.arithmetic import GOOD_BITS, MAX_BITS, _ctx
from harness.reference.value import _Value

#: Double-doubles represent values faithfully (lo normal) only above this magnitude; smaller and
#: larger values are checked in MPFR (they are rare: gradients of 1e-300, losses of e^-1000).
_DD_MIN = 2.0**-960
#: 2^-1077 as an MPFR value (not a double): |v| + b below 2^-1076 rounds to a signed zero everywhere
with gmpy2.context(gmpy2.get_context(), emin=-(2**30), emax=2**30):
    _ZERO_IN_ALL = gmpy2.mul_2exp(gmpy2.mpfr(1), -1077)
_DD_MAX = 2.0**1020


def _dd_error(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Upper bound on |v - (hi + lo)| for hi = RN(v), lo = RN(v - hi) (or the sticky subnormal):
    half an ulp of lo, at most 2^-53 |lo| (or the smallest subnormal)."""
    return np.abs(lo) * 2.0**-53 + 2.0**-1074


def _round_stable(hi: np.ndarray, lo: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """True where the value of record v (within ``bound`` of the truth) has GOOD_BITS correct
    bits (bound <= 2^-GOOD_BITS |v|) and [hi + lo - b, hi + lo + b], b = bound + the
    double-double view's own rounding error, rounds to a single value in every format.

    The view's rounding (half an ulp of lo, <= 2^-106 |v|) counts for the rounding decisions but
    not for the bits: the values of record are the MPFR values (the public API) and the fast
    pass's triple-doubles; the view hi + lo is within 2^-105 of the truth.
    Values outside [_DD_MIN, _DD_MAX] are not decided here (the caller checks them in MPFR)."""
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        rec = np.asarray(bound, dtype=np.float64)
        b = rec + _dd_error(hi, lo)
        ok = rec <= np.abs(hi) * 2.0**-GOOD_BITS
        for fmt in FORMATS.values():
            ok &= _margin(hi, lo, fmt) > b
    # Non-finite values are exact (inf/NaN patterns are decided by IEEE rules, not rounding).
    return ok | ~np.isfinite(hi)


def _margin(hi: np.ndarray, lo: np.ndarray, fmt) -> np.ndarray:
    """Distance from v = hi + lo to the nearest rounding boundary of ``fmt``: a midpoint between
    two neighbours, or the overflow threshold max + ulp/2 (the only boundary beyond max)."""
    p, emin = fmt.precision, fmt.emin
    a = np.abs(hi)
    slo = np.where(hi < 0, -lo, lo)  # v's offset from hi, seen on the positive side
    top = (2.0 - 2.0 ** (1 - p)) * 2.0**fmt.emax + 2.0 ** (fmt.emax - p)  # max + ulp/2
    to_top = np.abs((a - top) + slo)
    _, e = np.frexp(a)  # a = f * 2^e, f in [0.5, 1): the binary exponent is e - 1
    q = np.minimum(np.maximum(e - 1, emin), fmt.emax) - p + 1  # ulp exponent of a's binade
    ulp = np.ldexp(1.0, q)
    n = np.floor(a / ulp)  # exact
    # At the start of a normal binade the boundary below is a quarter-ulp away (the binade below
    # has half the ulp).
    first = (n == 2.0 ** (p - 1)) & (q > emin - p + 1)
    if fmt.name == "float64":
        # hi = RN_64(v), so v lies |lo| from hi and the boundaries are ulp/2 (or ulp/4) away.
        half_below = np.where(first, ulp / 4, ulp / 2)
        d = np.where(slo < 0, half_below, ulp / 2) - np.abs(lo)
    else:
        mid = (n + 0.5) * ulp
        below = np.where(first, n * ulp - ulp / 4, mid - ulp)
        d = np.minimum(np.abs((a - mid) + slo), np.abs((a - below) + slo))
    # Beyond max + ulp/2 every value rounds to inf: only the threshold itself is a boundary.
    return np.where(a > top, to_top, np.minimum(d, to_top))


def _stable_mpfr(v, bound) -> bool:
    """The acceptance test for one MPFR value, exactly (for values a double-double cannot
    hold): both ends of [v - b, v + b] round to the same value in every format, and
    b <= 2^-GOOD_BITS |v| unless every format rounds the whole interval to one signed zero."""
    if isinstance(v, mpmath.mpf) or not gmpy2.is_finite(v):
        return True  # mpmath values are below MPFR's range: every format rounds them to +-0
    if bound == 0:
        return True
    if gmpy2.cmp_abs(v, bound) > 0 and gmpy2.cmp_abs(v, _ZERO_IN_ALL) < 0:  # exact comparisons
        # the whole interval has v's sign and lies below 2^-1076, under half of every format's
        # smallest subnormal (float64's 2^-1074 is the smallest): one signed zero everywhere.
        # (Huge-gap rows have thousands of such entries; the eight roundings below cost 0.1 ms.)
        return True
    with _ctx(max(v.precision, 64) + 64):
        lo_end, hi_end = v - bound, v + bound  # rounding outward is harmless (it widens)
        same = all(_round_fmt(lo_end, f) == _round_fmt(hi_end, f)
                   and math.copysign(1, _round_fmt(lo_end, f)) == math.copysign(1, _round_fmt(hi_end, f))
                   for f in FORMATS.values())
        if not same:
            return False
        return bool(bound <= abs(v) * mpfr(2) ** -GOOD_BITS or _round_fmt(v, FORMATS["float64"]) == 0)


def _round_fmt(v, fmt) -> float:
    """RN_fmt(v) for an MPFR value, with the format's subnormals and overflow (IEEE)."""
    with gmpy2.context(gmpy2.get_context(), precision=fmt.precision, subnormalize=True,
                       emin=fmt.emin - fmt.precision + 2, emax=fmt.emax + 1):
        return float(gmpy2.mpfr(v) * 1)  # "* 1" rounds once and keeps the sign of -0


def _split(vals) -> tuple[np.ndarray, np.ndarray]:
    """mpfr values -> (hi, lo) float64 arrays, hi = RN(v), lo = RN(v - hi) (exact difference).

    If v - hi is nonzero but underflows, lo is the smallest subnormal with its sign: the
    double-double then still lies on v's side of hi, so ties are broken the way v breaks them
    (a value 1000.25 + e^-1000 must round up to 1000.5 in float16, not to even)."""
    hi = np.array([float(v) for v in vals], dtype=np.float64)
    los = []
    with _ctx(4 * MAX_BITS):
        for v, h in zip(vals, hi.tolist(), strict=False):
            if isinstance(v, mpmath.mpf) or not math.isfinite(h) or not gmpy2.is_finite(v):
                los.append(0.0)
                continue
            r = v - h  # exact at this precision (v has <= MAX_BITS bits, h 53)
            f = float(r)
            if f == 0.0 and r != 0:
                f = math.copysign(5e-324, r)
            los.append(f)
    return hi, np.array(los, dtype=np.float64)


def _values_stable(vals: list[_Value]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Double-double views, float bounds and the acceptance mask of a list of values."""
    hi, lo = _split([v.value for v in vals])
    with np.errstate(over="ignore"):
        b = np.array([float(v.bound) for v in vals], dtype=np.float64)
    a = np.abs(hi)
    far = np.isfinite(hi) & ((a < _DD_MIN) | (a > _DD_MAX) | ~np.isfinite(b))
    ok = _round_stable(hi, lo, b)
    for i in np.flatnonzero(far):
        ok[i] = _stable_mpfr(vals[i].value, vals[i].bound)
    return hi, lo, b, ok
