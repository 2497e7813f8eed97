"""The reference's fast first pass (CRlibm's two phases: a quick proven pass, MPFR where it
cannot decide): which rows it takes, the exp of whole blocks in triple-double by
:mod:`harness.fastpath`'s kernels, then per row the sum, log1p and target entry in MPFR, with
the same acceptance test as the MPFR path. Rows it cannot settle go back to the MPFR path."""

from __future__ import annotations

import gmpy2
import numpy as np
from gmpy2 import mpfr

from harness.reference.arithmetic import GOOD_BITS, START_BITS, _ctx
from harness.reference.row_setup import _Setup
from harness.reference.stability import _DD_MAX, _DD_MIN, _values_stable
from harness.reference.value import _Value


def _fast_eligible(xb: np.ndarray, tb, su: _Setup) -> np.ndarray:
    """Rows the fast pass handles: class-index targets without label smoothing, finite or -inf
    logits (not all -inf), not ignored, and a finite reduction scale. Everything else (special
    values, smoothing, probability targets, zero-weight means) takes the MPFR path."""
    from harness import reference  # FAST is the package's switch, read where callers set it

    M = xb.shape[0]
    if not reference.FAST or su.keep or su.probability or su.eps or M == 0:
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
