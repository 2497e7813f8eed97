"""Vectorized first pass of the correctly rounded reference: exp(x_j - m) in triple-double.

This is the first phase of the CRlibm / CORE-MATH two-phase idea: whole row blocks are evaluated
in numba with a *proven* relative error bound (``EXP_REL``) far below the 2^-106 that the
double-double view of the reference needs; only what this pass cannot settle goes to MPFR.

This module imports numba at import time; ``import harness`` does not import it (callers import
``harness.fastpath`` lazily). The 2^(i/1024) table is built at import with mpmath (200 bits).

Implementation: rows are spread over threads with ``prange``; each row is processed in chunks of
256 entries: pass 1 is a branch-free loop over the chunk (LLVM vectorizes it 4-wide with AVX2;
the table is a frozen global so its gathers cannot alias the stores), pass 2 applies the
special cases (the max, -inf, flags), the scaling by 2^n and the row sum. First compilation
takes ~15-25 s; the numba cache (``cache=True``) makes later imports cheap.

Public API
----------
``exp_rows(x, k, lo=None) -> (e1, e2, e3, s, flag, smin)``
    e_j = exp((x_j + lo_j) - (x_k + lo_k)) per row as a non-overlapping triple-double, the row
    sums s_i = sum_{j != k} e_j (a triple), a per-entry flag.
``scale_rows(f, e1, e2, e3, out_hi=None, out_lo=None, flag=None) -> (hi, lo, bound)``
    v = f_i * e_ij as a double-double (hi = RN(v)) with a rigorous absolute error bound.
``EXP_REL``, ``SUM_REL``, ``SUM_ABS``, ``PROD_REL``, ``FLAG_D``, ``FLAG1_E``, ``FLAG1_ABS``,
``FLAG2_D``, ``FLAG_E``: the proven constants.
``two_sum``, ``fast_two_sum``, ``two_prod``, ``dd_add``: documented numba error-free transforms.

Notation: u = 2^-53 (unit roundoff of RN), ulp(x) = 2^(floor(log2|x|) - 52),
RN(a op b) = (a op b)(1 + delta), |delta| <= u, and |RN(y) - y| <= ulp(y)/2 <= u|y|.
Additions and subtractions are exact whenever the result underflows, so "a + b" never has an
underflow error; products are only formed on values in the normal range except where noted.

Error-free transforms (never reassociated: every kernel is compiled with fastmath=False, and
LLVM does not contract a*b+c into an FMA without fastmath flags; the FMA below is explicit):
  TwoSum(a, b) = (s, t): s = RN(a + b), s + t = a + b exactly, |t| <= ulp(s)/2   (Knuth)
  Fast2Sum(a, b): same, needs |a| >= |b| or a == 0                              (Dekker)
  TwoProd(a, b) = (p, t): p = RN(ab), t = RN(ab - p) = ab - p exactly via FMA (llvm.fma.f64;
      Python 3.11's math has no fma, so it is an LLVM intrinsic), exact when ab does not underflow
      (|ab| >= 2^-969).

ERROR ANALYSIS OF exp_rows (proof sketch; every number below is an upper bound)
===============================================================================
Inputs: x_j, m = x_k, optional lo_j, lo_k. Precondition for the lo form: |lo_j| <= 2^-12 for every
entry (true for normalized double-double logits with |x| < 2^40); without lo there is none.

Step 0, the exact argument. (s, e) = TwoSum(x_j, -m); with lo: (u1, v1) = TwoSum(lo_j, -lo_k),
  (s2, e2) = TwoSum(s, u1), (eh, el) = TwoSum(e, e2), (eh, el') = TwoSum(eh, v1), el = RN(el + el').
  Then d = s2 + eh + el + (error of el <= u*2^-95 = 2^-148), and without lo d = s + e exactly
  (s2 = s, eh = e, el = 0). For s2 >= -745.5: |s| <= 746 + 2^-11, |eh| <= 3u*747 < 2^-41.7,
  |el| <= 2^-94.
  Flags: s2 < -760 (FLAG3_D) => d < -760 + 2^-41 => e_j < 2^-1096 (2^FLAG3_LOG2): stored 0, flag 3,
           not summed (a bound tight enough that f e_j rounds to a signed zero for |f| < 2^20).
         s2 < -745.5  => d < -745.5 + 2^-41 => e_j < 2^-1075.5: stored 0, flag 2, not summed.
         s2 < FLAG2_D = -693.14718055 (= -1000 ln2 + 2^-26.6) => e_j < FLAG_E = 2^-999.9999999:
           flag 2 (triple stored as 0, its value is still added to s, see SUM); conversely every
           e_j < 2^-1000 has d < -1000 ln2, so s2 <= d + 2^-41.8 < FLAG2_D: it is flagged 2.
         s2 < FLAG_D = -658 (and not flag 2) => e_j < FLAG1_E = 2^-949.29: flag 1, the triple is
           stored but only accurate to EXP_REL e_j + FLAG1_ABS (2^-1073) absolute (Step 5).
         Otherwise flag 0 and e_j >= 2^-949.3: relative accuracy EXP_REL.
Step 1, reduction with L = ln2/1024 = L1 + L2 + L3 + L4: L1 = 0x1.62e42ffp-11 (29 bits, a
  multiple of 2^-39), |L2| < 2^-44.5, |L3| < 2^-99.4, |L4| < 2^-154.4.
  N = round(RN(s2 * INV_L)) (shifter trick: y = RN(s2 INV_L + 1.5 2^52), N = bits(y) -
  bits(1.5 2^52), Nf = y - 1.5 2^52 exact), |N| <= 1.11e6 < 2^20.1, so N*L1 is
  exact (<= 50 bits). a = RN(s2 - N*L1) is exact: R = s2 - N*L1 satisfies |R| <= L/2 +
  |s2|*3u + |N||L - L1| < 2^-11.5; R is a multiple of g = min(ulp(s2), 2^-39); if N = 0 it is s2;
  else |s2| >= 2^-11.6 so g >= 2^-64 and |R|/g < 2^53: R is representable.
  (p2h, p2l) = TwoProd(N, L2) exact, |p2h| <= 2^-24.4, |p2l| <= 2^-77.4.
  p3 = RN(N*L3): error <= 2^-133.3. Dropped N*L4: <= 2^-134.3.
  (w, wl) = TwoSum(eh, -p2h) exact; (rh, rl0) = TwoSum(a, w) exact;
  small = RN(RN(RN(wl + el) - p2l) - p3): |small| <= 2^-74.3, its 3 roundings <= 3*2^-127.3.
  So r := d - N*L = rh + rl0 + small + eps_r with |eps_r| <= 2^-125.6 (all of the above),
  |rh| <= rho := L/2 + 2^-40 = 2^-11.529, |rl0| <= ulp(rh)/2 <= 2^-65, |small| <= 2^-74.3.
Step 2, the polynomial P(rh) = exp(rh) - 1 = rh + rh^2 (1/2 + rh(1/6 + ... + rh/8!)) + R9,
  |R9| <= rho^9/9! * e^rho <= 2^-122.26 (Taylor). Evaluation (Horner):
  A = RN-evaluation of c6 + rh(c7 + rh c8) (doubles): |A - exact| <= 2^-61.9,
      contributes rho^6 * 2^-61.9 = 2^-131.1;
  B = c5 + rh*A as Fast2Sum(c5h, RN(rh*A)) + c5l: error <= 2^-74.9 (the product's rounding) +
      rho*2^-61.9 + 2^-112, contributes rho^5 * 2^-73.3 <= 2^-130.9;
  Y4, Y3, Y2 = c_k + rh*Y (double-double Horner steps: exact TwoProd(rh, Yh), fma(rh, Yl, .),
      Fast2Sum(c_kh, .), the low parts rounded): each step's own error <= 2^-104.5 * |Y_k| and
      the dd constants 1/6, 1/24 have error <= 2^-108 * c_k; contributions after the remaining
      multiplications by rh^k: <= 2^-150, 2^-140, 2^-127.3 (Y2: 2^-104.5*0.5*rho^2);
  q1 = rh*Y2, Q = rh*q1 in dd (TwoProd + fma for the low part): roundings of the low parts
      <= u*2^-65.4 * rho + u*2^-77.4 <= 2^-130 total.
  tau = exp(r) - 1 = P(rh) + rl + rl*P(rh) + theta, rl = rl0 + small, |theta| <= rl^2 <= 2^-129.9.
  (th, tt) = Fast2Sum(rh, qh) exact; (bg, bge) = TwoSum(tt, rl0) exact;
  corr = RN(RN(rl0 + small) * th): error <= |rl| |P - th| + 3u|rl th| <= 2^-128.8;
  ts = RN(bge + RN(RN(small + ql) + corr)): |.| <= 2^-73.9, 3 roundings <= 3*2^-127.
  tau = th + bg + ts + eps_tau, |eps_tau| <= R9 + 2^-131.1 + 2^-130.9 + 2^-127.3 + 2^-130 +
      2^-129.9 + 2^-128.8 + 3*2^-127 (+ eps_r) <= 2^-121.0 (eps_r included).
Step 3, the product e_s = T_i (1 + tau), T_i = 2^(i/1024) = T1 + T2 + T3 + eps_T (RN-split of a
  200-bit mpmath value, |eps_T| <= 2^-158 T_i; T1 in [1, 2), |T2| <= u T1, |T3| <= u |T2|).
  (p1, p1l) = TwoProd(T1, th), (s0, c0) = Fast2Sum(T1, p1), (p2, p2l) = TwoProd(T1, bg),
  (p3, p3l) = TwoProd(T2, th): exact. Level-1 terms c0, T2, p1l, p2, p3 (|.| <= 2^-51) are summed
  with 4 TwoSums (exact) into mh; all the rest (TwoSum errors, p2l, p3l, T3, T1*ts, T2*bg,
  T3*th; each |.| <= 2^-72.9, total <= 2^-72) is summed in double: <= 12 roundings of values
  <= 2^-72, error <= 2^-121.4 relative to T1. Dropped: T2*ts, T3*bg, T3*ts, T*eps_tau
  cross terms <= 2^-126. Sum: X = s0 + mh + ml with |X - e_s| <= 2^-121.0*2*(1+2^-10)
  (tau part, times T <= 2) + 2^-121.4*T1 + 2^-158*e_s, i.e. relative to e_s >= T1(1 - 2^-11.5):
      |X - e_s| / e_s <= 2^-120.0 + 2^-121.3 + 2^-125.9 <= 2^-119.4.
Step 4, renormalization (exact, no extra error beyond 2^-157): (z, zerr) = TwoSum(mh, ml);
  z_o = z rounded to odd with the sticky zerr (bit manipulation); e1 = RN(s0 + z_o) equals RN(X)
  exactly (the round-to-odd argument: z_o's grid, <= 2^-102, is far finer than the midpoints of
  e1's grid, >= 2^-55, and z_o is odd, so s0 + z_o and X are never separated by a midpoint);
  t1 = s0 - e1 exact (Sterbenz), (g2, gl) = TwoSum(t1, z), w2 = RN(gl + zerr) (error
  <= 2^-157), (e2, e3) = TwoSum(g2, w2). Hence e1 = RN(X), |e2| <= ulp(e1)/2 (|X - e1| <= ulp/2
  and the 2^-157 error cannot cross the next double after ulp/2), |e3| <= ulp(e2)/2.
Step 5, scaling by 2^n (N = 1024 n + i): for flag 0, n >= -950, e1*2^n and e2*2^n are exact
  (normal), e3*2^n may be subnormal: error <= 2^-1075 <= 2^-125.7 e_j (as e_j >= 2^-949.3);
  non-overlap is preserved (RN is monotone and ulp(e2)/2 is representable).
  Total for flag 0: |e1 + e2 + e3 - e_j| <= (2^-119.4 + 2^-125.7) e_j < 2^-119.3 e_j.
  Flags 1 and 2 (n down to -1078): f*2^na exactly (normal), then one rounding by 2^(n - na):
  each component errs by <= 2^-1075, so |triple - e_j| <= 2^-119.4 e_j + 3*2^-1075, and
  3*2^-1075 = 2^-1073.4 <= FLAG1_ABS.
  EXP_REL = 2^-118 (the claimed constant keeps a factor > 2 of slack over this sketch).
  Consequence: e1 = RN(e_j) whenever e_j is not within 2^-118 e_j of a rounding midpoint.

ERROR ANALYSIS OF s (SUM)
=========================
Terms f_j (j != k, x_j > -inf, s2 >= -745.5) are the triples before zeroing; flag-1/2 terms are
scaled in two exact-then-one-rounding steps, so their triple carries at most 3*2^-1075 absolute
error beyond the relative EXP_REL. All f_j >= 0, |f2| <= u f1, |f3| <= u |f2|.
Accumulator (A, B, Cc): (A, t) = TwoSum(A, f1); (B, t2) = TwoSum(B, t); (B, t3) = TwoSum(B, f2);
Cc = RN(Cc + RN(RN(t2 + t3) + f3)); every R = 64 terms (A, B) = TwoSum(A, B),
(B, Cc) = TwoSum(B, Cc). Only the Cc updates round. With P = sum f_j (exact): |B| <= (2R+1)uP,
|t2|, |t3| <= (2R+1)u^2 P, |Cc| <= (4R^2+5R+2)u^2 P, so each step errs by <= 3u(4R^2+9R+5)u^2 P
and the C steps by <= 3C(4R^2+9R+5)u^3 P <= 2^-121.4 P for C <= 2^22 (enforced).
Final renormalization by TwoSums is exact. Hence, with s_true = sum_{j != k} e_j:
    |s_computed - s_true| <= SUM_REL * s_true + SUM_ABS * C,
    SUM_REL = EXP_REL + 2^-120  (EXP_REL from the terms, 2^-121.4(1 + EXP_REL) from summing),
    SUM_ABS = 2^-1073 (>= 3*2^-1075 per flag-1/2 term from the subnormal scaling, and
    >= 2^-1075.5 per dropped term with s2 < -745.5).
Flag-1/2 terms therefore contribute < C * 2^-1073 absolute beyond the relative bound.

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

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

__all__ = [
    "DROP_D",
    "EXP_REL",
    "FLAG1_ABS",
    "FLAG1_E",
    "FLAG2_D",
    "FLAG_D",
    "FLAG_E",
    "MAX_COLS",
    "PROD_REL",
    "SUM_ABS",
    "SUM_REL",
    "dd_add",
    "exp_rows",
    "exp_table",
    "fast_two_sum",
    "scale_rows",
    "two_prod",
    "two_sum",
]

EXP_REL = 2.0**-118
SUM_REL = EXP_REL + 2.0**-120
SUM_ABS = 2.0**-1073
PROD_REL = 2.0**-153.6  # the product's own error (the view's rounding excluded)
FLAG_D = -658.0  # s2 < FLAG_D  => flag 1 or 2
FLAG1_E = 2.0**-949.29  # flag 1 or 2 => e_true < FLAG1_E  (exp(-658 + 2^-41) < 2^-949.29)
FLAG1_ABS = 2.0**-1073  # flag 1: |e1 + e2 + e3 - e| <= EXP_REL e + FLAG1_ABS
FLAG2_D = -693.14718055  # -1000 ln 2 + 2^-30.4:  e_true < 2^-1000 => s2 < FLAG2_D => flag 2
FLAG_E = 2.0**-999.9999999  # flag 2 => e_true < FLAG_E  (exp(FLAG2_D + 2^-41) < 2^-999.9999999)
DROP_D = -745.5  # s2 < DROP_D => e_true < 2^-1075.5, stored and summed as 0
FLAG3_D = -760.0  # s2 < FLAG3_D => flag 3: e_true < 2^FLAG3_LOG2 (exp(-760 + 2^-41) < 2^-1096.4)
FLAG3_LOG2 = -1096  # flag 3 => e_true < 2^FLAG3_LOG2 (not a double: used scaled by 2^100)
_FLAG3_E100 = 2.0 ** (FLAG3_LOG2 + 100)
MAX_COLS = 1 << 22
_RENORM = 64
_CHUNK = 256
_CLAMP_D = -747.0  # pass 1 evaluates max(s2, -747) so every lane stays finite

# ---- constants (hex literals checked against MPFR in tests/test_fastpath.py) ----------------
_INV_L = float.fromhex("0x1.71547652b82fep+10")  # RN(1024 / ln 2)
_L1 = float.fromhex("0x1.62e42ff000000p-11")  # ln2/1024 to 2^-42, 29 significant bits
_L2 = float.fromhex("-0x1.718432a1b0e26p-45")
_L3 = float.fromhex("-0x1.9ff0342542fc3p-100")
_SHIFT = 6755399441055744.0  # 1.5 * 2^52
_SHIFT_BITS = 0x4338000000000000  # its bit pattern
_C3H = float.fromhex("0x1.5555555555555p-3")
_C3L = float.fromhex("0x1.5555555555555p-57")
_C4H = float.fromhex("0x1.5555555555555p-5")
_C4L = float.fromhex("0x1.5555555555555p-59")
_C5H = float.fromhex("0x1.1111111111111p-7")
_C5L = float.fromhex("0x1.1111111111111p-63")
_C6 = float.fromhex("0x1.6c16c16c16c17p-10")
_C7 = float.fromhex("0x1.a01a01a01a01ap-13")
_C8 = float.fromhex("0x1.a01a01a01a01ap-16")
_TWO_M53 = 2.0**-53
_BOUND_REL = EXP_REL + PROD_REL
_BOUND_PAD = 1.0 + 2.0**-50
_UNDER_LIM = 2.0**-900
_UNDER_ABS = 2.0**-1069
_SMALL_E = 2.0**-949  # every flag-1 triple has e1 below this (flag 0 ones are >= 2^-949.31)


def _build_table() -> np.ndarray:
    """T[i] = 2^(i/1024) as an RN-split triple-double (mpmath at 200 bits)."""
    import mpmath
    from mpmath.libmp import round_nearest, to_float

    out = np.empty((1024, 3), dtype=np.float64)
    with mpmath.workprec(200):
        for i in range(1024):
            v = mpmath.power(2, mpmath.mpf(i) / 1024)
            t1 = to_float(v._mpf_, rnd=round_nearest)
            r = v - t1
            t2 = to_float(r._mpf_, rnd=round_nearest)
            r = r - t2
            t3 = to_float(r._mpf_, rnd=round_nearest)
            out[i] = (t1, t2, t3)
    out.setflags(write=False)
    return out


_TABLE = _build_table()


def exp_table() -> np.ndarray:
    """The (1024, 3) read-only table of 2^(i/1024) triples used by the kernel."""
    return _TABLE


# ---- LLVM intrinsics ------------------------------------------------------------------------
@intrinsic
def _fma(typingctx, a, b, c):
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(args[0], args[1], args[2])

    return sig, codegen


@intrinsic
def _f2i(typingctx, a):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _i2f(typingctx, a):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


# Small helpers are not cached: a cached helper is linked as object code, which LLVM cannot
# inline (a call per TwoSum costs ~4x). Uncached, their IR is linked into the (cached) kernels
# and LLVM inlines them; _exp_core is inlined at numba-IR level so that its loop vectorizes.
_jit = numba.njit(fastmath=False)


@_jit
def two_sum(a, b):
    """Knuth's TwoSum: (s, t) with s = RN(a+b) and s + t = a + b exactly."""
    s = a + b
    bb = s - a
    t = (a - (s - bb)) + (b - bb)
    return s, t


@_jit
def fast_two_sum(a, b):
    """Dekker's Fast2Sum: exact like two_sum, requires |a| >= |b| (or a == 0)."""
    s = a + b
    t = b - (s - a)
    return s, t


@_jit
def two_prod(a, b):
    """(p, t) with p = RN(ab), p + t = ab exactly (FMA; exact unless ab underflows)."""
    p = a * b
    return p, _fma(a, b, -p)


@_jit
def dd_add(ah, al, bh, bl):
    """Double-double sum (ah+al) + (bh+bl) -> (h, l), relative error <= 3u^2 for same signs."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


@_jit
def _pow2(n):
    """2^n as a double for -1022 <= n <= 1023."""
    return _i2f(np.int64(n + 1023) << 52)


@numba.njit(fastmath=False, inline="always")
def _exp_core(s2, eh, el):
    """exp(s2 + eh + el) = 2^(N/1024) ... returns (e1, e2, e3, N): exp = 2^n (e1 + e2 + e3) with
    N = 1024 n + i, 0 <= i < 1024, e1 in [0.99, 2.01]; see the module docstring."""
    # Step 1: reduction
    y = s2 * _INV_L + _SHIFT
    Nf = y - _SHIFT
    N = _f2i(y) - _SHIFT_BITS  # = Nf as an integer (|N| < 2^51, same binade as the shifter)
    a = s2 - Nf * _L1
    p2h = Nf * _L2
    p2l = _fma(Nf, _L2, -p2h)
    p3 = Nf * _L3
    w, wl = two_sum(eh, -p2h)
    rh, rl0 = two_sum(a, w)
    small = ((wl + el) - p2l) - p3
    # Step 2: polynomial in rh
    A = _C6 + rh * (_C7 + rh * _C8)
    ph = rh * A
    Bh, Bt = fast_two_sum(_C5H, ph)
    Bl = Bt + _C5L
    ph, pl = two_prod(rh, Bh)
    pl = _fma(rh, Bl, pl)
    Yh, t = fast_two_sum(_C4H, ph)
    Yl = t + (pl + _C4L)
    ph, pl = two_prod(rh, Yh)
    pl = _fma(rh, Yl, pl)
    Yh, t = fast_two_sum(_C3H, ph)
    Yl = t + (pl + _C3L)
    ph, pl = two_prod(rh, Yh)
    pl = _fma(rh, Yl, pl)
    Yh, t = fast_two_sum(0.5, ph)
    Yl = t + pl
    q1h, q1l = two_prod(rh, Yh)
    q1l = _fma(rh, Yl, q1l)
    qh, ql = two_prod(rh, q1h)
    ql = _fma(rh, q1l, ql)
    th, tt = fast_two_sum(rh, qh)
    bg, bge = two_sum(tt, rl0)
    corr = (rl0 + small) * th
    ts = bge + ((small + ql) + corr)
    # Step 3: product with the table entry
    i = N & 1023
    T1 = _TABLE[i, 0]  # a global: frozen as a constant, so LLVM can vectorize the gathers
    T2 = _TABLE[i, 1]
    T3 = _TABLE[i, 2]
    p1, p1l = two_prod(T1, th)
    s0, c0 = fast_two_sum(T1, p1)
    p2, p2l = two_prod(T1, bg)
    p3_, p3l = two_prod(T2, th)
    mh, ea = two_sum(c0, T2)
    g, eb = two_sum(p1l, p2)
    g, ec = two_sum(g, p3_)
    mh, ed = two_sum(mh, g)
    ml = ((ea + eb) + (ec + ed)) + ((p2l + p3l) + (T3 + (T1 * ts + (T2 * bg + T3 * th))))
    # Step 4: renormalization with e1 = RN(s0 + mh + ml) via round-to-odd
    z, zerr = two_sum(mh, ml)
    zi = _f2i(z)
    step = 1 if (zerr > 0.0) == (z > 0.0) else -1
    zi = zi + step if (zerr != 0.0 and (zi & 1) == 0) else zi
    zo = _i2f(zi)
    e1 = s0 + zo
    t1 = s0 - e1
    g2, gl = two_sum(t1, z)
    w2 = gl + zerr
    e2, e3 = two_sum(g2, w2)
    return e1, e2, e3, N


@numba.njit(cache=True, fastmath=False, parallel=True)
def _exp_rows_kernel(x, lo, has_lo, k, o1, o2, o3, s, flag):
    # the parallel layer only spreads rows over threads: parfor lowering of the whole body
    # would add ~15 s of compile time
    for i in prange(x.shape[0]):
        # the padded input copies are arguments of _exp_row (not locals there): LLVM then
        # proves them disjoint from its local buffer with runtime checks and vectorizes
        xin = np.empty(_CHUNK, dtype=np.float64)
        lin = np.zeros(_CHUNK, dtype=np.float64)
        _exp_row(x, lo, has_lo, k, o1, o2, o3, s, flag, np.int64(i), xin, lin)


@numba.njit(cache=True, fastmath=False)
def _exp_row(x, lo, has_lo, k, o1, o2, o3, s, flag, i, xin, lin):
    C = x.shape[1]
    CH = _CHUNK
    kk = k[i]
    m = x[i, kk]
    mlo = lo[i, kk] if has_lo else 0.0
    # one buffer (a single store stream keeps LLVM's runtime alias checks few enough)
    buf = np.empty((5, CH), dtype=np.float64)
    A = 0.0
    B = 0.0
    Cc = 0.0
    cnt = 0
    for j0 in range(0, C, CH):
        nj = min(C - j0, CH)
        # pass 1 (branch-free, vectorizable, fixed trip count): the core for every entry of the
        # chunk, read from padded copies so that one loop body serves both input forms
        for jj in range(nj):
            xin[jj] = x[i, j0 + jj]
        for jj in range(nj, CH):
            xin[jj] = m
        if has_lo:
            for jj in range(nj):
                lin[jj] = lo[i, j0 + jj]
            for jj in range(nj, CH):
                lin[jj] = mlo
        for jj in range(CH):
            s1, e = two_sum(xin[jj], -m)
            u1, v1 = two_sum(lin[jj], -mlo)
            s2, e2 = two_sum(s1, u1)
            eh, el = two_sum(e, e2)
            eh, el2 = two_sum(eh, v1)
            el = el + el2
            s2c = s2 if s2 > _CLAMP_D else _CLAMP_D
            r1, r2, r3, N = _exp_core(s2c, eh, el)
            buf[0, jj] = r1
            buf[1, jj] = r2
            buf[2, jj] = r3
            buf[3, jj] = _i2f(N)
            buf[4, jj] = s2
        # pass 2: special entries, flags, scaling by 2^n, the row sum
        for jj in range(nj):
            j = j0 + jj
            s2 = buf[4, jj]
            if j == kk:
                o1[i, j] = 1.0
                o2[i, j] = 0.0
                o3[i, j] = 0.0
                flag[i, j] = 0
                continue
            if x[i, j] == -np.inf:
                o1[i, j] = 0.0
                o2[i, j] = 0.0
                o3[i, j] = 0.0
                flag[i, j] = 0
                continue
            if s2 < DROP_D:
                o1[i, j] = 0.0
                o2[i, j] = 0.0
                o3[i, j] = 0.0
                flag[i, j] = 3 if s2 < FLAG3_D else 2
                continue
            N = _f2i(buf[3, jj])
            n = (N - (N & 1023)) >> 10
            f1 = buf[0, jj]
            f2 = buf[1, jj]
            f3 = buf[2, jj]
            if s2 < FLAG_D:
                # e_j < 2^-949.29: exact scaling by 2^(n - n/2), then one rounding by 2^(n/2)
                na = n >> 1
                sa = _pow2(na)
                sb = _pow2(n - na)
                f1 = (f1 * sa) * sb
                f2 = (f2 * sa) * sb
                f3 = (f3 * sa) * sb
                if s2 < FLAG2_D:
                    o1[i, j] = 0.0
                    o2[i, j] = 0.0
                    o3[i, j] = 0.0
                    flag[i, j] = 2
                else:
                    o1[i, j] = f1
                    o2[i, j] = f2
                    o3[i, j] = f3
                    flag[i, j] = 1
            else:
                sc = _pow2(n)
                f1 = f1 * sc
                f2 = f2 * sc
                f3 = f3 * sc
                o1[i, j] = f1
                o2[i, j] = f2
                o3[i, j] = f3
                flag[i, j] = 0
            # accumulate s (see SUM in the module docstring)
            A, t = two_sum(A, f1)
            B, t2 = two_sum(B, t)
            B, t3 = two_sum(B, f2)
            Cc = Cc + ((t2 + t3) + f3)
            cnt += 1
            if cnt == _RENORM:
                cnt = 0
                A, B = two_sum(A, B)
                B, Cc = two_sum(B, Cc)
    A, B = two_sum(A, B)
    B, Cc = two_sum(B, Cc)
    A, B = two_sum(A, B)
    s[i, 0] = A
    s[i, 1] = B
    s[i, 2] = Cc


@numba.njit(cache=True, fastmath=False, parallel=True)
def _scale_rows_kernel(f, e1, e2, e3, flag, has_flag, hi, lo, bound):
    M, C = e1.shape
    for i in prange(M):
        f1 = f[i, 0]
        f2 = f[i, 1]
        f3 = f[i, 2]
        fb = abs(f1) * _BOUND_PAD * FLAG_E + 2.0**-1074
        fb3 = abs(f1) * _BOUND_PAD * _FLAG3_E100 * 2.0**-100 + 2.0**-1074  # rounding covered
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
            b = _BOUND_REL * abs(h) * _BOUND_PAD
            if abs(h) < _UNDER_LIM:
                b += _UNDER_ABS
            if abs(a1) < _SMALL_E:  # a flag-1 triple: absolute error FLAG1_ABS
                b += abs(f1) * _BOUND_PAD * FLAG1_ABS + 2.0**-1074
            hi[i, j] = h
            lo[i, j] = lw
            bound[i, j] = b


def _as_f64_2d(a, name):
    a = np.asarray(a)
    if a.dtype != np.float64 or a.ndim != 2 or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous float64 2-D array")
    return a


def exp_rows(x: np.ndarray, k: np.ndarray, lo: np.ndarray | None = None, *, out=None):
    """e_j = exp((x_j + lo_j) - (x_k + lo_k)) per row, in triple-double.

    x: float64 (M, C), C-contiguous, entries finite or -inf (no NaN, no +inf; not all -inf in a
    row). k: int64 (M,), index of the first maximum of each row (d_j <= 0 is expected; small
    positive d_j are computed correctly too). lo: optional float64 (M, C) low parts with
    |lo| <= 2^-12 (the logits are x + lo exactly), None = 0. C <= 2^22.

    Returns (e1, e2, e3, s, flag, smin):
      e1, e2, e3 (M, C): non-overlapping triple (|e2| <= ulp(e1)/2, |e3| <= ulp(e2)/2),
        e1 + e2 + e3 within EXP_REL * e_j of e_j for flag 0, e1 = RN(e_j) away from midpoints;
        e_k = (1, 0, 0); -inf logits give exactly 0 (flag 0).
      s (M, 3): s_i = sum_{j != k} e_j as s[:,0] + s[:,1] + s[:,2] (s[:,0] ~ RN(s)),
        |s_computed - s_true| <= SUM_REL * s_true + SUM_ABS * C (flag-1/2 terms are included).
      flag uint8 (M, C): 0: accurate (relative EXP_REL, e_j >= 2^-949.3);
        1: 2^-1000 <= e_j < FLAG1_E = 2^-949.29 (about): the triple is stored, accurate to
           EXP_REL * e_j + FLAG1_ABS (2^-1073) absolute (its low parts are subnormal), and
           e1 = RN(e_j) away from midpoints; scale_rows accounts for the absolute part;
        2: e_j < FLAG_E = 2^-999.9999999 (every e_j < 2^-1000 is flagged 2): stored triple 0,
           its value is part of s.
      smin (M,): zeros (reserved).
    out: optional (e1, e2, e3, flag) preallocated outputs (float64 x3, uint8; (M, C),
      C-contiguous), reused across row blocks to skip first-touch page faults of fresh arrays
      (on this VM those cost about as much as the arithmetic).
    """
    x = _as_f64_2d(x, "x")
    M, C = x.shape
    if C > MAX_COLS:
        raise ValueError(f"at most {MAX_COLS} columns")
    k = np.ascontiguousarray(k, dtype=np.int64)
    if k.shape != (M,):
        raise ValueError("k must have shape (M,)")
    if M and C and (k.min() < 0 or k.max() >= C):
        raise ValueError("k out of range")
    if lo is None:
        lo_arr = np.zeros((1, 1), dtype=np.float64)
        has_lo = False
    else:
        lo_arr = _as_f64_2d(lo, "lo")
        if lo_arr.shape != x.shape:
            raise ValueError("lo must have the shape of x")
        has_lo = True
    if out is None:
        e1 = np.empty((M, C), dtype=np.float64)
        e2 = np.empty((M, C), dtype=np.float64)
        e3 = np.empty((M, C), dtype=np.float64)
        flag = np.empty((M, C), dtype=np.uint8)
    else:
        e1, e2, e3, flag = out
        for a, dt in ((e1, np.float64), (e2, np.float64), (e3, np.float64), (flag, np.uint8)):
            if (
                a.dtype != dt
                or a.shape != (M, C)
                or not a.flags.c_contiguous
                or not a.flags.writeable
            ):
                raise ValueError(
                    "out must be (e1, e2, e3, flag): float64 x3 and uint8, (M, C), C-contiguous"
                )
    s = np.empty((M, 3), dtype=np.float64)
    if M and C:
        _exp_rows_kernel(x, lo_arr, has_lo, k, e1, e2, e3, s, flag)
    else:
        s[:] = 0.0
    return e1, e2, e3, s, flag, np.zeros(M, dtype=np.float64)


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
    e1 = _as_f64_2d(e1, "e1")
    e2 = _as_f64_2d(e2, "e2")
    e3 = _as_f64_2d(e3, "e3")
    M, C = e1.shape
    if e2.shape != e1.shape or e3.shape != e1.shape:
        raise ValueError("e1, e2, e3 must have one shape")
    f = np.ascontiguousarray(f, dtype=np.float64)
    if f.shape != (M, 3):
        raise ValueError("f must have shape (M, 3)")
    hi = np.empty((M, C), dtype=np.float64) if out_hi is None else _as_f64_2d(out_hi, "out_hi")
    lo = np.empty((M, C), dtype=np.float64) if out_lo is None else _as_f64_2d(out_lo, "out_lo")
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
        else _as_f64_2d(out_bound, "out_bound")
    )
    if bound.shape != (M, C):
        raise ValueError("out_bound must have shape (M, C)")
    if M and C:
        _scale_rows_kernel(f, e1, e2, e3, fl, has_flag, hi, lo, bound)
    return hi, lo, bound


# -- the acceptance test, vectorized -----------------------------------------------------------
# The same test as harness.reference._round_stable (whose numpy form is the specification and
# is used for small arrays), compiled: for each value v = hi + lo with bound b on the value of
# record, GOOD (b <= 2^-106 |hi|) and, with b' = b + |lo| 2^-53 + 2^-1074 (the view's own
# rounding), [v - b', v + b'] contains no rounding boundary of float16, bfloat16, float32,
# float64 (midpoints, the quarter-ulp boundary below a binade's first value, max + ulp/2).



@numba.njit(cache=True, fastmath=False, inline="always")
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


@numba.njit(cache=True, fastmath=False, inline="always")
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


@numba.njit(cache=True, fastmath=False, inline="always")
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


@numba.njit(cache=True, fastmath=False, inline="always")
def _far(bits, a, lw):
    """Most values are far from every boundary; this integer screen says so in a few
    operations (the exact margins below decide the rest). Needs |hi| normal, bound << ulp64."""
    if not (a >= 2.0**-1000 and a < 2.0**1000) or not abs(lw) < a * 2.0**-55:
        return False  # float64: |lo| < ulp/4 leaves its midpoints >= ulp/4 away
    return _far_fmt(bits, a, 11, -14, 15) and _far_fmt(bits, a, 8, -126, 127) and _far_fmt(bits, a, 24, -126, 127)


@numba.njit(cache=True, fastmath=False, parallel=True)
def _stable_rows_kernel(hi, hbits, lo, bound, e1, flag, f1, tcol, lo_lim, hi_lim, good, out):
    M, C = hi.shape
    for i in prange(M):
        ok = True
        sgn = 1.0 if f1[i] >= 0 else -1.0
        # |v| < 2^-1075 (half the smallest subnormal) rounds to a signed zero in every format
        # (scaled by 2^100: 2^-1075 itself is not a double)
        deep_ok = abs(f1[i]) * (FLAG_E * 2.0**100) * _BOUND_PAD < 2.0**-975
        deep3_ok = abs(f1[i]) * _FLAG3_E100 * _BOUND_PAD < 2.0**-975
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
    (harness.reference._round_stable is the specification; this is its compiled form).
    Returns a bool per row."""
    hi = _as_f64_2d(hi, "hi")
    lo = _as_f64_2d(lo, "lo")
    bound = _as_f64_2d(bound, "bound")
    e1 = _as_f64_2d(e1, "e1")
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


def warm() -> None:
    """Compile the kernels with the signatures the reference uses (numba's cache then keeps the
    machine code): ``python -c "from harness import fastpath; fastpath.warm()"``, which the
    Makefile's install step runs, so the first ``make run`` does not spend ~15-25 s compiling.
    (Not ``python -m``: numba's cache is keyed by the module, and that one would be ``__main__``.)"""
    from harness import reference
    from harness.problem import Problem

    x = np.array([[0.0, -1.0, -800.0, -np.inf], [3.0, 2.0, 1.0, 0.0]])
    for dtype in (np.float64, np.float32):
        p = Problem(x.astype(dtype), np.array([0, 1]), reduction="sum")
        reference.evaluate(p, workers=1)
        for _ in reference.blocks(p, workers=1, reuse=True):
            pass
