"""Row sums and dot products in SIMD chunks combined in float64; the exact difference TwoSum."""

from __future__ import annotations

import numpy as np

from harness.implementations.numpy_stable.rounding import F64

#: Row sums are taken by einsum over chunks of this many elements, combined in float64.
SUM_CHUNK = 4096

try:  # einsum's C entry point, without the Python wrapper (saves ~1.5 us a call)
    from numpy._core.multiarray import c_einsum as _c_einsum
except ImportError:  # pragma: no cover - other NumPy layouts
    _c_einsum = np.einsum


def row_sum(a: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j a[i, j] in a's dtype: einsum's SIMD sum, chunked and combined in float64
    beyond 8192 columns (a single einsum accumulates ~n/64 terms per lane)."""
    n = a.shape[1]
    if n <= 2 * SUM_CHUNK:
        _c_einsum("ij->i", a, out=out)
        return
    q, rem = divmod(n, SUM_CHUNK)
    parts = np.einsum("ijk->ij", a[:, : q * SUM_CHUNK].reshape(a.shape[0], q, SUM_CHUNK))
    total = parts.sum(axis=1, dtype=F64)
    if rem:
        total += np.einsum("ij->i", a[:, q * SUM_CHUNK :])
    out[...] = total


def row_dot(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j a[i, j] b[j] (b 1-D) or a[i, j] b[i, j] (b 2-D), chunked like row_sum."""
    spec = "ij,j->i" if b.ndim == 1 else "ij,ij->i"
    n = a.shape[1]
    if n <= 2 * SUM_CHUNK:
        _c_einsum(spec, a, b, out=out)
        return
    total = np.zeros(a.shape[0], dtype=F64)
    for lo in range(0, n, SUM_CHUNK):
        hi = min(n, lo + SUM_CHUNK)
        total += np.einsum(spec, a[:, lo:hi], b[lo:hi] if b.ndim == 1 else b[:, lo:hi])
    out[...] = total


def two_diff(a, b) -> tuple[np.ndarray, np.ndarray]:
    """s = fl(a - b) and its exact rounding error t = (a - b) - s (Knuth's TwoSum), float64;
    t is 0 where a or b is not finite."""
    a = np.asarray(a, F64)
    nb = -np.asarray(b, F64)
    s = a + nb
    bb = s - a
    t = (a - (s - bb)) + (nb - bb)
    return s, np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
