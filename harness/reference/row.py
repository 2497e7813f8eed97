"""One row's loss and gradient at one working precision, on the MPFR path: the head + tail
formulas with their error analysis (:func:`_row`), the terms below MPFR's range (:func:`_deep`),
tied rows in rationals (:func:`_grad_rational`) and rows that meet an infinity, in torch's own
IEEE chain (:func:`_row_ieee`). The Ziv loop (:mod:`.ziv_loop`) decides whether to redo a row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import gmpy2
import mpmath
import numpy as np
from gmpy2 import mpfr

from harness.reference.arithmetic import MAX_BITS, _ctx, _mpf
from harness.reference.row_setup import _Setup
from harness.reference.value import _deep_value, _Value


def _exact_bits(x2d: np.ndarray, prec_in: int) -> np.ndarray:
    """Per row, the bits that make x_i - x_j exact for every pair of its finite entries."""
    fin = np.isfinite(x2d) & (x2d != 0)
    _, e = np.frexp(np.where(fin, np.abs(x2d), 1.0))
    hi = np.where(fin, e, -(10**6)).max(axis=1, initial=-(10**6))
    lo = np.where(fin, e, 10**6).min(axis=1, initial=10**6) - prec_in
    return np.where(hi > -(10**6), hi - lo + 4, 64)


#: Error multipliers (in units of u = 2^-prec) of the transcendental parts; derivation in _row.
_KT = 8


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
