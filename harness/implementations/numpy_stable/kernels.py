"""Numerical helpers shared by the passes over blocks of whole rows and over column tiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.implementations.numpy_stable.rounding import F16, F64, _f32_to_f16, to_float32

if TYPE_CHECKING:
    from harness.implementations.numpy_stable.plan import Plan
    from harness.implementations.numpy_stable.state import RunState


def row_shift(plan: Plan, m: np.ndarray) -> np.ndarray | None:
    """Per-row shift for the exponentials: 0 where exp(x) is safe and at least as accurate
    (0 <= m <= unshifted_limit), else m. None when every row of the block is unshifted."""
    lim = plan.unshifted_limit
    if np.minimum.reduce(m) >= 0.0 and np.maximum.reduce(m) <= lim:
        return None
    ok = (m >= 0.0) & (m <= lim)
    return np.where(ok, plan.dtype.type(0), m)


def max_and_exp(plan: Plan, src, w, slot: int, floor: float | None = None):
    """Row maxima and w = exp(src - shift); returns (column of the max, max, the value the
    shift is based on: the max, raised to ``floor`` if given, and the shift or None).

    The exponentials come first, unshifted, and the argmax is taken on them: they are
    writeable and cached, while the logits are read-only (Problem freezes them) and NumPy's
    argmax is twice as slow on read-only arrays. exp is monotonic, so this finds a k with
    e_k = max_j e_j, which is all the formulas need (a tie that rounding creates gives the
    same sums). When a row max lies outside [0, lim], the block takes the argmax of the
    logits themselves and redoes the exponentials with the shift (rare)."""
    rows = plan.scratch.row_index[: src.shape[0]]
    np.exp(src, out=w)
    k = w.argmax(axis=1)
    m = src[rows, k]
    base = m if floor is None else np.maximum(m, floor)
    shift = row_shift(plan, base)
    if shift is not None:
        k = src.argmax(axis=1)
        m = src[rows, k]
        base = m if floor is None else np.maximum(m, floor)
        shift = row_shift(plan, base)
        if shift is not None:
            shifted_exp(plan, src, shift, w, slot)
    return k, m, base, shift


def shifted_exp(plan: Plan, src, shift, w, slot: int) -> None:
    """w = exp(src - shift[:, None]) with the difference effectively exact: formed in float64
    for float32, and for float64 corrected by its exact rounding error t (TwoSum):
    exp(s + t) = exp(s) (1 + t)."""
    if shift is None:
        np.exp(src, out=w)
        return
    n, L = src.shape
    bufs = plan.scratch.float64_tmp[slot]
    if bufs is None:
        shape = plan.scratch.exps[slot].shape
        bufs = plan.scratch.float64_tmp[slot] = [np.empty(shape, F64) for _ in range(2)]
    if plan.dtype != F64:
        buf = bufs[0][:n, :L]
        np.subtract(src, shift.astype(F64)[:, None], out=buf)
        np.exp(buf, out=buf)
        np.copyto(w, buf, casting="same_kind")
        return
    a, b = src, -shift[:, None]
    bb, aa = bufs[0][:n, :L], bufs[1][:n, :L]
    np.add(a, b, out=w)  # s = fl(x - shift)
    np.subtract(w, a, out=bb)
    np.subtract(w, bb, out=aa)
    np.subtract(a, aa, out=aa)  # a - (s - bb)
    np.subtract(b, bb, out=bb)  # b - bb
    np.add(aa, bb, out=bb)  # t = (x - shift) - s exactly
    np.nan_to_num(bb, copy=False, nan=0.0)  # -inf logits: exp(s) = 0 needs no correction
    np.exp(w, out=w)
    np.multiply(w, bb, out=bb)
    np.add(w, bb, out=w)


def store_grad(plan: Plan, g: np.ndarray, w: np.ndarray, slot: int) -> None:
    """g = w (float32) rounded once into the 16-bit gradient."""
    if plan.input_dtype != F16:
        np.copyto(g, w, casting="unsafe")
        return
    tmp = plan.scratch.float16_tmp[slot]
    if tmp is None:
        size = plan.scratch.exps[slot].size
        tmp = plan.scratch.float16_tmp[slot] = [np.empty(size, np.uint32) for _ in range(4)]
    _f32_to_f16(w, g, [t[: w.size].reshape(w.shape) for t in tmp])


def apply_factor(plan: Plan, w: np.ndarray, coef: np.ndarray, den: np.ndarray) -> None:
    """w *= (coef / den)[:, None]; for float64 row sums near the top of the range, coef/den
    could be subnormal, so it is applied as the two normal factors coef/sqrt(den) and
    1/sqrt(den)."""
    if plan.dtype == F64 and np.maximum.reduce(den) > 2.0**500:
        sq = np.sqrt(den)
        scale_rows(plan, w, coef / sq, 1.0 / sq)
    else:
        scale_rows(plan, w, coef / den)


def scale_rows(plan: Plan, w: np.ndarray, r: np.ndarray, h: np.ndarray | None = None) -> None:
    """w *= (r h)[:, None] (float64 factors; h = 1 when None), in two steps when the
    factor is below the normal range of w's dtype (w may be large: unshifted exponentials)."""
    fac = r if h is None else r * h
    a = np.abs(fac)
    tiny = plan.dtype_tiny
    if not np.minimum.reduce(a) >= tiny and bool(((a < tiny) & (a > 0.0)).any()):
        if h is None:
            h = np.sqrt(np.abs(r))
            first = np.sign(r) * h
        else:
            first = r
        np.multiply(w, first.astype(plan.dtype)[:, None], out=w)
        np.multiply(w, h.astype(plan.dtype)[:, None], out=w)
    else:
        np.multiply(w, fac.astype(plan.dtype)[:, None], out=w)


def subtract_smoothing(plan: Plan, st: RunState, w, r0, r1, c0, c1) -> None:
    """w -= beta_n w_c on the valid rows (the eps/C part of the gradient's -a term)."""
    if st.coef.all_valid:
        np.subtract(w, st.coef.beta_weights[c0:c1], out=w)
    else:
        valid = st.coef.valid[r0:r1].astype(plan.dtype)
        np.subtract(w, np.multiply.outer(valid, st.coef.beta_weights[c0:c1]), out=w)


def target_coefficients(plan: Plan, r0, r1, c0, c1, slot):
    """b = w ((1 - eps) t + eps / C) on a probability-target tile, in the compute dtype."""
    tt = plan.targets[r0:r1, c0:c1]
    buf = plan.scratch.coefficients[slot]
    if buf is None:
        return tt
    b = buf[: r1 - r0, : c1 - c0]
    eps = plan.smoothing
    if plan.converts:
        to_float32(tt, b)
        if eps > 0:
            np.multiply(b, 1.0 - eps, out=b)
    elif eps > 0:
        np.multiply(tt, 1.0 - eps, out=b)
    else:
        np.copyto(b, tt)
    if eps > 0:
        np.add(b, eps / plan.classes, out=b)
    if plan.weight is not None:
        np.multiply(b, plan.weight[c0:c1], out=b)
    return b


def logits_tile(plan: Plan, r0, r1, c0, c1, slot):
    """The logits tile in the compute dtype (16-bit inputs converted into scratch)."""
    xs = plan.logits[r0:r1, c0:c1]
    if not plan.converts:
        return xs
    src = plan.scratch.converted[slot][: r1 - r0, : c1 - c0]
    to_float32(xs, src)
    return src
