"""f_i * e_ij, the product of two triple-doubles, as a double-double with a rigorous error bound.

ERROR ANALYSIS OF scale_rows
============================
f = f1 + f2 + f3 exact (non-overlapping: |f2| <= u|f1|, |f3| <= u|f2|), e = e1 + e2 + e3 the
computed triple. (p, pe) = TwoProd(f1, e1), (q1, q1e) = TwoProd(f1, e2), (q2, q2e) =
TwoProd(f2, e1), (m2, m2e) = TwoSum(q1, q2): all exact, so f1e1 + f1e2 + f2e1 = p + pe + m2 +
m2e + q1e + q2e. m3 = RN(RN(RN(f1e3 + f2e2) + f3e1) + RN(RN(q1e + q2e) + m2e)): values
<= 4u^2 |f1e1|, 7 roundings, error <= 7 * 4u^3 |f1e1|; dropped f2e3 + f3e2 + f3e3 <= 3u^3|f1e1|;
(g, ge) = TwoSum(pe, m2) exact; w = RN(ge + m3): error <= u (u^2 + 4u^2)|f1e1| = 5u^3|f1e1|;
(hi, t) = Fast2Sum(p, g) exact. The value of record v = hi + t + w is within PROD_REL |hi| of
f e, PROD_REL = 40u^3(1 + 2^-50) < 2^-153.6; the double-double view is hi + lo with lo = RN(t + w),
whose own rounding (<= |lo| 2^-53, the view's 2^-106) the caller adds (harness.reference does).
  |f*e - f*e_true| <= EXP_REL (1 + 2^-100) |f e|; so
  bound = (EXP_REL + PROD_REL) |hi| (1 + 2^-50)   [+ 2^-1069 if |hi| < 2^-900,
  which covers the underflow of TwoProd and of the small products]
  (the (1 + 2^-50) factor covers |f e| <= |hi|(1 + 2^-52) and the rounding of the bound itself).
  Flag-1 triples (all have |e1| < 2^-949): bound += |f1| (1 + 2^-50) FLAG1_ABS + 2^-1074.
  With a flag array: flag-2 entries get hi = lo = 0 and bound = |f1| (1 + 2^-50) FLAG_E + 2^-1074.
  hi = RN(v) for the computed v = p + g + w (Fast2Sum): it equals RN(f e_true) except when
  f e_true is within ~2^-117 |v| of a midpoint.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from harness.fastpath.contract import (
    BOUND_PAD,
    EXP_REL,
    FLAG1_ABS,
    FLAG3_E100,
    FLAG_E,
    PROD_REL,
    as_f64_2d,
)
from harness.fastpath.error_free import fast_two_sum, two_prod, two_sum
from harness.fastpath.jit import kernel

__all__ = ["scale_rows"]

_BOUND_REL = EXP_REL + PROD_REL
_UNDER_LIM = 2.0**-900
_UNDER_ABS = 2.0**-1069
_SMALL_E = 2.0**-949  # every flag-1 triple has e1 below this (flag 0 ones are >= 2^-949.31)


@kernel(parallel=True)
def _scale_rows_kernel(f, e1, e2, e3, flag, has_flag, hi, lo, bound):
    M, C = e1.shape
    for i in prange(M):
        f1 = f[i, 0]
        f2 = f[i, 1]
        f3 = f[i, 2]
        fb = abs(f1) * BOUND_PAD * FLAG_E + 2.0**-1074
        fb3 = abs(f1) * BOUND_PAD * FLAG3_E100 * 2.0**-100 + 2.0**-1074  # rounding covered
        for j in range(C):
            if has_flag and flag[i, j] >= 2:
                hi[i, j] = 0.0
                lo[i, j] = 0.0
                bound[i, j] = fb if flag[i, j] == 2 else fb3
                continue
            a1 = e1[i, j]
            a2 = e2[i, j]
            a3 = e3[i, j]
            p, pe = two_prod(f1, a1)
            # the second-order terms exactly (two TwoProds), so the product's own error is
            # O(u^3), far below EXP_REL; only the view's final rounding (lo) is O(u^2)
            q1, q1e = two_prod(f1, a2)
            q2, q2e = two_prod(f2, a1)
            m2, m2e = two_sum(q1, q2)
            m3 = ((f1 * a3 + f2 * a2) + f3 * a1) + (q1e + q2e + m2e)
            g, ge = two_sum(pe, m2)
            w = ge + m3
            h, t = fast_two_sum(p, g)
            lw = t + w
            b = _BOUND_REL * abs(h) * BOUND_PAD
            if abs(h) < _UNDER_LIM:
                b += _UNDER_ABS
            if abs(a1) < _SMALL_E:  # a flag-1 triple: absolute error FLAG1_ABS
                b += abs(f1) * BOUND_PAD * FLAG1_ABS + 2.0**-1074
            hi[i, j] = h
            lo[i, j] = lw
            bound[i, j] = b


def scale_rows(f, e1, e2, e3, out_hi=None, out_lo=None, flag=None, out_bound=None):
    """(hi, lo, bound) for v = f_i * e_ij (product of two triples as a double-double).

    f: float64 (M, 3), a non-overlapping triple per row with |f| in 2^-900..2^900.
    hi = RN(v), lo = RN(v - hi); bound (M, C) >= |hi + lo - f_i * e_true_ij| for entries whose
    e triple has flag 0 or 1 (EXP_REL, the product's rounding PROD_REL, and for
    |e1| < 2^-949 the absolute FLAG1_ABS * |f1| included).
    With ``flag`` (the uint8 array from exp_rows): flag-2 entries get hi = lo = 0 and
    bound = |f1| * (1 + 2^-50) * FLAG_E + 2^-1074, a valid bound on |f_i e_true|. Without it, flag-2 entries
    (whose e triple is 0) get hi = lo = bound = 0: the caller must handle them.
    out_hi / out_lo / out_bound: optional preallocated float64 (M, C) C-contiguous outputs.
    """
    e1 = as_f64_2d(e1, "e1")
    e2 = as_f64_2d(e2, "e2")
    e3 = as_f64_2d(e3, "e3")
    M, C = e1.shape
    if e2.shape != e1.shape or e3.shape != e1.shape:
        raise ValueError("e1, e2, e3 must have one shape")
    f = np.ascontiguousarray(f, dtype=np.float64)
    if f.shape != (M, 3):
        raise ValueError("f must have shape (M, 3)")
    hi = np.empty((M, C), dtype=np.float64) if out_hi is None else as_f64_2d(out_hi, "out_hi")
    lo = np.empty((M, C), dtype=np.float64) if out_lo is None else as_f64_2d(out_lo, "out_lo")
    if hi.shape != (M, C) or lo.shape != (M, C):
        raise ValueError("out_hi / out_lo must have shape (M, C)")
    if flag is None:
        fl = np.zeros((1, 1), dtype=np.uint8)
        has_flag = False
    else:
        fl = np.ascontiguousarray(flag, dtype=np.uint8)
        if fl.shape != (M, C):
            raise ValueError("flag must have shape (M, C)")
        has_flag = True
    bound = (
        np.empty((M, C), dtype=np.float64)
        if out_bound is None
        else as_f64_2d(out_bound, "out_bound")
    )
    if bound.shape != (M, C):
        raise ValueError("out_bound must have shape (M, C)")
    if M and C:
        _scale_rows_kernel(f, e1, e2, e3, fl, has_flag, hi, lo, bound)
    return hi, lo, bound
