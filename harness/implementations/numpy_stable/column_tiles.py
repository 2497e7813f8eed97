"""Rows longer than one tile: column tiles whose partial results are combined per row. Phase 1
(per tile: maxima, exponentials, sums), a combination per row, phase 2 (per tile: scale into
the gradient). The target-removed tail needs no maxima: its partial sums simply add up."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.implementations.numpy_stable.kernels import (
    apply_factor,
    logits_tile,
    max_and_exp,
    scale_rows,
    shifted_exp,
    store_grad,
    subtract_smoothing,
    target_coefficients,
)
from harness.implementations.numpy_stable.rounding import F64, MAX64
from harness.implementations.numpy_stable.rows import target_tail_usable
from harness.implementations.numpy_stable.sums import row_dot, row_sum, two_diff

if TYPE_CHECKING:
    from harness.implementations.numpy_stable.plan import Plan
    from harness.implementations.numpy_stable.state import RunState


def tiled_rows(plan: Plan, st: RunState, lo: int, hi: int, slot: int) -> None:
    K = plan.tiling.column_tiles
    for r0 in range(lo, hi, plan.tiling.block_rows):
        r1 = min(hi, r0 + plan.tiling.block_rows)
        if plan.target_removed:
            for j in range(K):
                target_removed_sums(plan, st, r0, r1, j, slot)
            if target_removed_combine(plan, st, r0, r1):
                if st.backward:
                    for j in range(K):
                        target_removed_scale(plan, st, r0, r1, j, slot)
                continue
            st.row.max_shifted[r0:r1] = True
        for j in range(K):
            max_shift_sums(plan, st, r0, r1, j, slot)
        max_shift_combine(plan, st, r0, r1)
        if st.backward:
            for j in range(K):
                max_shift_scale(plan, st, r0, r1, j, slot)


# -- the target-removed tail -------------------------------------------------------------------
def target_removed_sums(plan: Plan, st: RunState, r0, r1, j, slot) -> None:
    """Phase 1: the tile's sum of exp(x), its target entry (if in the tile) removed."""
    c0, c1 = plan.tiling.column_bounds[j]
    n = r1 - r0
    src = logits_tile(plan, r0, r1, c0, c1, slot)
    work = st.grad[r0:r1, c0:c1] if st.store_in_grad else plan.scratch.exps[slot][:n, : c1 - c0]
    np.exp(src, out=work)
    ys = st.coef.safe_targets[r0:r1]
    rows = np.nonzero((ys >= c0) & (ys < c1))[0]
    if rows.size:
        work[rows, ys[rows] - c0] = 0
    row_sum(work, st.tile.tail[r0:r1, j])


def target_removed_combine(plan: Plan, st: RunState, r0, r1) -> bool:
    """T_y = sum of the tiles' sums; the checks of whole_rows.target_removed_blocks, for the
    rows r0:r1 together (False: they are redone by the max shift)."""
    tile = st.tile
    ty = tile.tail[r0:r1].sum(axis=1, dtype=F64)
    tile.target_tail[r0:r1] = ty
    if not (np.maximum.reduce(tile.tail[r0:r1].reshape(-1)) <= plan.dtype_max):
        return False  # a tile's float32 sum overflowed
    ok, den = target_tail_usable(plan, st, ty, r0, r1, MAX64)
    if not ok.all():
        return False
    tile.denominator[r0:r1] = den
    return True


def target_removed_scale(plan: Plan, st: RunState, r0, r1, j, slot) -> None:
    """Phase 2: the tile's gradient entries softmax_coef e^{x_j} / (T_y + e_y)."""
    c0, c1 = plan.tiling.column_bounds[j]
    n = r1 - r0
    gt = st.grad[r0:r1, c0:c1]
    if st.store_in_grad:
        work = gt
    else:  # 16-bit input: recompute the exponentials in float32
        work = plan.scratch.exps[slot][:n, : c1 - c0]
        np.exp(logits_tile(plan, r0, r1, c0, c1, slot), out=work)
    apply_factor(plan, work, st.coef.softmax_coef[r0:r1], st.tile.denominator[r0:r1])
    if not st.store_in_grad:
        store_grad(plan, gt, work, slot)


# -- the max shift ---------------------------------------------------------------------------------
def max_shift_sums(plan: Plan, st: RunState, r0, r1, j, slot) -> None:
    """Phase 1: tile maxima, exponentials (stored in the gradient when possible), tail sums,
    dot products."""
    c0, c1 = plan.tiling.column_bounds[j]
    n = r1 - r0
    rows = plan.scratch.row_index[:n]
    tile = st.tile
    src = logits_tile(plan, r0, r1, c0, c1, slot)
    work = st.grad[r0:r1, c0:c1] if st.store_in_grad else plan.scratch.exps[slot][:n, : c1 - c0]
    # a tile of -inf is shifted by -max (exponentials 0) rather than by -inf (NaN)
    k, mk, dsh, shift = max_and_exp(plan, src, work, slot, floor=-plan.dtype_max)
    tile.argmax[r0:r1, j] = k
    tile.max[r0:r1, j] = mk
    tile.dot_shift[r0:r1, j] = dsh
    tile.shift[r0:r1, j] = 0.0 if shift is None else shift
    if plan.probability_targets or plan.smoothing > 0:
        d = plan.scratch.shifted[slot][:n, : c1 - c0]
        np.subtract(src, dsh[:, None], out=d)
        if plan.probability_targets:
            b = target_coefficients(plan, r0, r1, c0, c1, slot)
            row_sum(b, tile.b_sum[r0:r1, j])
            row_dot(d, b, tile.dots[r0:r1, j])
            tile.b_at_max[r0:r1, j] = b[rows, k]
        elif plan.weight is None:
            row_sum(d, tile.dots[r0:r1, j])
        else:
            row_dot(d, plan.weight[c0:c1], tile.dots[r0:r1, j])
    work[rows, k] = 0
    row_sum(work, tile.tail[r0:r1, j])


def max_shift_combine(plan: Plan, st: RunState, r0, r1) -> None:
    """m = max_j m_j; T = sum_j exp(shift_j - m) T_j + the other tiles' max entries."""
    n = r1 - r0
    tile, row = st.tile, st.row
    mk = tile.max[r0:r1].astype(F64)
    sh = tile.shift[r0:r1].astype(F64)
    m = mk.max(axis=1)
    jstar = mk.argmax(axis=1)
    # tile j's values are in units of exp(shift_j); exp(shift_j - m) may be subnormal (an
    # unshifted tile in a row whose max is huge), so it is applied as two halves h h, and
    # shift_j - m is taken exactly (TwoSum): exp(s + t) = exp(s) (1 + t)
    dif, err = two_diff(sh, m[:, None])
    h = np.exp(0.5 * dif) * (1.0 + 0.5 * err)
    ek = np.exp(mk - sh)  # each tile's removed max entry, in its own units
    u = (ek * h) * h
    u[np.arange(n), jstar] = 0.0
    T = ((tile.tail[r0:r1] * h) * h).sum(axis=1) + u.sum(axis=1) + (m - m)
    row.max[r0:r1] = m
    row.tail[r0:r1] = T
    if plan.probability_targets or plan.smoothing > 0:
        if plan.probability_targets:
            bk = tile.b_sum[r0:r1].astype(F64)
            row.b_sum[r0:r1] = bk.sum(axis=1)
            row.b_at_max[r0:r1] = tile.b_at_max[r0:r1][np.arange(n), jstar]
        else:
            bk = plan.tile_class_weight[None, :]
        dsh = tile.dot_shift[r0:r1].astype(F64)
        row.dots[r0:r1] = (tile.dots[r0:r1] + (dsh - m[:, None]) * bk).sum(axis=1)
    if st.backward:
        if plan.probability_targets:
            coef = st.coef.scale * row.b_sum[r0:r1]
        else:
            coef = st.coef.softmax_coef[r0:r1]
        tile.factor[r0:r1] = (coef / (1.0 + T))[:, None] * h  # the factor is factor * half
        tile.factor_half[r0:r1] = h
        tile.max_exp[r0:r1] = ek


def max_shift_scale(plan: Plan, st: RunState, r0, r1, j, slot) -> None:
    """Phase 2: scale the tile's exponentials into the gradient (target entries come later)."""
    c0, c1 = plan.tiling.column_bounds[j]
    n = r1 - r0
    rows = plan.scratch.row_index[:n]
    tile, coef = st.tile, st.coef
    fac, fh = tile.factor[r0:r1, j], tile.factor_half[r0:r1, j]
    gt = st.grad[r0:r1, c0:c1]
    if st.store_in_grad:
        work = gt
    else:  # 16-bit input: recompute the exponentials in float32
        work = plan.scratch.exps[slot][:n, : c1 - c0]
        src = logits_tile(plan, r0, r1, c0, c1, slot)
        sh = tile.shift[r0:r1, j]
        shifted_exp(plan, src, sh if sh.any() else None, work, slot)
    scale_rows(plan, work, fac, fh)
    k = tile.argmax[r0:r1, j]
    kval = (fac * tile.max_exp[r0:r1, j]) * fh  # the tile's max entry, zeroed in phase 1
    if plan.probability_targets:
        b = target_coefficients(plan, r0, r1, c0, c1, slot)
        bkl = b[rows, k].astype(F64)
        if coef.scale != 1.0:
            np.multiply(b, coef.scale, out=b)
        np.subtract(work, b, out=work)
        kval -= coef.scale * bkl
    elif plan.smoothing > 0:
        subtract_smoothing(plan, st, work, r0, r1, c0, c1)
        kval -= coef.beta[r0:r1] * plan.class_weights[c0 + k]
    work[rows, k] = kval
    if not st.store_in_grad:
        store_grad(plan, gt, work, slot)
