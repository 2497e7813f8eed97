"""Exact partial sums of a cell's errors, per row segment: the mean ULP error and the normwise
error of :mod:`harness.metrics`, but independent of how the rows are grouped into blocks.

:class:`ExactSum` is the order-independent accumulator; :class:`SegmentSums` holds a cell's
three (ULP errors, ||y - v||², ||v||²) and is what both judges use.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SEGMENT", "ExactSum", "SegmentSums", "segments"]


class ExactSum:
    """The exact sum of non-negative float64 terms ``x_i * 2**k_i``, kept as a Python integer
    times a power of two, so it does not depend on the order of the terms or on how they are
    split into :meth:`add` calls (a blockwise pass and a whole-array pass give the same bits).

    Each term is decomposed into a 53-bit integer mantissa and an exponent; the mantissa's top
    27 and low 26 bits are summed per exponent with ``np.bincount`` into float64 bins, which stay
    exact integers while fewer than 2**26 terms are pending (2**26 * 2**27 = 2**53); then the
    bins are folded into the Python integer. Infinite and NaN terms are only flagged. Cost: a
    dozen passes over the data (a few ns a term on cached chunks)."""

    __slots__ = ("_exp", "_hs", "_ls", "_num", "_pending", "count", "inf", "nan")
    _EMIN = -4480  # exponents of the bins: add() needs [-1074, 971], add_squares [-4400, 4100]
    _NB = 8704
    _FLUSH = 1 << 26

    def __init__(self):
        self._num = 0  # the folded part of the sum is _num * 2**_exp
        self._exp = 0
        self._hs = np.zeros(self._NB)
        self._ls = np.zeros(self._NB)
        self._pending = 0
        self.inf = False
        self.nan = False
        self.count = 0

    def add(self, x, k=None) -> None:
        """Add sum(x * 2**k) (x >= 0 float64; k an integer array like x, or None for 0)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        self.count += x.size
        if x.size == 0:
            return
        if k is not None:
            k = np.broadcast_to(np.asarray(k, dtype=np.int64), x.shape)
        if not np.isfinite(x).all():
            fin = np.isfinite(x)
            bad = x[~fin]
            self.nan |= bool(np.isnan(bad).any())
            self.inf |= bool(np.isinf(bad).any())
            x = x[fin]
            k = None if k is None else k[fin]
        for a in range(0, x.size, self._FLUSH):
            self._add(x[a:a + self._FLUSH], None if k is None else k[a:a + self._FLUSH])

    def _add(self, x: np.ndarray, k) -> None:
        if x.size == 0:
            return
        if self._pending + x.size > self._FLUSH:
            self._fold()
        bits = np.ascontiguousarray(x).view(np.uint64)
        be = bits >> np.uint64(52)
        be &= np.uint64(0x7FF)
        man = bits & np.uint64((1 << 52) - 1)
        man |= np.minimum(be, np.uint64(1)) << np.uint64(52)  # the implicit bit of normals
        e = np.maximum(be, np.uint64(1)).view(np.int64)
        e += -1075 - self._EMIN  # x = man * 2**(e + EMIN) exactly, subnormals included
        if k is not None:
            e += k
        lo, hi = int(e.min()), int(e.max())
        if lo < 0 or hi >= self._NB:  # exponents beyond the bins (only with extreme k)
            self._fold()
            e -= lo
            hs = np.bincount(e, weights=(man >> np.uint64(26)).astype(np.float64))
            ls = np.bincount(e, weights=(man & np.uint64((1 << 26) - 1)).astype(np.float64))
            self._fold_bins(hs, ls, lo + self._EMIN)
            return
        e -= lo
        self._hs[lo:hi + 1] += np.bincount(e, weights=(man >> np.uint64(26)).astype(np.float64))
        self._ls[lo:hi + 1] += np.bincount(e, weights=(man & np.uint64((1 << 26) - 1)).astype(np.float64))
        self._pending += x.size

    def _fold_bins(self, hs: np.ndarray, ls: np.ndarray, e0: int) -> None:
        for b in np.flatnonzero((hs != 0) | (ls != 0)).tolist():
            self._add_int((int(hs[b]) << 26) + int(ls[b]), b + e0)

    def _fold(self) -> None:
        if self._pending:
            self._fold_bins(self._hs, self._ls, self._EMIN)
            self._hs[:] = 0.0
            self._ls[:] = 0.0
            self._pending = 0

    def _add_int(self, v: int, e: int) -> None:
        if e < self._exp:
            self._num <<= self._exp - e
            self._exp = e
        self._num += v << (e - self._exp)

    def add_squares(self, x, k=None) -> None:
        """Add sum((x * 2**k)**2), each square rounded once at the element's own scale:
        x = m 2**e with m in [0.5, 1) (exact), m*m rounded to float64, exponent 2(e + k)."""
        m, e = np.frexp(np.asarray(x, dtype=np.float64).reshape(-1))
        m *= m
        e = e.astype(np.int64)
        if k is not None:
            e += np.asarray(k, dtype=np.int64).reshape(-1)
        e *= 2
        self.add(m, e)

    def merge(self, other: ExactSum) -> None:
        """Add another sum (exactly)."""
        num, exp = other.fraction()
        self._add_int(num, exp)
        self.inf |= other.inf
        self.nan |= other.nan
        self.count += other.count

    @property
    def zero(self) -> bool:
        self._fold()
        return self._num == 0 and not (self.inf or self.nan)

    def fraction(self) -> tuple[int, int]:
        """The finite part as (numerator, exponent): numerator * 2**exponent."""
        self._fold()
        return self._num, self._exp

    def value(self, divisor: int = 1) -> float:
        """The sum divided by ``divisor`` (a positive int), correctly rounded to float64."""
        if self.nan:
            return math.nan
        if self.inf:
            return math.inf
        num, exp = self.fraction()
        try:
            if exp >= 0:
                return (num << exp) / divisor
            return num / (divisor << -exp)  # int / int is correctly rounded in Python
        except OverflowError:
            return math.inf


def _sqrt_ratio(num: ExactSum, den: ExactSum) -> float:
    """sqrt(num / den) of two finite exact sums, den > 0, without overflow or underflow."""
    a, ea = num.fraction()
    b, eb = den.fraction()
    t = ea - eb
    s = a.bit_length() - b.bit_length()
    if (t + s) % 2:
        s -= 1
    # a / (b 2**s) lies in [1/4, 4): a float, then the power of two comes back halved
    r = a / (b << s) if s >= 0 else (a << -s) / b
    try:
        return math.ldexp(math.sqrt(r), (t + s) // 2)
    except OverflowError:
        return math.inf


#: Columns per segment of the cells' partial sums (:class:`SegmentSums`).
SEGMENT = 1 << 16


def segments(C: int) -> list[slice]:
    """The column segments of a row of C classes: the whole row up to SEGMENT, else pieces."""
    if C <= SEGMENT:
        return [slice(0, C)]
    return [slice(a, min(C, a + SEGMENT)) for a in range(0, C, SEGMENT)]


def _scale_rows(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """a * 2**k[:, None], correctly rounded (exact unless it underflows): a multiplication by
    the power of two where that is a float64 (20 times faster than ldexp), else ldexp."""
    if k.size and (k.max() > 1023 or k.min() < -1074):
        return np.ldexp(a, k[:, None])
    return a * np.ldexp(1.0, k)[:, None]


def _row_norm2(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a 2-D array: (sum of (a 2**-k)**2, 2k) with 2**k just above max|a| of the row,
    so the squares neither overflow nor underflow (``metrics._norm2`` per row)."""
    mx = np.max(np.abs(a), axis=1, initial=0.0)
    k = np.frexp(mx)[1].astype(np.int64)
    s = _scale_rows(a, -k)
    s *= s
    return np.sum(s, axis=1), 2 * k


class SegmentSums:
    """The mean ULP error and the normwise error of a cell, from partial sums per row segment
    (a row of the problem's ``rows()`` view, or SEGMENT columns of it) combined exactly: the
    values do not depend on how the rows are grouped into blocks, so the blockwise judge
    (:mod:`harness.blockwise`) and the whole-array one (``verdicts.judge``) give the same bits.

    Partial sums are NumPy's pairwise sums along a row (index-based, so a row gives the same
    sum alone or within a block); the normwise error scales each row segment by powers of two
    as ``metrics.normwise_rel_error`` scales the whole array (max(|y|, |v|), then ||d|| and
    ||v|| by their own maxima): no overflow, no harmful underflow."""

    __slots__ = ("count", "den", "mean", "mismatch", "num")

    def __init__(self):
        self.mean, self.num, self.den = ExactSum(), ExactSum(), ExactSum()
        self.mismatch = False
        self.count = 0

    def add(self, e: np.ndarray, y: np.ndarray, hi: np.ndarray, lo: np.ndarray, count: int,
            mismatch: bool) -> None:
        """One piece of whole row segments, 2-D (r, L) float64 arrays: ULP errors ``e`` (>= 0,
        inf allowed) and y, hi, lo, all 0 at positions not compared; ``count`` positions
        compared; ``mismatch``: some compared position has y inf/NaN (then normwise is inf)."""
        self.count += count
        self.mean.add(np.sum(e, axis=1))
        self.mismatch |= bool(mismatch)
        if self.mismatch:
            return
        m = np.maximum(np.max(np.abs(y), axis=1, initial=0.0), np.max(np.abs(hi), axis=1, initial=0.0))
        k = -np.frexp(m)[1].astype(np.int64)
        d = _scale_rows(y, k)
        d -= _scale_rows(hi, k)
        d -= _scale_rows(lo, k)
        part, kd = _row_norm2(d)
        self.num.add(part, kd - 2 * k)
        part, kv = _row_norm2(hi + lo)
        self.den.add(part, kv)

    def add_rows(self, e, y, hi, lo, count: int, mismatch: bool) -> None:
        """Whole rows (r, C), split into segments."""
        for sl in segments(e.shape[1]):
            self.add(e[:, sl], y[:, sl], hi[:, sl], lo[:, sl], 0, mismatch)
        self.count += count

    def merge(self, other: SegmentSums) -> None:
        """Add the partial sums of other rows (exactly: the order of merges does not matter)."""
        self.mean.merge(other.mean)
        self.num.merge(other.num)
        self.den.merge(other.den)
        self.mismatch |= other.mismatch
        self.count += other.count

    def mean_value(self) -> float | None:
        return self.mean.value(self.count) if self.count else None

    def normwise(self) -> float:
        if self.mismatch:
            return math.inf
        if self.count == 0 or self.num.zero:
            return 0.0
        if self.den.zero:
            return math.inf
        return _sqrt_ratio(self.num, self.den)
