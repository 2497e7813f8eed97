"""The exact softmax cross-entropy of PyTorch's contract, and its gradient, correctly rounded.

Arithmetic is done in MPFR through gmpy2 (the library behind Zimmermann's accuracy tables and
the fast backend of mpmath); public results are returned as ``mpmath.mpf``. Every input float is
converted exactly, and the formulas never subtract nearly equal quantities:

* row statistics: m = max_j x_j, k = argmax, d_j = x_j - m computed *exactly* (the working
  precision of the subtraction is raised to cover both exponents), e_j = exp(d_j) <= 1,
  s = sum_{j != k} e_j (a correctly rounded sum, ``mpfr_sum``), S = 1 + s;
* -log p_c = (m - x_c) + log1p(s): both terms are >= 0, so a tiny loss keeps every digit
  (the textbook log(sum e^x) - x_c returns 0 for logits [200, 0] even at 256 bits);
* gradient of -log p_t: p_j for j != t and p_t - 1 = -(S - e_t)/S, where S - e_t >= S/2, so the
  target class is free of cancellation.

Each value carries a rigorous error bound (a few units of 2^-prec times the magnitude of what was
summed). Ziv's strategy: a value is accepted when the bound is below 2^-106 of it and rounding the
interval [v - bound, v + bound] to float16, bfloat16, float32 and float64 gives one answer each;
otherwise that row (or, for a reduced loss, the problem) is recomputed at twice the precision.
Only exact zeros reached through a cancellation (possible with negative weights or label
smoothing) need ~1100 bits before the bound falls under float64's smallest subnormal.

Special values follow IEEE arithmetic in the same formulas, which reproduces PyTorch: a -inf
logit gives e_j = 0; a -inf target logit gives +inf; 0 * inf (a zero weight or a zero
probability target meeting a -inf logit) gives NaN; a row with NaN or +inf, or with every logit
-inf, gives NaN loss and a NaN gradient row (even when the row is ignored, because PyTorch's
log_softmax backward multiplies its NaN softmax by a zero upstream gradient).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import gmpy2
import mpmath
import numpy as np
from gmpy2 import mpfr

from harness.formats import FORMATS
from harness.problem import Problem

#: Bump when the algorithm or the stored layout changes: invalidates cached references.
VERSION = 1
#: First working precision of the Ziv loop (bits).
START_BITS = 128
#: Precision cap. Past it a value is returned as computed and counted in ``Exact.unresolved``.
MAX_BITS = 1280
#: Correct bits every returned value carries (so fractional float64 ULP errors are meaningful).
GOOD_BITS = 106
#: Error-bound multiplier: every formula here loses at most a few roundings of 2^-prec relative to
#: the magnitude it sums; 32 covers the longest chain (exp, sum, log1p, products, scaling) with room.
_K = 32
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

    def rounded_loss(self, dtype) -> np.ndarray:
        """The loss correctly rounded to ``dtype`` (float16, bfloat16, float32 or float64)."""
        return _rounded(self.loss_hi, self.loss_lo, dtype)

    def rounded_grad(self, dtype) -> np.ndarray:
        """The gradient correctly rounded to ``dtype``."""
        return _rounded(self.grad_hi, self.grad_lo, dtype)


def _rounded(hi: np.ndarray, lo: np.ndarray, dtype) -> np.ndarray:
    from harness.metrics import round_to_format

    fmt = FORMATS[np.dtype(dtype).name]
    return round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi))


# -- rounding stability (the acceptance test of the Ziv loop) --------------------------------------


def _round_stable(hi: np.ndarray, lo: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """True where [v - bound, v + bound] (v = hi + lo) rounds to a single value in every format
    and bound <= 2^-GOOD_BITS |v| (or is below float64's smallest subnormal / 2)."""
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    bound = np.asarray(bound, dtype=np.float64)
    finite = np.isfinite(hi)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (bound <= np.abs(hi) * 2.0**-GOOD_BITS) | (bound <= 2.0**-1076)
        for fmt in FORMATS.values():
            ok &= _margin(hi, lo, fmt) > bound
    # Non-finite values are exact (inf/NaN patterns are decided by IEEE rules, not rounding).
    return ok | ~finite


def _margin(hi: np.ndarray, lo: np.ndarray, fmt) -> np.ndarray:
    """Distance from v = hi + lo to the nearest rounding boundary of ``fmt``: a midpoint between
    two neighbours, the overflow threshold max + ulp/2, or the midpoints around zero."""
    p, emin = fmt.precision, fmt.emin
    a = np.abs(hi)
    slo = np.where(hi < 0, -lo, lo)  # v's offset from hi, seen on the positive side
    _, e = np.frexp(a)  # a = f * 2^e, f in [0.5, 1): the binary exponent is e - 1
    q = np.maximum(e - 1, emin) - p + 1  # ulp exponent of a's binade
    ulp = np.ldexp(1.0, q)
    n = np.floor(a / ulp)  # exact
    # At the start of a normal binade the boundary below is a quarter-ulp away (the binade below
    # has half the ulp).
    first = (n == 2.0 ** (p - 1)) & (q > emin - p + 1)
    if fmt.name == "float64":
        # hi = RN_64(v), so v lies |lo| from hi and the boundaries are ulp/2 (or ulp/4) away.
        half_below = np.where(first, ulp / 4, ulp / 2)
        return np.where(slo < 0, half_below, ulp / 2) - np.abs(lo)
    mid = (n + 0.5) * ulp
    below = np.where(first, n * ulp - ulp / 4, mid - ulp)
    top = (2.0 - 2.0 ** (1 - p)) * 2.0**fmt.emax + 2.0 ** (fmt.emax - p)  # max + ulp/2
    d = np.minimum(np.abs((a - mid) + slo), np.abs((a - below) + slo))
    return np.minimum(d, np.abs((a - top) + slo))


# -- one row ---------------------------------------------------------------------------------------


@dataclass
class _Setup:
    """What every row needs besides its logits (picklable, sent once per worker task)."""

    C: int
    prec_in: int  # significand bits of the input format
    eps: float
    weight: list | None  # mpfr, exact
    wsum: object  # mpfr, exact sum of weights (for smoothing)
    wnonneg: bool
    denom: object  # mpfr exact denominator of the mean, or None for sum/none
    probability: bool
    ignore_index: int
    want_grad: bool


def _exact_bits(x2d: np.ndarray, prec_in: int) -> np.ndarray:
    """Per row, the bits that make x_i - x_j exact for every pair of its finite entries."""
    fin = np.isfinite(x2d) & (x2d != 0)
    _, e = np.frexp(np.where(fin, np.abs(x2d), 1.0))
    hi = np.where(fin, e, -(10**6)).max(axis=1, initial=-(10**6))
    lo = np.where(fin, e, 10**6).min(axis=1, initial=10**6) - prec_in
    return np.where(hi > -(10**6), hi - lo + 4, 64)


def _row(xs: list, k: int, exact_bits: int, target, su: _Setup, prec: int):
    """Loss (value, bound) and gradient (hi, lo, bound) of one finite-ish, non-ignored row at
    working precision ``prec``; ``xs`` are its logits, ``k`` the index of the first maximum.

    ``target`` is the class index or the probability vector. The gradient includes the
    reduction's scale (1/denominator for 'mean')."""
    C = su.C
    ctx = gmpy2.get_context()
    u = mpfr(2) ** -prec
    m = xs[k]
    if exact_bits <= 53:
        d = [v - m for v in xs]  # exact in float64 (narrow inputs, moderate range)
    else:
        ctx.precision = max(prec, exact_bits)
        mm = mpfr(m)
        d = [v - mm for v in xs]  # exact at this precision
        ctx.precision = prec
    e = [gmpy2.exp(v) for v in d]  # e_k = 1 exactly
    s = gmpy2.fsum(e[:k] + e[k + 1 :])  # correctly rounded
    S = 1 + s
    L1 = gmpy2.log1p(s)
    w = su.weight
    E = mpfr(su.eps)
    eC = E / C
    one_m = 1 - E

    # ---- loss ----------------------------------------------------------------------------------
    if su.probability:
        tp = [one_m * tc + eC for tc in target.tolist()] if su.eps else [mpfr(tc) for tc in target.tolist()]
        q = [tc * wc for wc, tc in zip(w, tp, strict=False)] if w is not None else tp
        Q = gmpy2.fsum(q)
        loss = gmpy2.fsum([qc * (-dc) for qc, dc in zip(q, d, strict=False)]) + Q * L1
        if all(qc >= 0 for qc in q):
            mag = abs(loss)
        else:
            mag = gmpy2.fsum([abs(qc * dc) for qc, dc in zip(q, d, strict=False)]) + gmpy2.fsum(map(abs, q)) * L1
    else:
        t = int(target)
        wt = w[t] if w is not None else 1
        nll = wt * (-mpfr(d[t]) + L1)
        if su.eps:
            if w is not None:
                smooth = gmpy2.fsum([wc * (-dc) for wc, dc in zip(w, d, strict=False)]) + su.wsum * L1
            else:
                smooth = C * L1 - gmpy2.fsum(map(mpfr, d))
            loss = one_m * nll + eC * smooth
        else:
            loss = nll
        if su.wnonneg:
            mag = abs(loss)
        else:
            absw = [abs(wc) for wc in w]
            smag = gmpy2.fsum([wc * abs(dc) for wc, dc in zip(absw, d, strict=False)]) + gmpy2.fsum(absw) * L1
            mag = abs(one_m * nll) + eC * smag
    loss_bound = _K * u * mag

    if not su.want_grad:
        return loss, loss_bound, None, None, None

    # ---- gradient ------------------------------------------------------------------------------
    if su.denom is None:
        sigma = mpfr(1)
    else:
        sigma = 1 / su.denom  # inf when the kept rows' weights sum to 0 (torch: NaN gradient)
    if su.probability:
        f = sigma * Q / S
        A = [f * ej for ej in e]
        B = [sigma * qc for qc in q]
        g = [a - b for a, b in zip(A, B, strict=False)]
        mags = np.abs(np.array([float(a) for a in A])) + np.abs(np.array([float(b) for b in B]))
    else:
        W = su.wsum
        a = one_m * wt + eC * W if su.eps else mpfr(wt)
        f = sigma * a / S
        g = [f * ej for ej in e]
        # p_t - 1 = -qt/S with qt = sum_{j != t} e_j: s itself when t is the argmax, else
        # S - e_t >= S/2 (e_t <= 1 <= S - e_t), so no cancellation either way.
        qt = s if t == k else S - e[t]
        if su.eps:
            h = sigma * eC
            hw = [h * wc for wc in w] if w is not None else [h] * C
            mags = np.abs(np.array([float(v) for v in g])) + np.abs(np.array([float(v) for v in hw]))
            g = [gj - hj for gj, hj in zip(g, hw, strict=False)]
            gt_a = h * (W - wt)
            gt_b = f * qt
            g[t] = gt_a - gt_b
            mags[t] = abs(float(gt_a)) + abs(float(gt_b))
        else:
            g[t] = -(f * qt)
            mags = None
    g_hi, g_lo = _split(g)
    if mags is None:
        mags = np.abs(g_hi)
    g_bound = float(_K * u) * mags * (1 + 2.0**-40)
    return loss, loss_bound, g_hi, g_lo, g_bound


def _split(vals) -> tuple[np.ndarray, np.ndarray]:
    """mpfr values -> (hi, lo) float64 arrays, hi = RN(v), lo = RN(v - hi) (exact difference)."""
    hi = np.array([float(v) for v in vals], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = np.array([float(v - h) for v, h in zip(vals, hi.tolist(), strict=False)], dtype=np.float64)
    lo[~np.isfinite(hi)] = 0.0
    return hi, lo


# -- rows in blocks (the unit of parallel work) ----------------------------------------------------


def _rows(x2d: np.ndarray, t, su: _Setup, start_prec: int):
    """Evaluate a block of rows; rows whose loss or gradient fails the Ziv test are redone at
    twice the precision. Returns (losses, loss bounds, grad hi, grad lo, bits, unresolved)."""
    M, C = x2d.shape
    losses = [mpfr(0)] * M
    lbounds = [mpfr(0)] * M
    g_hi = np.zeros((M, C)) if su.want_grad else None
    g_lo = np.zeros((M, C)) if su.want_grad else None
    g_b = np.zeros((M, C)) if su.want_grad else None
    # Rows with NaN or +inf, or all -inf: NaN loss (0 when ignored) and a NaN gradient row.
    bad = np.isnan(x2d).any(axis=1) | np.isposinf(x2d).any(axis=1) | np.isneginf(x2d).all(axis=1)
    ignored = np.zeros(M, bool) if su.probability else (t == su.ignore_index)
    for i in np.flatnonzero(bad & ~ignored):
        losses[i] = mpfr(_NAN)
    if su.want_grad:
        g_hi[bad] = _NAN
    todo = np.flatnonzero(~bad & ~ignored)
    kmax = np.argmax(np.where(np.isnan(x2d), -np.inf, x2d), axis=1)
    ebits = _exact_bits(x2d, su.prec_in)
    rows = x2d.tolist()
    prec, bits, unresolved = start_prec, start_prec, 0
    with gmpy2.context(gmpy2.get_context()):
        while todo.size:
            bits = prec
            for i in todo.tolist():
                loss, lb, gh, gl, gb = _row(rows[i], int(kmax[i]), int(ebits[i]), t[i], su, prec)
                losses[i], lbounds[i] = loss, lb
                if gh is not None:
                    g_hi[i], g_lo[i], g_b[i] = gh, gl, gb
            lh, ll = _split([losses[i] for i in todo])
            ok = _round_stable(lh, ll, np.array([float(lbounds[i]) for i in todo]))
            if su.want_grad:
                ok &= _round_stable(g_hi[todo], g_lo[todo], g_b[todo]).all(axis=1)
            if prec >= MAX_BITS:
                unresolved += int((~ok).sum())
                break
            todo = todo[~ok]
            prec = min(2 * prec, MAX_BITS)
    return losses, lbounds, g_hi, g_lo, bits, unresolved


def _setup(problem: Problem, want_grad: bool) -> _Setup:
    C = problem.num_classes
    fmt = problem.format
    w = None if problem.weight is None else problem.weight.astype(np.float64).tolist()
    with gmpy2.context(gmpy2.get_context(), precision=4400):  # exact sums of input floats
        wsum = gmpy2.fsum(w) if w is not None else mpfr(C)
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
                    denom = gmpy2.fsum([int(n) * wc for n, wc in zip(counts.tolist(), w, strict=False) if n])
    return _Setup(
        C=C,
        prec_in=fmt.precision,
        eps=problem.label_smoothing,
        weight=None if w is None else [mpfr(v) for v in w],  # exact (53 <= bits)
        wsum=wsum,
        wnonneg=w is None or min(w) >= 0,
        denom=denom,
        probability=problem.probability_target,
        ignore_index=problem.ignore_index,
        want_grad=want_grad,
    )


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool. fork is fastest, but forking a process in which JAX or torch already
    started threads can deadlock; then the workers come from a clean forkserver instead."""
    import multiprocessing as mp
    import sys

    threaded = any(m in sys.modules for m in ("jax", "torch", "cupy"))
    method = "forkserver" if threaded or sys.platform != "linux" else "fork"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))


def _chunks(M: int, C: int, workers: int) -> list[slice]:
    per = max(1, -(-M // (workers * 4)))
    return [slice(i, min(M, i + per)) for i in range(0, M, per)]


def evaluate(problem: Problem, *, grad: bool = True, workers: int | None = None) -> Exact:
    """Reference loss (and gradient) of ``problem`` as double-doubles; see :class:`Exact`."""
    x2d, t = problem.rows()
    x2d = x2d.astype(np.float64)  # exact for every supported format
    M, C = x2d.shape
    workers = workers or os.cpu_count() or 1
    su = _setup(problem, grad)
    prec = START_BITS
    while True:
        if workers > 1 and M > 1 and M * C >= _PARALLEL_MIN:
            parts = _chunks(M, C, workers)
            with _pool(workers) as pool:
                results = list(
                    pool.map(partial(_rows, su=su, start_prec=prec), [x2d[s] for s in parts], [t[s] for s in parts])
                )
        else:
            results = [_rows(x2d, t, su, prec)]
        losses = [v for r in results for v in r[0]]
        bounds = [v for r in results for v in r[1]]
        bits = max(r[4] for r in results)
        unresolved = sum(r[5] for r in results)
        if grad:
            g_hi = np.concatenate([r[2] for r in results]) if results else np.empty((0, C))
            g_lo = np.concatenate([r[3] for r in results]) if results else np.empty((0, C))
        out, ok = _reduce(problem, su, losses, bounds, prec)
        if ok or prec >= MAX_BITS:
            unresolved += not ok
            break
        prec *= 2
        bits = max(bits, prec)
    loss_hi, loss_lo = _split(out)
    shape = problem.output_shape
    exact = Exact(
        loss_hi=loss_hi.reshape(shape),
        loss_lo=loss_lo.reshape(shape),
        bits=bits,
        unresolved=unresolved,
        loss_mpfr=out,
    )
    if grad:
        exact.grad_hi = problem.unrows(g_hi).copy()
        exact.grad_lo = problem.unrows(g_lo).copy()
    return exact


def _reduce(problem: Problem, su: _Setup, losses: list, bounds: list, prec: int):
    """Apply the reduction; returns (values, accepted)."""
    if problem.reduction == "none":
        return losses, True  # every per-row loss already passed its own Ziv test
    with gmpy2.context(gmpy2.get_context(), precision=prec):
        u = mpfr(2) ** -prec
        total = gmpy2.fsum(losses) if losses else mpfr(0)
        bound = gmpy2.fsum(bounds) + u * abs(total) if bounds else mpfr(0)
        if problem.reduction == "mean":
            if su.denom == 0:
                return [mpfr(_NAN)], True
            total = total / su.denom
            bound = bound / abs(su.denom) + 2 * u * abs(total)
    hi, lo = _split([total])
    return [total], bool(_round_stable(hi, lo, np.array([float(bound)]))[0])


def evaluate_many(problems: list[Problem], *, grad: bool = True, workers: int | None = None) -> list[Exact]:
    """Evaluate many problems, in parallel across problems (each one in-process)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(problems) <= 1:
        return [evaluate(p, grad=grad, workers=workers) for p in problems]
    with _pool(workers) as pool:
        return list(pool.map(partial(evaluate, grad=grad, workers=1), problems, chunksize=1))


# -- the public mpmath API -------------------------------------------------------------------------


def _to_mpf(v) -> mpmath.mpf:
    if gmpy2.is_nan(v):
        return mpmath.mpf("nan")
    if gmpy2.is_infinite(v):
        return mpmath.mpf("inf") if v > 0 else mpmath.mpf("-inf")
    man, exp = v.as_mantissa_exp()
    return mpmath.mpf((int(man), int(exp)))  # exact under the caller's workprec (see _to_mpf_array)


def _to_mpf_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    # mpf() rounds to the working precision, so build the values at more bits than they have.
    with mpmath.workprec(MAX_BITS * 2 + 64):
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
    per-sample losses), an object array of ``mpmath.mpf`` with the logits' shape.

    Values are rebuilt from the double-double (hi + lo), which carries >= 106 bits for every
    value within float64's range."""
    problem = _problem(logits, target, weight, ignore_index, reduction, label_smoothing)
    exact = evaluate(problem, grad=True)
    hi, lo = exact.grad_hi.ravel().tolist(), exact.grad_lo.ravel().tolist()
    out = np.empty(len(hi), dtype=object)
    with mpmath.workprec(2200):  # hi + lo is exact at this precision
        out[:] = [mpmath.mpf(h) + mpmath.mpf(lo_) if lo_ else mpmath.mpf(h) for h, lo_ in zip(hi, lo, strict=False)]
    return out.reshape(problem.logits.shape)


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
        man, exp = int(v.man), int(v.exp)
        with gmpy2.context(gmpy2.get_context(), precision=max(man.bit_length(), 2) + 2,
                           emin=-(2**30), emax=2**30):
            exact = gmpy2.mul_2exp(gmpy2.mpfr(man), exp)
        with gmpy2.context(gmpy2.get_context(), precision=fmt.precision, subnormalize=True,
                           emin=fmt.emin - fmt.precision + 2, emax=fmt.emax + 1):
            out.append(float(gmpy2.mpfr(exact) + 0))
    # Every value is now exactly representable in fmt, so this cast rounds nothing.
    return np.array(out, dtype=np.float64).astype(fmt.dtype).reshape(np.shape(values))


def softmax(logits) -> np.ndarray:
    """Exact softmax along the last axis, object array of mpmath.mpf (mpmath at 160 bits)."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workprec(160):
        for idx in np.ndindex(x.shape[:-1]):
            row = [mpmath.mpf(v) for v in x[idx].tolist()]
            m = max(row)
            e = [mpmath.exp(v - m) for v in row]
            s = mpmath.fsum(e)
            out[idx] = [v / s for v in e]
    return out


def log_softmax(logits) -> np.ndarray:
    """Exact log_softmax along the last axis: (x_j - m) - log1p(sum_{i != k} e^{x_i - m})."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workprec(160):
        for idx in np.ndindex(x.shape[:-1]):
            row = [mpmath.mpf(v) for v in x[idx].tolist()]
            k = int(np.argmax(x[idx]))
            s = mpmath.fsum(mpmath.exp(v - row[k]) for i, v in enumerate(row) if i != k)
            out[idx] = [(v - row[k]) - mpmath.log1p(s) for v in row]
    return out
