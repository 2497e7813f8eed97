"""Rows that fit one tile: blocks of whole rows, forward and backward fused. Per block:
exp -> (argmax) -> row sum -> (backward) scale into the gradient while the block is cached."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.implementations.numpy_stable.kernels import (
    apply_factor,
    logits_tile,
    max_and_exp,
    store_grad,
    subtract_smoothing,
    target_coefficients,
)
from harness.implementations.numpy_stable.rounding import F64
from harness.implementations.numpy_stable.rows import check_target_exp, target_tail_usable
from harness.implementations.numpy_stable.sums import row_dot, row_sum

if TYPE_CHECKING:
    from harness.implementations.numpy_stable.plan import Plan
    from harness.implementations.numpy_stable.state import RunState


def target_removed_blocks(plan: Plan, st: RunState, lo: int, hi: int, slot: int):
    """Index targets without smoothing, no argmax pass: w = exp(x) unshifted, the *target*
    entry removed, T_y = sum_{j != y} e^{x_j}; then -log p_y = log1p(T_y / e_y) and
    p_y - 1 = -T_y / (T_y + e_y), both free of cancellation (see rows.finish_rows), and every
    other gradient entry is softmax_coef e^{x_j} / (T_y + e_y). Four NumPy calls per block
    (exp, the target's index, its removal, the row sum), two more and a multiply for the
    gradient.

    The result of a row stands only if T_y is finite (no overflow) and at least C * tiny (a
    subnormal e^{x_j} then costs less than an ulp of T_y), e_y is finite and normal (or 0
    from x_y = -inf), and T_y + e_y >= softmax_coef (a subnormal e^{x_j} then costs under half
    an ulp of its gradient entry): then these unshifted values lose nothing against
    exp(x - m). That is checked once for the rows lo:hi (the same in the forward and the
    backward, so both take the same method and give the same bits); the blocks of rows that
    fail are returned, to be redone by the max shift."""
    C, B = plan.classes, plan.tiling.block_rows
    scratch = plan.scratch
    row_starts, flat_index, exps = scratch.row_starts, scratch.flat_index[slot], scratch.exps[slot]
    backward, store = st.backward, st.store_in_grad
    row, coef = st.row, st.coef
    tsafe, tail, xt = coef.safe_targets, st.block.tail, row.target_logit
    for r0 in range(lo, hi, B):
        r1 = min(hi, r0 + B)
        n = r1 - r0
        src = logits_tile(plan, r0, r1, 0, C, slot)
        w = st.grad[r0:r1] if store else exps[:n]
        np.exp(src, out=w)
        ly = np.add(row_starts[:n], tsafe[r0:r1], out=flat_index[:n])
        xt[r0:r1] = src.reshape(-1)[ly]  # x_y, while the block is in cache
        w.reshape(-1)[ly] = 0
        row_sum(w, tail[r0:r1])
        if backward:
            ey = np.exp(xt[r0:r1], out=row.target_exp[r0:r1])
            den = np.add(ey, tail[r0:r1])  # sum_j e^{x_j}
            apply_factor(plan, w, coef.softmax_coef[r0:r1], den)
            if not store:
                store_grad(plan, st.grad[r0:r1], w, slot)
    if not backward:
        np.exp(xt[lo:hi], out=row.target_exp[lo:hi])
    check_target_exp(st, lo, hi)
    ok, _ = target_tail_usable(plan, st, tail[lo:hi], lo, hi, plan.dtype_max)
    if ok.all():
        return []
    bad = np.unique(np.nonzero(~ok)[0] // B)
    return [(lo + b * B, min(hi, lo + (b + 1) * B)) for b in bad.tolist()]


def whole_rows(plan: Plan, st: RunState, lo: int, hi: int, slot: int) -> None:
    """Rows lo:hi; the argmax and target entries of the gradient are set in rows.finish_rows."""
    C, B = plan.classes, plan.tiling.block_rows
    prob, eps = plan.probability_targets, plan.smoothing
    backward, store = st.backward, st.store_in_grad
    dots = prob or eps > 0
    scratch, row, block, coef = plan.scratch, st.row, st.block, st.coef
    exps, flat_index, row_starts = scratch.exps[slot], scratch.flat_index[slot], scratch.row_starts
    if plan.target_removed:
        blocks = target_removed_blocks(plan, st, lo, hi, slot)  # those left to the max shift
    else:
        blocks = [(r0, min(hi, r0 + B)) for r0 in range(lo, hi, B)]
    for r0, r1 in blocks:
        n = r1 - r0
        src = logits_tile(plan, r0, r1, 0, C, slot)
        w = st.grad[r0:r1] if store else exps[:n]
        row.max_shifted[r0:r1] = True
        if not prob:  # x_y, while the block is in cache
            row.target_logit[r0:r1] = src.reshape(-1)[row_starts[:n] + coef.safe_targets[r0:r1]]
        k, m, _, shift = max_and_exp(plan, src, w, slot)
        loc = np.add(row_starts[:n], k, out=flat_index[:n])
        block.max[r0:r1] = m
        if dots:
            d = scratch.shifted[slot][:n]
            np.subtract(src, m[:, None], out=d)  # d = x - m <= 0, for the dot products
            if prob:
                b = target_coefficients(plan, r0, r1, 0, C, slot)
                row_sum(b, block.b_sum[r0:r1])
                row_dot(d, b, block.dots[r0:r1])
                block.b_at_max[r0:r1] = b.reshape(-1)[loc]
            elif plan.weight is None:
                row_sum(d, block.dots[r0:r1])
            else:
                row_dot(d, plan.weight, block.dots[r0:r1])
        w.reshape(-1)[loc] = 0  # remove the max entry: the row sum is the tail T
        tail = block.tail[r0:r1]
        row_sum(w, tail)
        if shift is not None:
            block.shift[r0:r1] = shift
        if not backward:
            continue
        # scale the block into the gradient now, while it is cached
        np.add(loc, r0 * C, out=block.max_index[r0:r1])
        # row factor coef / sum_j exp(x_j - shift), the removed max entry being exp(m - shift)
        if shift is None:
            den = np.exp(m, dtype=F64)
        else:
            den = np.exp(np.subtract(m, shift, dtype=F64))  # 1, or NaN on non-finite rows
        den += tail
        factor = coef.scale * block.b_sum[r0:r1] if prob else coef.softmax_coef[r0:r1]
        apply_factor(plan, w, factor, den)
        if prob:
            if coef.scale != 1.0:  # then b is scratch (see plan._scratch, needs_b)
                np.multiply(b, coef.scale, out=b)
            np.subtract(w, b, out=w)
        elif eps > 0:
            subtract_smoothing(plan, st, w, r0, r1, 0, C)
        if not store:
            store_grad(plan, st.grad[r0:r1], w, slot)
