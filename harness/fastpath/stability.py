"""Whether each entry of a row rounds stably to every format: the acceptance test, vectorized.

The same test as harness.reference.stability._round_stable (whose numpy form is the
specification and is used for small arrays), compiled: for each value v = hi + lo with bound b
on the value of record, GOOD (b <= 2^-106 |hi|) and, with b' = b + |lo| 2^-53 + 2^-1074 (the
view's own rounding), [v - b', v + b'] contains no rounding boundary of float16, bfloat16,
float32, float64 (midpoints, the quarter-ulp boundary below a binade's first value,
max + ulp/2).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from harness.fastpath.contract import BOUND_PAD, FLAG3_E100, FLAG_E, as_f64_2d
from harness.fastpath.jit import kernel

__all__ = ["stable_rows"]



@kernel(inline="always")
def _margin_narrow(a, slo, p, emin, emax):
    top = (2.0 - 2.0 ** (1 - p)) * 2.0**emax + 2.0 ** (emax - p)
    to_top = abs((a - top) + slo)
    if a > top:
        return to_top
    _, e = math.frexp(a)
    q = max(e - 1, emin)
    q = min(q, emax) - p + 1
    ulp = math.ldexp(1.0, q)
    n = math.floor(a / ulp)
    mid = (n + 0.5) * ulp
    if n == 2.0 ** (p - 1) and q > emin - p + 1:
        below = n * ulp - ulp / 4
    else:
        below = mid - ulp
    d = min(abs((a - mid) + slo), abs((a - below) + slo))
    return min(d, to_top)


@kernel(inline="always")
def _margin_f64(a, lo, slo):
    top = (2.0 - 2.0**-52) * 2.0**1023  # max; v = hi + lo with hi = RN(v) finite
    _, e = math.frexp(a)
    q = max(e - 1, -1022) - 52
    ulp = math.ldexp(1.0, q)
    first = a == math.ldexp(1.0, e - 1) and q > -1074
    half = ulp / 2
    if slo < 0 and first:
        half = ulp / 4
    d = half - abs(lo)
    if a == top and slo > 0:
        d = min(d, ulp / 2 - abs(lo))
    return d


@kernel(inline="always")
def _far_fmt(bits, a, p, emin, emax):
    """A sufficient test that no rounding boundary of the p-bit format lies within 1.5 ulp64
    of a (a normal float64; the rest of the view lies within ulp64/2). Below the overflow
    threshold the boundaries near a are the midpoints of the format's grid there (spacing
    2^q, q = max(e, emin) - p + 1): a is near one exactly when the nb = q - (e - 52) low bits
    of its significand are within 1 of 2^(nb - 1). (The quarter-ulp boundary below a binade's
    first value is the last midpoint of the binade below, so it is covered.)"""
    if a > (2.0 - 2.0 ** (2 - p)) * 2.0**emax:
        return False
    e = ((bits >> 52) & 0x7FF) - 1023
    q = max(e, emin) - p + 1
    nb = q - (e - 52)
    if nb >= 54:  # a < 2^(q-1): the nearest boundary is the midpoint 2^(q-1) above a
        return a < 2.0 ** (q - 2)
    sig = (bits & 0xFFFFFFFFFFFFF) | (1 << 52)
    r = sig & ((1 << nb) - 1)
    return abs(r - (1 << (nb - 1))) >= 2


@kernel(inline="always")
def _far(bits, a, lw):
    """Most values are far from every boundary; this integer screen says so in a few
    operations (the exact margins below decide the rest). Needs |hi| normal, bound << ulp64."""
    if not (a >= 2.0**-1000 and a < 2.0**1000) or not abs(lw) < a * 2.0**-55:
        return False  # float64: |lo| < ulp/4 leaves its midpoints >= ulp/4 away
    return _far_fmt(bits, a, 11, -14, 15) and _far_fmt(bits, a, 8, -126, 127) and _far_fmt(bits, a, 24, -126, 127)


@kernel(parallel=True)
def _stable_rows_kernel(hi, hbits, lo, bound, e1, flag, f1, tcol, lo_lim, hi_lim, good, out):
    M, C = hi.shape
    for i in prange(M):
        ok = True
        sgn = 1.0 if f1[i] >= 0 else -1.0
        # |v| < 2^-1075 (half the smallest subnormal) rounds to a signed zero in every format
        # (scaled by 2^100: 2^-1075 itself is not a double)
        deep_ok = abs(f1[i]) * (FLAG_E * 2.0**100) * BOUND_PAD < 2.0**-975
        deep3_ok = abs(f1[i]) * FLAG3_E100 * BOUND_PAD < 2.0**-975
        for j in range(C):
            if j == tcol[i]:
                continue  # the target entry is decided by the caller (in MPFR)
            if flag[i, j] >= 2:
                # below 2^-949 (flag 2) or 2^-1096 (flag 3) relative: a signed zero in every
                # format when |f| times that is under half the smallest subnormal (the MPFR
                # path's view: +-0 with a sticky lo)
                if not (deep_ok if flag[i, j] == 2 else deep3_ok):
                    ok = False
                hi[i, j] = 0.0 * sgn
                lo[i, j] = 5e-324 * sgn
                continue
            if e1[i, j] == 0.0:  # a -inf logit: exactly +0
                hi[i, j] = 0.0
                lo[i, j] = 0.0
                bound[i, j] = 0.0
                continue
            if not ok:
                continue
            h = hi[i, j]
            a = abs(h)
            if not (a >= lo_lim and a <= hi_lim):
                ok = False
                continue
            lw = lo[i, j]
            rec = bound[i, j]
            if not rec <= a * good:
                ok = False
                continue
            if _far(hbits[i, j], a, lw):
                continue
            b = rec + abs(lw) * 2.0**-53 + 2.0**-1074
            slo = -lw if h < 0 else lw
            if not _margin_f64(a, lw, slo) > b:
                ok = False
                continue
            # float16, bfloat16, float32 (unrolled: constant arguments fold)
            if not (_margin_narrow(a, slo, 11, -14, 15) > b and _margin_narrow(a, slo, 8, -126, 127) > b
                    and _margin_narrow(a, slo, 24, -126, 127) > b):
                ok = False
        out[i] = ok


def stable_rows(hi, lo, bound, e1, flag, f1, tcol, *, lo_lim: float, hi_lim: float,
                good_bits: int) -> np.ndarray:
    """Settle the entries of scale_rows' output in place and test them, per row.

    Entries with flag 2 become the signed zero with a sticky low part (valid when
    |f1| FLAG_E < 2^-1076, else the row fails); entries with e1 == 0 (-inf logits) become +0.
    Every other entry but column ``tcol[i]`` must lie in [lo_lim, hi_lim] in magnitude, have
    ``good_bits`` correct bits (bound <= 2^-good_bits |hi|) and round stably in all four formats
    (harness.reference.stability._round_stable is the specification; this is its compiled form).
    Returns a bool per row."""
    hi = as_f64_2d(hi, "hi")
    lo = as_f64_2d(lo, "lo")
    bound = as_f64_2d(bound, "bound")
    e1 = as_f64_2d(e1, "e1")
    flag = np.ascontiguousarray(flag, dtype=np.uint8)
    f1 = np.ascontiguousarray(f1, dtype=np.float64)
    tcol = np.ascontiguousarray(tcol, dtype=np.int64)
    out = np.empty(hi.shape[0], dtype=np.bool_)
    if hi.size:
        _stable_rows_kernel(hi, hi.view(np.int64), lo, bound, e1, flag, f1, tcol, float(lo_lim), float(hi_lim),
                            2.0**-good_bits, out)
    else:
        out[:] = True
    return out
