"""exp(x_j - m) per row in triple-double, with the row sums: the fast pass's main kernel.

Its relative error bound ``EXP_REL`` (proven below) lies far below the 2^-106 that the
double-double view of the reference needs. The 2^(i/1024) table is built at import with mpmath
(200 bits).

Implementation: rows are spread over threads with ``prange``; each row is processed in chunks of
256 entries: pass 1 is a branch-free loop over the chunk (LLVM vectorizes it 4-wide with AVX2;
the table is a frozen global so its gathers cannot alias the stores), pass 2 applies the
special cases (the max, -inf, flags), the scaling by 2^n and the row sum. First compilation
takes ~15-25 s; the numba cache (``cache=True``) makes later imports cheap.

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
"""

from __future__ import annotations

import numpy as np
from numba import prange

from harness.fastpath.contract import (
    DROP_D,
    FLAG2_D,
    FLAG3_D,
    FLAG_D,
    MAX_COLS,
    as_f64_2d,
)
from harness.fastpath.error_free import (
    fast_two_sum,
    fma,
    from_bits,
    pow2,
    to_bits,
    two_prod,
    two_sum,
)
from harness.fastpath.jit import inlined, kernel

__all__ = ["exp_rows", "exp_table"]

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


@inlined
def _exp_core(s2, eh, el):
    """exp(s2 + eh + el) = 2^(N/1024) ... returns (e1, e2, e3, N): exp = 2^n (e1 + e2 + e3) with
    N = 1024 n + i, 0 <= i < 1024, e1 in [0.99, 2.01]; see the module docstring."""
    # Step 1: reduction
    y = s2 * _INV_L + _SHIFT
    Nf = y - _SHIFT
    N = to_bits(y) - _SHIFT_BITS  # = Nf as an integer (|N| < 2^51, same binade as the shifter)
    a = s2 - Nf * _L1
    p2h = Nf * _L2
    p2l = fma(Nf, _L2, -p2h)
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
    pl = fma(rh, Bl, pl)
    Yh, t = fast_two_sum(_C4H, ph)
    Yl = t + (pl + _C4L)
    ph, pl = two_prod(rh, Yh)
    pl = fma(rh, Yl, pl)
    Yh, t = fast_two_sum(_C3H, ph)
    Yl = t + (pl + _C3L)
    ph, pl = two_prod(rh, Yh)
    pl = fma(rh, Yl, pl)
    Yh, t = fast_two_sum(0.5, ph)
    Yl = t + pl
    q1h, q1l = two_prod(rh, Yh)
    q1l = fma(rh, Yl, q1l)
    qh, ql = two_prod(rh, q1h)
    ql = fma(rh, q1l, ql)
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
    zi = to_bits(z)
    step = 1 if (zerr > 0.0) == (z > 0.0) else -1
    zi = zi + step if (zerr != 0.0 and (zi & 1) == 0) else zi
    zo = from_bits(zi)
    e1 = s0 + zo
    t1 = s0 - e1
    g2, gl = two_sum(t1, z)
    w2 = gl + zerr
    e2, e3 = two_sum(g2, w2)
    return e1, e2, e3, N


@kernel(parallel=True)
def _exp_rows_kernel(x, lo, has_lo, k, o1, o2, o3, s, flag):
    # the parallel layer only spreads rows over threads: parfor lowering of the whole body
    # would add ~15 s of compile time
    for i in prange(x.shape[0]):
        # the padded input copies are arguments of _exp_row (not locals there): LLVM then
        # proves them disjoint from its local buffer with runtime checks and vectorizes
        xin = np.empty(_CHUNK, dtype=np.float64)
        lin = np.zeros(_CHUNK, dtype=np.float64)
        _exp_row(x, lo, has_lo, k, o1, o2, o3, s, flag, np.int64(i), xin, lin)


@kernel()
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
            buf[3, jj] = from_bits(N)
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
            N = to_bits(buf[3, jj])
            n = (N - (N & 1023)) >> 10
            f1 = buf[0, jj]
            f2 = buf[1, jj]
            f3 = buf[2, jj]
            if s2 < FLAG_D:
                # e_j < 2^-949.29: exact scaling by 2^(n - n/2), then one rounding by 2^(n/2)
                na = n >> 1
                sa = pow2(na)
                sb = pow2(n - na)
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
                sc = pow2(n)
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
    x = as_f64_2d(x, "x")
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
        lo_arr = as_f64_2d(lo, "lo")
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

