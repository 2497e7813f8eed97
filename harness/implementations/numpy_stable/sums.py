"""Row sums and dot products in SIMD chunks combined in float64; the exact difference TwoSum."""

from __future__ import annotations

import numpy as np

from harness.implementations.numpy_stable.rounding import F64

#: Row sums are taken by einsum over chunks of this many elements, combined in float64. einsum
#: adds a contiguous run in a few SIMD lanes, and a float32 lane holding a dominant term (a
#: confident row: e^21 among terms near 1) absorbs every small term added to it, losing up to
#: half an ulp each: a single einsum over 1,000 such terms was 11 u off, over 8,192 (chunks of
#: 4096) 98 u, and gradient entries as far. Chunks of 128 keep it within ~2.6 u (measured on
#: 128 x 8192 rows with one term of 1.2e9) for ~35 us more per million logits, ~5 % of the
#: fused forward+backward (the exponentials alone take ~500 us).
SUM_CHUNK = 128

try:  # einsum's C entry point, without the Python wrapper (saves ~1.5 us a call)
    from numpy._core.multiarray import c_einsum as _c_einsum
except ImportError:  # pragma: no cover - other NumPy layouts
    _c_einsum = np.einsum


def _chunked(spec: str, a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The row sums of a (times b) as float64: chunk sums in a's dtype, combined in float64."""
    rows, n = a.shape
    q, rem = divmod(n, SUM_CHUNK)
    head = a[:, : q * SUM_CHUNK].reshape(rows, q, SUM_CHUNK)
    if b is None:
        parts = np.einsum("ijk->ij", head)
    elif b.ndim == 1:
        parts = np.einsum("ijk,jk->ij", head, b[: q * SUM_CHUNK].reshape(q, SUM_CHUNK))
    else:
        parts = np.einsum("ijk,ijk->ij", head, b[:, : q * SUM_CHUNK].reshape(rows, q, SUM_CHUNK))
    total = parts.sum(axis=1, dtype=F64)
    if rem:
        tail = a[:, q * SUM_CHUNK :]
        total += (np.einsum("ij->i", tail) if b is None
                  else np.einsum(spec, tail, b[q * SUM_CHUNK :] if b.ndim == 1 else b[:, q * SUM_CHUNK :]))
    return total


def row_sum(a: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j a[i, j]: einsum's SIMD sum in a's dtype, chunked and combined in float64
    beyond one chunk."""
    if a.shape[1] <= SUM_CHUNK:
        _c_einsum("ij->i", a, out=out)
    else:
        out[...] = _chunked("ij->i", a, None)


def row_dot(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j a[i, j] b[j] (b 1-D) or a[i, j] b[i, j] (b 2-D), chunked like row_sum."""
    spec = "ij,j->i" if b.ndim == 1 else "ij,ij->i"
    if a.shape[1] <= SUM_CHUNK:
        _c_einsum(spec, a, b, out=out)
    else:
        out[...] = _chunked(spec, a, b)


def two_diff(a, b) -> tuple[np.ndarray, np.ndarray]:
    """s = fl(a - b) and its exact rounding error t = (a - b) - s (Knuth's TwoSum), float64;
    t is 0 where a or b is not finite."""
    a = np.asarray(a, F64)
    nb = -np.asarray(b, F64)
    s = a + nb
    bb = s - a
    t = (a - (s - bb)) + (nb - bb)
    return s, np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
