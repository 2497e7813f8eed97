"""A block of rows through Ziv's loop on the MPFR path: each row is evaluated, tested
(:func:`~harness.reference.stability._values_stable`), and redone at twice the precision until it
passes or reaches MAX_BITS, where boundary cases are decided by
:func:`~harness.reference.value._sticky`. :class:`_Block` is what a block (or a worker) returns."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from gmpy2 import mpfr

from harness.reference.arithmetic import _NAN, MAX_BITS
from harness.reference.row import _exact_bits, _grad_rational, _row, _row_ieee, _tied
from harness.reference.row_setup import _Setup
from harness.reference.stability import _values_stable
from harness.reference.value import _plus_zero, _sticky, _Value


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
