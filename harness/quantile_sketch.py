"""The quantiles of a cell's ULP errors past what can be kept: a mergeable log-linear sketch.

The blockwise judge (:mod:`harness.blockwise`) keeps the errors themselves, for exact
quantiles, while an :class:`Allowance` lets it; past that, a :class:`Sketch` counts them per bin
of their float64 bit patterns (:data:`SKETCH_BITS` mantissa bits per binade, integer counts),
so every judge's sketch merges exactly with the others'. Each order statistic is then replaced
by the midpoint of its bin: a quantile is off by at most 2**-(SKETCH_BITS + 1) of the larger of
the two order statistics it interpolates between (exact for zeros and infinities).
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["SKETCH_BITS", "Allowance", "Sketch"]

#: Mantissa bits per binade of the quantile sketch: bins 2**-SKETCH_BITS wide, relative.
SKETCH_BITS = 8
_SKETCH_SHIFT = 52 - SKETCH_BITS
_SKETCH_BINS = (0x7FF << SKETCH_BITS) + 1  # the last is +inf


class Sketch:
    """Counts of the errors per (exponent, top SKETCH_BITS mantissa bits) bin, zeros apart."""

    def __init__(self):
        self.counts = np.zeros(_SKETCH_BINS, np.int64)
        self.zeros = 0

    def merge(self, other: Sketch) -> None:
        self.counts += other.counts
        self.zeros += other.zeros

    def add(self, e: np.ndarray) -> None:  # e >= 0, no NaN
        pos = e[e != 0]
        self.zeros += e.size - pos.size
        if not pos.size:
            return
        keys = pos.view(np.int64) >> _SKETCH_SHIFT
        lo, hi = int(keys.min()), int(keys.max())
        if hi - lo < 4 * keys.size + 4096:
            self.counts[lo:hi + 1] += np.bincount(keys - lo)
        else:
            np.add.at(self.counts, keys, 1)

    @staticmethod
    def _mid(k: int) -> float:
        if k == _SKETCH_BINS - 1:
            return math.inf
        a = np.array([k << _SKETCH_SHIFT, (k + 1) << _SKETCH_SHIFT], np.int64).view(np.float64)
        return float(a[0] + (a[1] - a[0]) / 2)

    def quantiles(self, qs: list[float], n: int, top: float) -> list[float]:
        """metrics._quantile's interpolation with each order statistic replaced by the midpoint
        of its bin (0 for zeros, inf for infinities), capped at the exact maximum ``top``."""
        cum = np.cumsum(self.counts)

        def at(r: int) -> tuple[int, float]:
            if r < self.zeros:
                return -1, 0.0
            k = int(np.searchsorted(cum, r - self.zeros, side="right"))
            return k, min(self._mid(k), top)

        out = []
        for q in qs:
            p = q * (n - 1)
            i = math.floor(p)
            j = min(i + 1, n - 1)
            t = p - i
            (ka, a), (kb, b) = at(i), at(j)
            out.append(a if (t == 0.0 or ka == kb or a == b) else a + (b - a) * t)
        return out


class Allowance:
    """How many errors the judges of one cell (one per thread) may still keep for exact
    quantiles; once over, every one of them goes over to the sketch."""

    def __init__(self, cap: int):
        self.cap, self.used, self.over = cap, 0, False
        self.lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if not self.over and self.used + n <= self.cap:
                self.used += n
                return True
            self.over = True
            return False

    # a judge's allowance travels with it (a Dask worker judges row blocks, harness.executor):
    # the lock does not pickle, and a copy needs its own
    def __getstate__(self) -> dict:
        return {"cap": self.cap, "used": self.used, "over": self.over}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
