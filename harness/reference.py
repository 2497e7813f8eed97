"""The exact softmax cross-entropy of PyTorch's contract, and its gradient, correctly rounded.

Arithmetic is done in MPFR through gmpy2 (the library behind Zimmermann's accuracy tables and
the fast backend of mpmath); public results are returned as ``mpmath.mpf``. Every input float is
converted exactly, and the formulas never subtract nearly equal quantities:

* row statistics: m = max_j x_j, k = argmax, d_j = x_j - m computed *exactly* (the working
  precision of the subtraction is raised to cover both exponents), e_j = exp(d_j) <= 1,
  s = sum_{j != k} e_j (a correctly rounded sum, ``mpfr_sum``), S = 1 + s;
* -log p_c = (m - x_c) + log1p(s): both terms are >= 0, so a tiny loss keeps every digit
  (the textbook log(sum e^x) - x_c returns 0 for logits [200, 0] even at 256 bits);
* every value is a **head** plus a **tail** (:class:`_Value`): the head is the value at s = 0,
  built from the inputs by +, -, * only and exact whenever it is a dyadic number; the tail is a
  coefficient times log1p(s), e_j/S or -s/S, with a relative error of a few units of 2^-prec
  (the derivation is in :func:`_row`). So the target-class gradient p_t - 1 is the exact head
  -w_t plus the tail w_t e_t/S (or, at the argmax, head 0 and tail -s/S): no cancellation.

Ziv's strategy: a value is accepted when its rigorous bound (plus the double-double view's own
rounding) is below 2^-106 of it and the interval rounds to one value in each of float16,
bfloat16, float32 and float64; otherwise that row is recomputed at twice the precision, up to
MAX_BITS. A value still undecided there is a rounding boundary plus a tail far below it
(float16 [0x1.f42p+9, 0]: 1000.25 + e^-1000.25): it is decided exactly from the exact head and
the tail's sign (:func:`_sticky`), never by giving up. Rows of tied logits have rational
gradients and are computed in rationals, so exact zeros stay exact zeros (+0).

Range: MPFR runs with its whole exponent range (about 2^+-2^30 as gmpy2 builds it); terms below
it (float32 [0, -2e9]: e^-2e9) are carried in mpmath, whose exponents are unbounded, so the
public API returns every value with its 106 bits and its sign however small. The double-double
view (``Exact``) holds RN_float64 of each value plus a low part; below 2^-960 it is the
correctly rounded float64 with a sticky low part, which is all that rounding needs.

Speed: a fast first pass (:mod:`harness.fastpath`, numba) computes exp in triple-double with a
proven bound for whole row blocks; rows it cannot settle (bound too wide, special values,
smoothing, probability targets) take the MPFR path above. Problems are evaluated in row blocks
(:class:`Blocks`) in bounded memory.

Special values follow IEEE arithmetic in the same formulas, which reproduces PyTorch: a -inf
logit gives e_j = 0; a -inf target logit gives +inf; 0 * inf (a zero weight or a zero
probability target meeting a -inf logit) gives NaN; a row with NaN or +inf, or with every logit
-inf, gives NaN loss and a NaN gradient row (even when the row is ignored, because PyTorch's
log_softmax backward multiplies its NaN softmax by a zero upstream gradient). Rows whose
arithmetic meets an infinity elsewhere (an infinite probability target; a 'mean' whose kept
weights sum to 0) follow torch's own chain of operations in IEEE arithmetic (:func:`_row_ieee`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial

import gmpy2
import mpmath
import numpy as np
from gmpy2 import mpfr

from harness.formats import FORMATS
from harness.problem import Problem

#: Bump when the algorithm or the stored layout changes: invalidates cached references.
VERSION = 2  # 2: 106-bit narrow rows, head + tail values, the fast pass, torch IEEE rows
#: First working precision of the Ziv loop (bits).
START_BITS = 128
#: Precision cap. Past it a value is returned as computed and counted in ``Exact.unresolved``.
MAX_BITS = 1280
#: Correct bits every returned value carries (so fractional float64 ULP errors are meaningful).
GOOD_BITS = 106
#: Problems with fewer logits than this are evaluated in-process (a pool costs ~50 ms).
_PARALLEL_MIN = 40_000

_NAN = float("nan")


@dataclass
class Exact:
    """Reference values of one problem as double-doubles: value = hi + lo, hi = RN_float64(value).

    ``loss_hi``/``loss_lo`` have ``problem.output_shape``; ``grad_hi``/``grad_lo`` the logits'
    shape (None when not requested). ``bits`` is the largest working precision used.
    """

    loss_hi: np.ndarray
    loss_lo: np.ndarray
    grad_hi: np.ndarray | None = None
    grad_lo: np.ndarray | None = None
    bits: int = START_BITS
    unresolved: int = 0
    loss_mpfr: list = field(default_factory=list, repr=False)
    grad_mpfr: list | None = field(default=None, repr=False)
    #: Rigorous upper bounds on |value of record - true value| (float64, rounded up by at most
    #: one ulp): the loss's (output shape) and the gradient's (logits' shape).
    loss_bound: np.ndarray | None = field(default=None, repr=False)
    grad_bound: np.ndarray | None = field(default=None, repr=False)

    def pair(self, quantity: str) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) of the 'loss' or the 'grad'."""
        if quantity == "loss":
            return self.loss_hi, self.loss_lo
        if quantity == "grad":
            if self.grad_hi is None:
                raise ValueError("this reference was computed without the gradient")
            return self.grad_hi, self.grad_lo
        raise ValueError(f"quantity must be 'loss' or 'grad', not {quantity!r}")

    def rounded(self, quantity: str, dtype) -> np.ndarray:
        """The loss or gradient correctly rounded to ``dtype`` (float16, bfloat16, float32,
        float64), by :func:`harness.metrics.round_to_format` (the one round-to-format)."""
        from harness.metrics import round_to_format

        hi, lo = self.pair(quantity)
        fmt = FORMATS[np.dtype(dtype).name]
        return round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi))

    def rounded_loss(self, dtype) -> np.ndarray:
        """The loss correctly rounded to ``dtype``."""
        return self.rounded("loss", dtype)

    def rounded_grad(self, dtype) -> np.ndarray:
        """The gradient correctly rounded to ``dtype``."""
        return self.rounded("grad", dtype)


# -- MPFR contexts ---------------------------------------------------------------------------------


def _ctx(prec: int):
    """A context at ``prec`` bits with MPFR's whole exponent range, so that losses like
    e^-2e9 (float32 [0, -2e9]) and 1e308-weighted sums keep their value instead of flushing."""
    return gmpy2.context(gmpy2.get_context(), precision=prec, emin=gmpy2.get_emin_min(),
                         emax=gmpy2.get_emax_max(), subnormalize=False, trap_divzero=False,
                         trap_invalid=False, trap_overflow=False, trap_underflow=False)


# -- rounding stability (the acceptance test of the Ziv loop) --------------------------------------

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


# -- one row ---------------------------------------------------------------------------------------


@dataclass
class _Setup:
    """What every row needs besides its logits (picklable, sent once per worker task)."""

    C: int
    prec_in: int  # significand bits of the input format
    eps: float
    weight: list | None  # exact input floats
    wsum: object  # mpfr, exact sum of weights (for smoothing)
    denom: object  # mpfr exact denominator of the mean, or None for sum/none
    probability: bool
    ignore_index: int
    want_grad: bool
    keep: bool  # keep the MPFR gradient values (the public API), not only the double-doubles
    ieee: bool = False  # non-finite weights, or a zero-weight 'mean': torch's chain (_row_ieee)


def _exact_bits(x2d: np.ndarray, prec_in: int) -> np.ndarray:
    """Per row, the bits that make x_i - x_j exact for every pair of its finite entries."""
    fin = np.isfinite(x2d) & (x2d != 0)
    _, e = np.frexp(np.where(fin, np.abs(x2d), 1.0))
    hi = np.where(fin, e, -(10**6)).max(axis=1, initial=-(10**6))
    lo = np.where(fin, e, 10**6).min(axis=1, initial=10**6) - prec_in
    return np.where(hi > -(10**6), hi - lo + 4, 64)


#: Error multipliers (in units of u = 2^-prec) of the transcendental parts; derivation in _row.
_KT = 8


@dataclass
class _Value:
    """One value as head + tail. ``head`` is built from the inputs by +, -, * (and one division
    by the mean's denominator): exact when ``head_exact``. ``tail`` carries every exp/log1p and
    has a known sign; ``bound`` bounds |(head + tail) - true| for ``value`` = RN(head + tail)."""

    value: object
    bound: object
    head: object
    head_exact: bool
    tail: object
    tail_err: object
    tail_sign: int = 0  # the sign of a tail too small for MPFR's exponent range (tail == 0)


def _row(xs: list, k: int, exact_bits: int, target, su: _Setup, prec: int) -> tuple[_Value, list | None]:
    """Loss and gradient of one non-ignored row whose logits are finite or -inf (not all -inf)
    at working precision ``prec``; ``k`` is the index of the first maximum.

    Every value is written as head + tail (see :class:`_Value`): the head is the value at s = 0
    (every logit but the max at -inf), computed from the inputs at precision ``ph`` large enough
    to be exact whenever the head is a dyadic number; the tail is a (weight) * (L1, e_j/S or
    -s/S), so its relative error is a few u.

    Error analysis at precision p, u = 2^-p, every MPFR operation correctly rounded (|rel| <= u):
      d_j = x_j - m exact;  e_j = exp(d_j)(1 + δ), |δ| <= u;
      s = RN(Σ_{j≠k} e_j): |rel| <= 2.01u (positive terms);  S = RN(1 + s): |rel| <= 3.01u;
      L1 = RN(log1p(s)): log1p has condition number s / ((1+s) log1p s) <= 1, so |rel| <= 3.02u;
      e_j/S: 5.02u;  s/S: 6.03u;  times the exact coefficient and rounding: <= 7.1u.
    So |tail error| <= 8u |tail| (_KT), and the value RN(head + tail) adds u |value|. An inexact
    head (ε/C, a mean's 1/denominator) is computed at ph > p + 64 bits from at most C + 3 terms
    by correctly rounded operations: its error is <= 4 (C + 3) 2^-ph Σ|terms| <= u/2 Σ|terms|."""
    C = su.C
    ph = prec + exact_bits + 192  # holds products of three input floats and x_j - m exactly
    u = mpfr(2) ** -prec
    with _ctx(max(prec, exact_bits)):
        m = mpfr(xs[k])
        d = [mpfr(v) - m for v in xs]  # exact: the precision spans both exponents
    with _ctx(prec):
        e = [gmpy2.exp(v) for v in d]  # e_k = 1 exactly
        s = gmpy2.fsum(e[:k] + e[k + 1 :])
        S = 1 + s
        L1 = gmpy2.log1p(s)
        pS = [ej / S for ej in e]  # p_j for j != k
        pk_tail = -s / S  # p_k - 1
    deep = _deep(d, e, k, s, prec)  # terms below MPFR's exponent range (e^-7.4e8), or None
    eps = su.eps
    w = su.weight
    inv = None if su.denom is None else su.denom

    with _ctx(ph) as hctx:
        hctx.inexact = False
        E = mpfr(eps)
        one_m = 1 - E
        eC = E / C
        if su.probability:
            tl = target.tolist()
            tp = [one_m * tc + eC for tc in tl] if eps else [mpfr(tc) for tc in tl]
            q = [tc * wc for tc, wc in zip(tp, w, strict=False)] if w is not None else tp
            Q = gmpy2.fsum(q)
            coef = Q  # the tail coefficient of both loss and gradient
            terms = [qc * (-dc) for qc, dc in zip(q, d, strict=False)]
            lhead = gmpy2.fsum(terms)
            lmag = float(gmpy2.fsum(abs(v) for v in terms)) if terms else 0.0
        else:
            t = int(target)
            wt = mpfr(w[t]) if w is not None else mpfr(1)
            coef = one_m * wt + eC * su.wsum if eps else wt  # a = (1-ε) w_t + (ε/C) W
            terms = [one_m * wt * (-d[t])]
            if eps:
                terms.append(eC * gmpy2.fsum([(mpfr(wc) if w is not None else 1) * (-dc)
                                               for wc, dc in zip(w or [1] * C, d, strict=False)]))
            lhead = gmpy2.fsum(terms)
            lmag = float(gmpy2.fsum(abs(v) for v in terms))
        head_exact = not hctx.inexact
    with _ctx(prec):
        ltail = coef * L1
        lt_err = _KT * u * abs(ltail)
        lval = lhead + ltail
        lbound = u * abs(lval) + lt_err + (0 if head_exact else u / 2 * lmag)
    loss = _Value(lval, lbound, lhead, head_exact, ltail, lt_err)
    if deep is not None and deep.s is not None:
        with mpmath.workprec(prec + 16):
            loss = _deep_value(loss, _mpf(coef) * deep.s, prec)
    if not su.want_grad:
        return loss, None

    # ---- gradient: g_j = σ [coef p_j - c_j] with c_j = q_j (probabilities) or
    # (ε/C) w_j + (1-ε) w_t [j = t] (indices); head_j = σ [coef [j = k] - c_j],
    # tail_j = σ coef (e_j/S, or -s/S at j = k).
    # Each head is one exact numerator over C * denominator, divided once, so its inexact flag
    # says exactly whether it is a dyadic number (a tie can only sit on a dyadic head).
    grads = []
    heads, hexacts, hmags = [], [], []
    with _ctx(ph) as hctx:
        Cd = mpfr(C) if inv is None else C * inv  # exact
        hctx.inexact = False
        if su.probability:
            num = [(mpfr(w[j]) if w is not None else 1) * ((1 - E) * C * mpfr(tl[j]) + E) for j in range(C)]
            numk = gmpy2.fsum([v for j, v in enumerate(num) if j != k])
            mag = [abs(v) for v in num]
            magk = gmpy2.fsum([v for j, v in enumerate(mag) if j != k])
        else:
            wl = [mpfr(v) for v in w] if w is not None else [mpfr(1)] * C
            num = [E * wl[j] for j in range(C)]
            num[t] = num[t] + one_m * wt * C
            numk = one_m * wt * C * (k != t) + E * (su.wsum - wl[k])
            mag = [abs(v) for v in num]
            magk = abs(one_m * wt * C) + abs(E) * (gmpy2.fsum(map(abs, wl)) + abs(wl[k]))
        num_exact = not hctx.inexact  # the numerators (sums and products of input floats)
        for j in range(C):
            hctx.inexact = False
            hv = (numk if j == k else -num[j]) / Cd
            heads.append(hv)
            hexacts.append(num_exact and not hctx.inexact)
            # the numerators' roundings (<= 2 2^-ph of their terms' magnitudes, fsum included)
            # and the division's (2^-ph |hv|)
            hmags.append(abs(hv) + 2 * (magk if j == k else mag[j]) / abs(Cd))
    with _ctx(prec):
        scale = coef if inv is None else coef / inv
        uh = mpfr(2) ** -ph
        for j in range(C):
            tail = scale * (pk_tail if j == k else pS[j])
            terr = _KT * u * abs(tail)
            val = heads[j] + tail
            b = u * abs(val) + terr
            if not hexacts[j]:
                b += 2 * uh * hmags[j]
            grads.append(_Value(val, b, heads[j], hexacts[j], tail, terr))
    if deep is not None:
        with mpmath.workprec(prec + 16):
            sc = _mpf(scale) / _mpf(S)
            for j, ej in deep.e.items():
                grads[j] = _deep_value(grads[j], sc * ej, prec)
            if deep.s is not None:
                grads[k] = _deep_value(grads[k], -sc * deep.s, prec)
    return loss, grads


@dataclass
class _Deep:
    e: dict  # j -> e_j as mpmath.mpf, for the terms that MPFR flushed to 0
    s: object  # s as mpmath.mpf when s itself is below 2^-(2^29) (then S = 1, L1 = s), or None


#: MPFR (as gmpy2 builds it) holds exponents down to about -2^30; an s below 2^-(2^29) is
#: recomputed in mpmath, whose exponents are unbounded.
_DEEP_S = mpfr(2) ** -(2**29)


def _signed_man_exp(v: mpmath.mpf) -> tuple[int, int]:
    """v = man * 2^exp exactly (mpf.man is the unsigned mantissa; the sign is kept apart)."""
    sign, man, exp, _ = v._mpf_
    return (-int(man) if sign else int(man)), int(exp)


def _mpf(v) -> mpmath.mpf:
    if isinstance(v, mpmath.mpf):
        return v
    with mpmath.workprec(max(v.precision, 53) + 8):
        return _to_mpf(v)


def _deep(d: list, e: list, k: int, s, prec: int) -> _Deep | None:
    """Terms e_j = exp(d_j) that underflowed MPFR's range, recomputed in mpmath (float32
    [0, -2e9] has loss e^-2e9 = 1.56e-868588964; float64 [1e30, next(1e30)] about
    7.7e-61121514589643). Their share of s is negligible unless s is itself below _DEEP_S."""
    idx = [j for j, (dj, ej) in enumerate(zip(d, e, strict=False))
           if j != k and ej == 0 and gmpy2.is_finite(dj)]
    if not idx:
        return None
    with mpmath.workprec(prec + 16):
        ed = {j: mpmath.exp(_mpf(d[j])) for j in idx}
        s_mp = None
        if s < _DEEP_S:
            s_mp = mpmath.fsum(list(ed.values()) + [_mpf(v) for j, v in enumerate(e) if j != k and v != 0])
    return _Deep(ed, s_mp)


def _deep_value(v: _Value, tail: mpmath.mpf, prec: int) -> _Value:
    """A value whose tail is below MPFR's range: the tail itself (mpmath) when the head is 0,
    else the head with the tail's sign kept for :func:`_sticky`. The tail is a product of at most
    four correctly rounded factors and an mpmath exp (< 2 ulp): relative error < 16 u."""
    if tail == 0:
        return v
    sign = 1 if tail > 0 else -1
    if v.head == 0:
        with mpmath.workprec(prec):
            b = abs(tail) * mpmath.mpf(2) ** (4 - prec)
        return _Value(tail, b, v.head, v.head_exact, mpfr(0), mpfr(0), sign)
    return _Value(v.head if v.head_exact else v.value, v.bound, v.head, v.head_exact, mpfr(0), mpfr(0), sign)


def _tied(xs: list, k: int) -> bool:
    """Every finite logit equals the max: e_j is 0 or 1, so the gradient is rational."""
    m = xs[k]
    return all(v == m or v == -math.inf for v in xs)


def _grad_rational(xs: list, k: int, target, su: _Setup, prec: int) -> list:
    """The gradient of a tied row exactly, in rationals (p_j = [x_j = m] / #ties), rounded once
    to ``prec`` bits: exact zeros stay exact zeros (label smoothing ε = 1 on equal logits gives
    ε/C w_j - p_j (ε/C) W = 0, which MPFR at any precision only brackets)."""
    C, m = su.C, xs[k]
    tie = [v == m for v in xs]
    S = sum(tie)
    eps = Fraction(su.eps)
    w = [Fraction(v) for v in su.weight] if su.weight is not None else [Fraction(1)] * C
    if su.probability:
        q = [((1 - eps) * Fraction(tc) + eps / C) * wc for tc, wc in zip(target.tolist(), w, strict=False)]
        coef, cs = sum(q), q
    else:
        t = int(target)
        coef = (1 - eps) * w[t] + eps / C * sum(w)
        cs = [eps / C * wc for wc in w]
        cs[t] += (1 - eps) * w[t]
    sig = Fraction(1) if su.denom is None else 1 / Fraction(gmpy2.mpq(su.denom))
    out = []
    with _ctx(prec) as ctx:
        u = mpfr(2) ** -prec
        for j in range(C):
            g = sig * (coef * Fraction(int(tie[j]), S) - cs[j])
            ctx.inexact = False
            v = mpfr(gmpy2.mpq(g.numerator, g.denominator))
            b = u * abs(v) if ctx.inexact else mpfr(0)
            out.append(_Value(v, b, v, not ctx.inexact, mpfr(0), mpfr(0)))
    return out


def _row_ieee(xs: list, k: int, target, su: _Setup, prec: int) -> tuple[_Value, list | None]:
    """Rows whose arithmetic meets an infinity outside the logits: an infinite probability
    target, a non-finite class weight, or a 'mean' whose kept weights sum to 0. PyTorch's own chain of operations is
    evaluated in IEEE arithmetic (MPFR follows IEEE for inf and NaN), so its inf/NaN pattern is
    reproduced: loss Σ_c q_c (L1 - d_c); gradient g_j = gi_j - p_j Σ_c gi_c with gi the
    gradient with respect to log p (nll backward divides by the total weight, +0 here)."""
    C = su.C
    with _ctx(max(prec, 4 * MAX_BITS)):
        m = mpfr(xs[k])
        d = [mpfr(v) - m for v in xs]
        e = [gmpy2.exp(v) for v in d]
        # Terms below MPFR's range are positive, and IEEE's inf * e must see that (inf, not
        # inf * 0 = NaN): they take the smallest positive MPFR value in the IEEE arithmetic, and
        # a finite gradient entry made of one alone is recomputed in mpmath below.
        deep = [j for j in range(C) if j != k and e[j] == 0 and gmpy2.is_finite(d[j])]
        if deep:
            least = gmpy2.next_above(mpfr(0))
            for j in deep:
                e[j] = least
        s = gmpy2.fsum(e[:k] + e[k + 1 :])
        S, L1 = 1 + s, gmpy2.log1p(s)
        E = mpfr(su.eps)
        w = [mpfr(v) for v in su.weight] if su.weight is not None else [mpfr(1)] * C
        den = mpfr(1) if su.denom is None else su.denom
        if su.probability:
            q = [((1 - E) * mpfr(tc) + E / C if su.eps else mpfr(tc)) * wc
                 for tc, wc in zip(target.tolist(), w, strict=False)]
            lval = gmpy2.fsum([qc * (L1 - dc) for qc, dc in zip(q, d, strict=False)])
            gi = [-(qc / den) for qc in q]
        else:
            # torch keeps the nll part and the smoothing part apart until the end:
            # (1-ε) (Σ nll / W) + (ε/C) (Σ smooth / W); see _reduce_torch.
            t = int(target)
            nll = w[t] * (L1 - d[t])
            smooth = gmpy2.fsum([wc * (L1 - dc) for wc, dc in zip(w, d, strict=False)]) if su.eps else mpfr(0)
            gi = [mpfr(0)] * C
            if su.eps:
                gi = [-wc * ((E / C) / den) for wc in w]
            gi[t] = gi[t] - w[t] * ((1 - E) / den)
        sg = gmpy2.fsum(gi) if all(gmpy2.is_finite(v) for v in gi) else sum(gi[1:], gi[0])
        grads = [gij - (ej / S) * sg for gij, ej in zip(gi, e, strict=False)]
        mags = [abs(gij) + abs((ej / S) * sg) for gij, ej in zip(gi, e, strict=False)]
        for j in deep:
            grads[j] = gi[j] - e[j] * (sg / S)  # e_j / S would underflow to 0: inf * 0 = NaN
            if gmpy2.is_finite(grads[j]) and gi[j] == 0 and sg != 0:
                with mpmath.workprec(prec + 16):
                    grads[j] = -(mpmath.exp(_mpf(d[j])) / _mpf(S)) * _mpf(sg)
                mags[j] = mpfr(0)
        if not su.probability:
            lval = (1 - E) * nll + E / C * smooth if su.eps else nll
    zero = mpfr(0)
    tiny = mpfr(2) ** (16 - max(prec, 4 * MAX_BITS))  # a few roundings at that precision
    if su.probability:
        loss = _Value(lval, zero if not gmpy2.is_finite(lval) else abs(lval) * tiny, lval, False, zero, zero)
    else:  # the two parts travel in head and tail, for _reduce_torch
        loss = _Value(lval, zero if not gmpy2.is_finite(lval) else abs(lval) * tiny, nll, False, smooth, zero)
    if not su.want_grad:
        return loss, None
    return loss, [_Value(g, zero if not gmpy2.is_finite(g) else mg * tiny, g, False, zero, zero)
                  for g, mg in zip(grads, mags, strict=False)]


def _sticky(v: _Value, prec: int) -> _Value | None:
    """Decide a value that sits on a rounding boundary to within 2^-prec: when its head is an
    exact dyadic number and its tail is nonzero with a known sign, the true value is head plus
    a tail far below the head's last bit. Return head ± 2^(e_head - P), P two bits past the
    head's precision: it lies on the tail's side of head and strictly nearer head than any
    other dyadic boundary of <= 54 bits, so it rounds to every format exactly as the true value
    does (float16 [0x1.f42p+9, 0], target 1: 1000.25 + e^-1000.25 rounds up to 1000.5)."""
    H, T = v.head, v.tail
    if not v.head_exact or not isinstance(H, mpfr) or not gmpy2.is_finite(H) or H == 0:
        return None
    if isinstance(T, mpfr) and T != 0:
        if not abs(T) > v.tail_err:
            return None  # the tail's sign is not known
        sign = 1 if T > 0 else -1
    elif v.tail_sign:
        sign = v.tail_sign  # a tail below MPFR's range (e^-1e9): known sign, negligible size
    else:
        return None
    man, _ = H.as_mantissa_exp()
    bits = int(man).bit_length() - gmpy2.bit_scan1(gmpy2.mpz(abs(int(man))))  # significant bits
    P = max(bits, GOOD_BITS + 2) + 2
    eh = gmpy2.get_exp(H)  # H = f 2^eh, 1/2 <= |f| < 1
    with _ctx(P + 4):
        step = gmpy2.mul_2exp(mpfr(1), eh - P)
        if isinstance(T, mpfr) and not abs(T) + v.tail_err < step:
            return None  # the tail is not below the head's grid: not a boundary case
        z = H + sign * step  # exact at P + 4 bits
        return _Value(z, 2 * step, H, True, T, v.tail_err, v.tail_sign)


def _plus_zero(v, bound):
    """An exact zero is +0: the true value 0 has no sign (IEEE's exact zero sums are +0 too)."""
    return mpfr(0) if isinstance(v, mpfr) and v == 0 and bound == 0 else v


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


@dataclass
class _Block:
    """What a block of rows sends back: per-row loss values, gradient views and bounds."""

    losses: list  # _Value per row (None for ignored rows)
    g_hi: np.ndarray | None
    g_lo: np.ndarray | None
    g_bound: np.ndarray | None
    g_mpfr: list | None  # per row, list of mpfr (only when su.keep)
    bits: int
    unresolved: int
    bad: np.ndarray  # rows with NaN loss/gradient

    @staticmethod
    def concat(parts: list[_Block], C: int) -> _Block:
        def cat(name):
            arrs = [getattr(p, name) for p in parts]
            return None if arrs[0] is None else np.concatenate(arrs) if arrs else np.empty((0, C))
        mp = None if parts[0].g_mpfr is None else [r for p in parts for r in p.g_mpfr]
        return _Block([v for p in parts for v in p.losses], cat("g_hi"), cat("g_lo"), cat("g_bound"), mp,
                      max(p.bits for p in parts), sum(p.unresolved for p in parts), cat("bad"))


def _rows(x2d: np.ndarray, t, su: _Setup, start_prec: int) -> _Block:
    """Evaluate a block of rows; rows whose loss or gradient fails the Ziv test are redone at
    twice the precision; at MAX_BITS boundary cases are decided by :func:`_sticky`."""
    M, C = x2d.shape
    zero = mpfr(0)
    losses: list = [None] * M
    want = su.want_grad
    g_hi = np.zeros((M, C)) if want else None
    g_lo = np.zeros((M, C)) if want else None
    g_b = np.zeros((M, C)) if want else None
    g_mp = [None] * M if (want and su.keep) else None
    # Rows with NaN or +inf, or all -inf: NaN loss (0 when ignored) and a NaN gradient row.
    bad = np.isnan(x2d).any(axis=1) | np.isposinf(x2d).any(axis=1) | np.isneginf(x2d).all(axis=1)
    ignored = np.zeros(M, bool) if su.probability else (t == su.ignore_index)
    for i in np.flatnonzero(bad & ~ignored):
        losses[i] = _Value(mpfr(_NAN), zero, mpfr(_NAN), False, zero, zero)
    if want:
        g_hi[bad] = _NAN
        if g_mp is not None:
            for i in np.flatnonzero(bad):
                g_mp[i] = [mpfr(_NAN)] * C
            for i in np.flatnonzero(ignored & ~bad):
                g_mp[i] = [zero] * C
    todo = np.flatnonzero(~bad & ~ignored)
    kmax = np.argmax(np.where(np.isnan(x2d), -np.inf, x2d), axis=1)
    ebits = _exact_bits(x2d, su.prec_in)
    rows = x2d.tolist()
    ieee = su.ieee and not su.probability
    if ieee and su.eps and su.weight is not None and not all(map(math.isfinite, su.weight)):
        # torch's smoothing backward gives ignored rows -0 * w_j: NaN for a non-finite weight.
        for i in np.flatnonzero(ignored & ~bad):
            if want:
                g_hi[i] = _NAN
                if g_mp is not None:
                    g_mp[i] = [mpfr(_NAN)] * C
    if su.probability:
        nonfinite_t = ~np.isfinite(np.asarray(t, dtype=np.float64)).all(axis=1)
    prec, bits, unresolved = start_prec, start_prec, 0
    while todo.size:
        bits = prec
        redo = []
        for i in todo.tolist():
            k = int(kmax[i])
            if ieee or (su.probability and (nonfinite_t[i] or su.ieee)):
                loss, grads = _row_ieee(rows[i], k, t[i], su, prec)
            else:
                loss, grads = _row(rows[i], k, int(ebits[i]), t[i], su, prec)
                if grads is not None and _tied(rows[i], k):
                    grads = _grad_rational(rows[i], k, t[i], su, prec)
            vals = [loss] + (grads or [])
            hi, lo, b, ok = _values_stable(vals)
            if not ok.all() and prec >= MAX_BITS:
                for j in np.flatnonzero(~ok):
                    z = _sticky(vals[j], prec)
                    if z is not None:
                        vals[j] = z
                        ok[j] = True
                if not ok.all():
                    unresolved += 1
                hi, lo, b, _ = _values_stable(vals)
                ok[:] = True
            if not ok.all():
                redo.append(i)
                continue
            vals = [_Value(_plus_zero(v.value, v.bound), *dataclasses.astuple(v)[1:]) for v in vals]
            losses[i] = vals[0]
            if want:
                g_hi[i], g_lo[i], g_b[i] = hi[1:], lo[1:], b[1:]
                if g_mp is not None:
                    g_mp[i] = [v.value for v in vals[1:]]
        todo = np.array(redo, dtype=np.int64)
        prec = min(2 * prec, MAX_BITS)
    return _Block(losses, g_hi, g_lo, g_b, g_mp, bits, unresolved, bad)


def _setup(problem: Problem, want_grad: bool, keep: bool = False) -> _Setup:
    C = problem.num_classes
    fmt = problem.format
    w = None if problem.weight is None else problem.weight.astype(np.float64).tolist()
    # Exact sums of input floats: 4400 bits span float64's whole exponent range (and the
    # counts, < 2^63); the products count * w are formed in MPFR, never as Python floats.
    with _ctx(4400):
        wsum = gmpy2.fsum([mpfr(v) for v in w]) if w is not None and all(map(math.isfinite, w)) else (
            mpfr(C) if w is None else mpfr(_NAN))
        denom = None
        if problem.reduction == "mean":
            if problem.probability_target:
                denom = mpfr(problem.num_samples)
            else:
                _, t = problem.rows()
                kept = t[t != problem.ignore_index]
                if w is None:
                    denom = mpfr(int(kept.size))
                else:
                    counts = np.bincount(kept, minlength=C)
                    denom = gmpy2.fsum([mpfr(wc) * int(n) for n, wc in zip(counts.tolist(), w, strict=False) if n])
                    denom = denom + 0  # an exact 0 sum is +0 (IEEE round-to-nearest)
    return _Setup(
        C=C,
        prec_in=fmt.precision,
        eps=problem.label_smoothing,
        weight=w,
        wsum=wsum,
        denom=denom,
        probability=problem.probability_target,
        ignore_index=problem.ignore_index,
        want_grad=want_grad,
        keep=keep,
        ieee=(w is not None and not all(map(math.isfinite, w)))
        or (denom is not None and denom == 0 and not problem.probability_target),
    )


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool. fork is fastest, but forking a process in which JAX or torch already
    started threads can deadlock; then the workers come from a clean forkserver instead."""
    import multiprocessing as mp
    import sys
    import threading

    # numba's fast pass starts OpenMP/TBB worker threads too: a forked child then dies
    # (BrokenProcessPool), so it counts like the others.
    # So does a pool started from a thread while other threads run (the sweeps drive the
    # reference from a thread while the main one calls the implementations).
    threaded = any(m in sys.modules for m in ("jax", "torch", "cupy", "harness.fastpath"))
    threaded = threaded or threading.active_count() > 1
    method = "forkserver" if threaded or sys.platform != "linux" else "fork"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))


def _chunks(M: int, workers: int) -> list[slice]:
    per = max(1, -(-M // (workers * 4)))
    return [slice(i, min(M, i + per)) for i in range(0, M, per)]


# -- the fast first pass (CRlibm's two phases: a quick proven pass, MPFR where it cannot decide) ---

#: Set XENT_REFERENCE_FAST=0 to force the MPFR path everywhere (for comparisons and debugging).
FAST = os.environ.get("XENT_REFERENCE_FAST", "1") != "0"


def _fast_eligible(xb: np.ndarray, tb, su: _Setup) -> np.ndarray:
    """Rows the fast pass handles: class-index targets without label smoothing, finite or -inf
    logits (not all -inf), not ignored, and a finite reduction scale. Everything else (special
    values, smoothing, probability targets, zero-weight means) takes the MPFR path."""
    M = xb.shape[0]
    if not FAST or su.keep or su.probability or su.eps or M == 0:
        return np.zeros(M, bool)
    if su.ieee:
        return np.zeros(M, bool)
    ok = np.isfinite(xb).all(axis=1)  # the common case, in one pass
    some = np.flatnonzero(~ok)
    if some.size:  # -inf is fine unless the whole row is -inf; NaN and +inf are not
        xs = xb[some]
        ok[some] = ~(np.isnan(xs).any(axis=1) | np.isposinf(xs).any(axis=1) | np.isneginf(xs).all(axis=1))
    return ok & (tb != su.ignore_index)


def _triple(v) -> tuple[float, float, float]:
    """An MPFR value as three non-overlapping doubles (error <= 2^-159 relative)."""
    with _ctx(v.precision + 64):
        a = float(v)
        r = v - a
        b = float(r)
        c = float(r - b)
    return a, b, c


def _deep_sums(xb: np.ndarray, k: np.ndarray, s3: np.ndarray, flag: np.ndarray) -> dict:
    """s for rows whose sum is so small (< 2^-900) that the first pass's absolute error floor
    (SUM_ABS per flagged term) could matter: a second pass with the max masked out gives
    s' = 1 + Σ_{j ∉ {k, k2}} e^{x_j - x_k2} to full relative precision, and s = e^{-gap} s'
    with gap = x_k - x_k2 (one MPFR exp per row). Returns {row: (s, bound) or None (MPFR)}."""
    from harness import fastpath

    approx = s3[:, 0]
    rows = np.flatnonzero((approx < 2.0**-900) & (flag != 0).any(axis=1))
    out: dict = {}
    if not rows.size:
        return out
    x2 = xb[rows].copy()
    x2[np.arange(rows.size), k[rows]] = -np.inf
    has = np.isfinite(x2).any(axis=1)
    for r in rows[~has].tolist():
        out[r] = (mpfr(0), mpfr(0))  # every other logit is -inf: s = 0 exactly
    rows, x2 = rows[has], x2[has]
    if not rows.size:
        return out
    k2 = np.argmax(x2, axis=1).astype(np.int64)
    _, _, _, t3, fl2, _ = fastpath.exp_rows(x2, k2)
    for j, r in enumerate(rows.tolist()):
        with _ctx(4400):
            gap = mpfr(xb[r, k[r]]) - mpfr(xb[r, k2[j]])  # exact
        if gap > 7e8:
            out[r] = None  # e^-gap is below MPFR's range: the MPFR path (with mpmath) does it
            continue
        with _ctx(200):
            eg = gmpy2.exp(-gap)  # rel. error 2^-200
            sp = 1 + (mpfr(t3[j, 0]) + mpfr(t3[j, 1]) + mpfr(t3[j, 2]))
            sv = eg * sp
            err = sv * (fastpath.SUM_REL + 2.0**-190) + eg * int(np.count_nonzero(fl2[j])) * fastpath.SUM_ABS
        out[r] = (sv, err)
    return out


def _fast_block(xb: np.ndarray, tb: np.ndarray, su: _Setup, bufs: dict | None = None):
    """The fast pass on eligible rows: exp in triple-double for the whole block
    (:mod:`harness.fastpath`, relative error <= EXP_REL), the sum s with its bound, then per
    row in MPFR: L1 = log1p(s), the loss as exact head + tail, the factor f = σ w_t / S, and
    the target entry; the other entries are f e_j (p_j for j != t: no cancellation).

    Returns (losses, g_hi, g_lo, g_bound, accepted): a row is accepted when its loss and every
    gradient entry pass the same Ziv test as the MPFR path (_round_stable with the proven bounds);
    the others are redone in MPFR by the caller."""
    from harness import fastpath

    M, C = xb.shape
    xb = np.ascontiguousarray(xb, dtype=np.float64)
    k = np.argmax(xb, axis=1).astype(np.int64)
    # Reused buffers: fresh multi-GB outputs cost more in first-touch page faults than the
    # arithmetic does.
    if bufs is not None and bufs.get("shape") != (M, C):
        reuse = bufs.get("reuse", False)
        bufs.clear()
        bufs.update(reuse=reuse)
        bufs.update(shape=(M, C), out=(np.empty((M, C)), np.empty((M, C)), np.empty((M, C)),
                                       np.empty((M, C), np.uint8)),
                    views=(np.empty((M, C)), np.empty((M, C)), np.empty((M, C))) if bufs.get("reuse") else None)
    out = bufs["out"] if bufs is not None else None
    e1, e2, e3, s3, flag, _ = fastpath.exp_rows(xb, k, out=out)
    prec = START_BITS
    u = mpfr(2) ** -prec
    rel = fastpath.SUM_REL
    f = np.zeros((M, 3))
    losses: list = [None] * M
    accepted = np.ones(M, bool)
    targets: list = [None] * M
    w = su.weight
    with _ctx(prec):
        deep_s = _deep_sums(xb, k, s3, flag)
        for i in range(M):
            t, ki = int(tb[i]), int(k[i])
            with _ctx(200):
                if i in deep_s:
                    if deep_s[i] is None:
                        accepted[i] = False
                        s, s_err = mpfr(0), mpfr(0)
                    else:
                        s, s_err = deep_s[i]
                else:
                    s = mpfr(s3[i, 0]) + mpfr(s3[i, 1]) + mpfr(s3[i, 2])  # exact at 200 bits
                    s_err = s * rel + int(np.count_nonzero(flag[i])) * mpfr(fastpath.SUM_ABS)
                S = 1 + s
                wt = mpfr(w[t]) if w is not None else mpfr(1)
            L1 = gmpy2.log1p(s)
            # log1p's condition number is <= 1: |ΔL1| <= |Δs| / (1 + s) <= |Δs|.
            with _ctx(4400) as hctx:
                hctx.inexact = False
                head = wt * (-mpfr(xb[i, t]) + mpfr(xb[i, ki]))  # w_t (m - x_t): exact
                exact_head = not hctx.inexact
            tail = wt * L1
            terr = abs(wt) * (s_err + 2 * u * L1)
            val = head + tail
            losses[i] = _Value(val, u * abs(val) + terr, head, exact_head, tail, terr)
            inv = None if su.denom is None else su.denom
            with _ctx(200):
                fv = wt / S if inv is None else wt / (S * inv)
                f[i] = _triple(fv)
                # the target entry as head + tail (as in _row): t = k: -f s; else -σ w_t + f e_t
                if t == ki:
                    gh, gt = mpfr(0), -fv * s
                    gerr = abs(fv) * s_err * 2
                else:
                    et = mpfr(e1[i, t]) + mpfr(e2[i, t]) + mpfr(e3[i, t])
                    gh = -wt if inv is None else -wt / inv
                    gt = fv * et
                    gerr = abs(gt) * (fastpath.EXP_REL + 2 * rel)
                    if flag[i, t] == 1:  # e_t < 2^-949: the triple's absolute error FLAG1_ABS
                        gerr += abs(fv) * fastpath.FLAG1_ABS
                    elif flag[i, t] >= 2:  # not stored: leave the row to MPFR
                        accepted[i] = False
            with _ctx(prec):
                gv = gh + gt
            targets[i] = _Value(gv, u * abs(gv) + gerr + (abs(gh) * 2.0**-190 if inv is not None else 0),
                                gh, inv is None, gt, gerr)
    views = bufs.get("views") if bufs is not None else None
    if views is not None:
        g_hi, g_lo, g_b = fastpath.scale_rows(f, e1, e2, e3, out_hi=views[0], out_lo=views[1],
                                              out_bound=views[2])
    else:
        g_hi, g_lo, g_b = fastpath.scale_rows(f, e1, e2, e3)
    # f carries S's relative error (<= SUM_REL) and its own 2^-159; scale_rows bounds the rest.
    g_b += np.abs(g_hi) * (rel + 2.0**-150)
    accepted &= fastpath.stable_rows(g_hi, g_lo, g_b, e1, flag, f[:, 0], tb, lo_lim=_DD_MIN,
                                     hi_lim=_DD_MAX, good_bits=GOOD_BITS)
    # the target entries, and the losses (in MPFR, one of each per row)
    for i in range(M):
        t = int(tb[i])
        hi, lo, b, okv = _values_stable([losses[i], targets[i]])
        g_hi[i, t], g_lo[i, t], g_b[i, t] = hi[1], lo[1], b[1]
        accepted[i] &= bool(okv.all())
    return losses, g_hi, g_lo, g_b, accepted


@dataclass
class GradBlock:
    """The reference gradient of consecutive rows ``rows`` of ``problem.rows()``, (r, C) arrays:
    double-double view (hi = RN_float64(v), lo) and a rigorous bound on |hi + lo - v|."""

    rows: slice
    hi: np.ndarray
    lo: np.ndarray
    bound: np.ndarray


#: Logits per block of :class:`Blocks` (a block's working arrays are a few times this in bytes).
BLOCK_LOGITS = 1 << 22


class Blocks:
    """Evaluate one problem in row blocks, in memory bounded by the block size whatever N*C is
    (an 8192 x 128256 language-model batch has 1.05e9 logits; its float64 gradient views would
    take 17 GB). Iterate to get :class:`GradBlock` s in row order; then :meth:`loss` gives the
    loss (an :class:`Exact` without gradient). ``evaluate`` is this, concatenated."""

    def __init__(self, problem: Problem, *, grad: bool = True, workers: int | None = None,
                 keep_mpfr: bool = False, block_logits: int = BLOCK_LOGITS, reuse: bool = False):
        self.problem = problem
        self.grad = grad
        self.workers = workers or os.cpu_count() or 1
        self.su = _setup(problem, grad, keep_mpfr)
        self.C = problem.num_classes
        M = problem.num_samples if problem.logits.ndim > 1 else 1
        per = max(1, block_logits // max(self.C, 1))
        self.slices = [slice(i, min(M, i + per)) for i in range(0, M, per)] or [slice(0, 0)]
        self._losses: list = []
        self._bits, self._unresolved, self._done = START_BITS, 0, False
        self.grad_mpfr: list = []
        # reuse: the GradBlock arrays are buffers overwritten by the next block (a consumer that
        # judges block by block saves the page faults of fresh multi-GB arrays)
        self._bufs: dict = {"reuse": reuse}
        #: Rows settled by the fast pass, and rows it handed to MPFR (its bound was too wide).
        self.fast_rows = 0
        self.fallback = 0

    def _block(self, rows: slice, su: _Setup, prec: int) -> _Block:
        x2d, t = self.problem.rows()
        xb = np.asarray(x2d[rows], dtype=np.float64)  # exact for every supported format (a copy)
        tb = t[rows]
        M, C = xb.shape
        fast = _fast_eligible(xb, tb, su) if prec == START_BITS else np.zeros(M, bool)
        done = None
        if fast.all() and M:
            fl, fh, flo, fb, acc = _fast_block(xb, tb, su, self._bufs)
            self.fast_rows += int(acc.sum())
            self.fallback += int((~acc).sum())
            if acc.all():  # the common case: no merging
                return _Block(fl, fh, flo, fb, None, START_BITS, 0, np.zeros(M, bool))
            done = np.flatnonzero(acc)
            fast = acc.copy()
        elif fast.any():
            idx = np.flatnonzero(fast)
            fl, fh, flo, fb, acc = _fast_block(xb[idx], tb[idx], su, self._bufs)
            done = idx[acc]
            self.fallback += int((~acc).sum())
            self.fast_rows += int(acc.sum())
            fast[:] = False
            fast[done] = True
        rest = np.flatnonzero(~fast)
        if rest.size == M:
            part = self._mpfr(xb, tb, su, prec)
        else:
            part = self._mpfr(xb[rest], tb[rest], su, prec) if rest.size else None
        if done is None:
            return part
        # Merge the fast rows and the MPFR rows back into row order.
        losses: list = [None] * M
        want = su.want_grad
        g_hi = np.zeros((M, C)) if want else None
        g_lo = np.zeros((M, C)) if want else None
        g_b = np.zeros((M, C)) if want else None
        sel, acc_idx = done, np.flatnonzero(acc)  # row r = sel[j] is the fast block's acc_idx[j]
        for r, j in zip(sel.tolist(), acc_idx.tolist(), strict=False):
            losses[r] = fl[j]
        if want:
            g_hi[sel], g_lo[sel], g_b[sel] = fh[acc_idx], flo[acc_idx], fb[acc_idx]
        bits, unresolved = START_BITS, 0
        if part is not None:
            for j, r in enumerate(rest.tolist()):
                losses[r] = part.losses[j]
            if want:
                g_hi[rest], g_lo[rest], g_b[rest] = part.g_hi, part.g_lo, part.g_bound
            bits, unresolved = part.bits, part.unresolved
        return _Block(losses, g_hi, g_lo, g_b, None, bits, unresolved, np.zeros(M, bool))

    def _mpfr(self, xb: np.ndarray, tb, su: _Setup, prec: int) -> _Block:
        M, C = xb.shape
        if self.workers > 1 and M > 1 and M * C >= _PARALLEL_MIN:
            parts = _chunks(M, self.workers)
            with _pool(self.workers) as pool:
                blocks = list(pool.map(partial(_rows, su=su, start_prec=prec),
                                       [xb[p] for p in parts], [tb[p] for p in parts]))
            return _Block.concat(blocks, C)
        return _rows(xb, tb, su, prec)

    def __iter__(self):
        for rows in self.slices:
            if self.C == 0:  # no classes: an empty gradient; the losses follow _no_classes
                n = len(range(*rows.indices(self.problem.num_samples)))
                if self.grad:
                    yield GradBlock(rows, np.zeros((n, 0)), np.zeros((n, 0)), np.zeros((n, 0)))
                continue
            b = self._block(rows, self.su, START_BITS)
            self._losses.extend(b.losses)
            self._bits = max(self._bits, b.bits)
            self._unresolved += b.unresolved
            if b.g_mpfr is not None:
                self.grad_mpfr.extend(v for row in b.g_mpfr for v in row)
            if self.grad:
                yield GradBlock(rows, b.g_hi, b.g_lo, b.g_bound)
        self._done = True

    def loss(self) -> Exact:
        if not self._done:
            for _ in self:
                pass
        if self.C == 0:
            return _no_classes(self.problem)
        problem, su, prec = self.problem, self.su, START_BITS
        losses, bits, unresolved = self._losses, self._bits, self._unresolved
        while True:
            out, lbound, ok = _reduce(problem, su, losses, prec)
            if ok or prec >= MAX_BITS:
                unresolved += not ok
                break
            # The reduction needs more bits than its rows: redo the losses alone, higher.
            prec = min(2 * prec, MAX_BITS)
            bits = max(bits, prec)
            lsu = dataclasses.replace(su, want_grad=False, keep=False)
            losses = [v for rows in self.slices for v in self._block(rows, lsu, prec).losses]
        loss_hi, loss_lo = _split(out)
        shape = problem.output_shape
        return Exact(
            loss_hi=loss_hi.reshape(shape),
            loss_lo=loss_lo.reshape(shape),
            bits=bits,
            unresolved=unresolved,
            loss_mpfr=out,
            loss_bound=np.array([float(b) for b in lbound], dtype=np.float64).reshape(shape),
        )


def _no_classes(problem: Problem) -> Exact:
    """C = 0, as torch 2.13 computes it (docs/semantics.md): index targets (all ignored) give 0
    per sample, 'sum' 0 and 'mean' NaN (0/0), but NaN throughout with smoothing (ε/C = inf times
    an empty sum); probability targets give -0 per sample and 'sum', and NaN for 'mean'."""
    n = problem.num_samples
    if problem.probability_target:
        per, total = -0.0, -0.0
    elif problem.label_smoothing:
        per, total = _NAN, _NAN
    else:
        per, total = 0.0, 0.0
    if problem.reduction == "none":
        vals = np.full(n, per)
    else:
        vals = np.array([_NAN if problem.reduction == "mean" else total])
    shape = problem.output_shape
    return Exact(loss_hi=vals.reshape(shape), loss_lo=np.zeros(shape), bits=START_BITS,
                 loss_mpfr=[mpfr(v) for v in vals.tolist()], loss_bound=np.zeros(shape))


def blocks(problem: Problem, **kwargs) -> Blocks:
    """See :class:`Blocks`."""
    return Blocks(problem, **kwargs)


def evaluate(problem: Problem, *, grad: bool = True, workers: int | None = None,
             keep_mpfr: bool = False) -> Exact:
    """Reference loss (and gradient) of ``problem`` as double-doubles; see :class:`Exact`.

    ``keep_mpfr`` also keeps every gradient value in MPFR (``Exact.grad_mpfr``, rows order):
    the values of record, for small problems (the public mpmath API)."""
    ev = Blocks(problem, grad=grad, workers=workers, keep_mpfr=keep_mpfr)
    parts = list(ev)
    exact = ev.loss()
    if grad:
        C = problem.num_classes
        cat = (lambda name: np.concatenate([getattr(b, name) for b in parts])) if parts else (lambda name: np.empty((0, C)))
        exact.grad_hi = problem.unrows(cat("hi")).copy()
        exact.grad_lo = problem.unrows(cat("lo")).copy()
        exact.grad_bound = problem.unrows(cat("bound")).copy()
        if keep_mpfr:
            exact.grad_mpfr = ev.grad_mpfr
    return exact


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


def evaluate_many(problems: list[Problem], *, grad: bool = True, workers: int | None = None) -> list[Exact]:
    """Evaluate many problems, in parallel across problems (each one in-process)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(problems) <= 1:
        return [evaluate(p, grad=grad, workers=workers) for p in problems]
    with _pool(workers) as pool:
        return list(pool.map(partial(evaluate, grad=grad, workers=1), problems, chunksize=1))


# -- the public mpmath API -------------------------------------------------------------------------


def _to_mpf(v) -> mpmath.mpf:
    if isinstance(v, mpmath.mpf):
        return +v
    if gmpy2.is_nan(v):
        return mpmath.mpf("nan")
    if gmpy2.is_infinite(v):
        return mpmath.mpf("inf") if v > 0 else mpmath.mpf("-inf")
    man, exp = v.as_mantissa_exp()
    return mpmath.mpf((int(man), int(exp)))  # exact under the caller's workprec (see _to_mpf_array)


def _to_mpf_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    # mpf() rounds to the working precision, so build the values at more bits than they have.
    bits = max([v.precision if isinstance(v, mpfr) else int(v.man).bit_length() for v in values
                if not isinstance(v, mpfr) or gmpy2.is_finite(v)], default=53)
    with mpmath.workprec(bits + 64):
        out[:] = [_to_mpf(v) for v in values]
    return out


def _problem(logits, target, weight, ignore_index, reduction, label_smoothing) -> Problem:
    return Problem(
        np.asarray(logits),
        np.asarray(target),
        weight=None if weight is None else np.asarray(weight),
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def cross_entropy(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
) -> np.ndarray:
    """Exact ``torch.nn.functional.cross_entropy`` as an object array of ``mpmath.mpf``
    (shape () for 'mean'/'sum', the per-sample shape for 'none'), >= 106 correct bits,
    rounding correctly to float16/bfloat16/float32/float64."""
    problem = _problem(logits, target, weight, ignore_index, reduction, label_smoothing)
    exact = evaluate(problem, grad=False)
    return _to_mpf_array(exact.loss_mpfr).reshape(problem.output_shape)


def cross_entropy_grad(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
) -> np.ndarray:
    """Exact gradient of :func:`cross_entropy` w.r.t. the logits (for 'none': of the sum of the
    per-sample losses), an object array of ``mpmath.mpf`` with the logits' shape, >= 106
    correct bits for every value however small or large (the MPFR values of record, not the
    double-double view)."""
    problem = _problem(logits, target, weight, ignore_index, reduction, label_smoothing)
    exact = evaluate(problem, grad=True, keep_mpfr=True)
    flat = _to_mpf_array(exact.grad_mpfr)
    M = problem.num_samples if problem.logits.ndim > 1 else 1
    return problem.unrows(flat.reshape(M, problem.num_classes)).copy()


def rounded(values: np.ndarray, dtype) -> np.ndarray:
    """Round an object array of mpmath.mpf (as returned above) correctly to ``dtype``: each value
    is converted to MPFR exactly, then rounded once in a context with the format's precision,
    exponent range and subnormals (so ties, subnormals and overflow follow IEEE)."""
    fmt = FORMATS[np.dtype(dtype).name] if not isinstance(dtype, str) else FORMATS[dtype]
    flat = np.asarray(values, dtype=object).ravel()
    out = []
    for v in flat:
        if not mpmath.isfinite(v):
            out.append(float(v))
            continue
        man, exp = _signed_man_exp(v)
        with gmpy2.context(gmpy2.get_context(), precision=max(man.bit_length(), 2) + 2,
                           emin=-(2**30), emax=2**30):
            exact = gmpy2.mul_2exp(gmpy2.mpfr(man), exp)
        with gmpy2.context(gmpy2.get_context(), precision=fmt.precision, subnormalize=True,
                           emin=fmt.emin - fmt.precision + 2, emax=fmt.emax + 1):
            out.append(float(gmpy2.mpfr(exact) * 1))  # "* 1" keeps -0 (x + 0 would not)
    # Every value is now exactly representable in fmt, so this cast rounds nothing.
    return np.array(out, dtype=np.float64).astype(fmt.dtype).reshape(np.shape(values))
