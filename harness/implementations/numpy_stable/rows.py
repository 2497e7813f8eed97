"""Per-row results, vectorized over row ranges: the target logits, the losses, the gradient's
single entries (target and argmax) and the reduction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.implementations.numpy_stable.rounding import F64, MAX64, TINY64, round_to
from harness.implementations.numpy_stable.sums import two_diff

if TYPE_CHECKING:
    from harness.implementations.numpy_stable.plan import Plan
    from harness.implementations.numpy_stable.state import RunState


def target_logits(plan: Plan, st: RunState, lo: int, hi: int) -> None:
    """x_y and (target-removed tail) e_y = exp(x_y) of rows lo:hi, for column tiles (blocks
    of whole rows take x_y themselves, from the cached block)."""
    tiling = plan.tiling
    if plan.probability_targets or (tiling.column_tiles == 1 and not tiling.split_columns):
        return
    xt = st.row.target_logit[lo:hi]
    xt[...] = plan.logits_flat[plan.row_offsets[lo:hi] + st.coef.safe_targets[lo:hi]]
    if plan.target_removed:
        np.exp(xt, out=st.row.target_exp[lo:hi])
        check_target_exp(st, lo, hi)


def check_target_exp(st: RunState, lo: int, hi: int) -> None:
    """e_y usable as it is: finite, and normal unless x_y = -inf (then p_y = 0 exactly)."""
    ey = st.row.target_exp[lo:hi]
    minus_inf = st.row.target_logit[lo:hi] == -np.inf
    st.row.target_exp_ok[lo:hi] = (ey >= TINY64) & (ey <= MAX64) | minus_inf


def target_tail_usable(plan: Plan, st: RunState, ty, lo: int, hi: int, tail_max: float):
    """Rows lo:hi whose target-removed tail T_y stands (see
    whole_rows.target_removed_blocks): T_y in [C * tiny, tail_max], e_y usable, and T_y + e_y
    finite and at least the largest gradient coefficient. Returns the mask and T_y + e_y."""
    den = st.row.target_exp[lo:hi] + ty
    ok = (
        (ty >= plan.classes * plan.dtype_tiny) & (ty <= tail_max) & st.row.target_exp_ok[lo:hi]
        & (den >= st.coef.softmax_coef_max) & (den <= MAX64)
    )
    return ok, den


def finish_rows(plan: Plan, st: RunState, lo: int, hi: int) -> None:
    """Per-row results of rows lo:hi: max, tail, losses, and the gradient's single entries."""
    row, coef, prob = st.row, st.coef, plan.probability_targets
    whole = plan.tiling.column_tiles == 1
    max_shifted_rows = bool(row.max_shifted[lo:hi].any())
    if not max_shifted_rows and _finish_uniform_rows(plan, st, lo, hi):
        return
    if whole and max_shifted_rows:
        block = st.block
        m = block.max[lo:hi].astype(F64)
        row.max[lo:hi] = m
        # tail in units of exp(x - m); NaN where the max is +inf, NaN or -inf (then shift = m)
        np.multiply(block.tail[lo:hi], np.exp(block.shift[lo:hi] - m), out=row.tail[lo:hi])
        if prob or plan.smoothing > 0:
            row.dots[lo:hi] = block.dots[lo:hi]
        if prob:
            row.b_sum[lo:hi] = block.b_sum[lo:hi]
            row.b_at_max[lo:hi] = block.b_at_max[lo:hi]
    if not prob:
        shifted = row.max_shifted[lo:hi]
        if max_shifted_rows:
            # x_y - m = dt + err exactly (float64 inputs; for float32 and 16-bit, err = 0)
            if plan.dtype == F64:
                row.target_minus_max[lo:hi], row.target_minus_max_err[lo:hi] = two_diff(
                    row.target_logit[lo:hi], row.max[lo:hi]
                )
            else:
                np.subtract(
                    row.target_logit[lo:hi], row.max[lo:hi], out=row.target_minus_max[lo:hi]
                )
            lse = np.log1p(row.tail[lo:hi])  # log sum_j exp(x_j - m)
            # (m - x_y) + log1p(T)
            row.nll[lo:hi] = (lse - row.target_minus_max[lo:hi]) - row.target_minus_max_err[lo:hi]
        if not shifted.all():  # rows done by the target-removed tail
            ty = (st.block.tail if whole else st.tile.target_tail)[lo:hi].astype(F64)
            ey, xt = row.target_exp[lo:hi], row.target_logit[lo:hi]
            ratio = ty / ey
            # -log p_y = log1p(T_y / e_y); when e_y underflows (or x_y = -inf), log T_y - x_y
            nll = np.where(ratio < np.inf, np.log1p(ratio), np.log(ty) - xt)
            row.nll[lo:hi] = np.where(shifted, row.nll[lo:hi], nll) if shifted.any() else nll
            if st.backward:
                row.target_grad[lo:hi] = -coef.softmax_coef[lo:hi] * ty / (ty + ey) + 0.0
    if prob or plan.smoothing > 0:
        exact_dots(plan, st, lo, hi)
    row_losses(plan, st, lo, hi)
    if st.backward and not (not prob and coef.torch_style_grad):
        set_single_entries(plan, st, lo, hi)


def exact_dots(plan: Plan, st: RunState, lo: int, hi: int) -> None:
    """Redo, in float64, the dot products sum_c b_c (x_c - m) that overflowed in float32.

    The passes form d = x - m and its dot product in the compute dtype; for float32 (and
    16-bit) logits spanning more than the format's max (x in +-2.5e38: x - m down to -5e38) d
    or the sum is -inf although every term is finite, and W log1p(T) - dots turns the loss
    into inf where the exact loss is finite (with eps = 1e-240 and the target at the max,
    it is ~1e-202). A float64 d and sum cannot overflow here (|d| <= 2 * 3.4e38, C * |d| <<
    1.8e308) and are at least as accurate. Only rows with a finite max are redone: a -inf
    logit (d = -inf exactly) keeps its IEEE result, as the reference's. Rare, so unblocked."""
    if plan.dtype == F64:  # float64 logits spanning +-1e308 overflow alike: not handled (open)
        return
    row = st.row
    bad = ~np.isfinite(row.dots[lo:hi]) & np.isfinite(row.max[lo:hi])
    if not bad.any():
        return
    idx = lo + np.nonzero(bad)[0]
    d = plan.logits[idx].astype(F64) - row.max[idx][:, None]
    if plan.probability_targets:
        # b as kernels.target_coefficients forms it, in the compute dtype
        b = plan.targets[idx].astype(plan.dtype)
        if plan.smoothing > 0:
            f, eps = plan.dtype.type, plan.smoothing
            b = b * f(1.0 - eps) + f(eps / plan.classes)
        if plan.weight is not None:
            b = b * plan.weight
        d = d * b.astype(F64)
    elif plan.weight is not None:
        d = d * plan.weight.astype(F64)
    row.dots[idx] = d.sum(axis=1)


def _finish_uniform_rows(plan: Plan, st: RunState, lo: int, hi: int) -> bool:
    """finish_rows of rows all done by the target-removed tail, no weights, no ignored row, no
    underflowing e_y: the row loss is log1p(T_y / e_y) itself (four NumPy calls)."""
    if not st.coef.uniform_rows:
        return False
    ty = (st.block.tail if plan.tiling.column_tiles == 1 else st.tile.target_tail)[lo:hi]
    ey = st.row.target_exp[lo:hi]
    ratio = np.divide(ty, ey, dtype=F64)
    if not np.maximum.reduce(ratio) < np.inf:  # e_y underflowed (or x_y = -inf)
        return False
    np.log1p(ratio, out=st.row.loss_target[lo:hi])
    if st.backward:
        # p_y - 1 = -T_y / (T_y + e_y), times softmax_coef = (1 - eps) s on every row
        ratio += 1.0
        np.divide(-st.coef.alpha_uniform, ratio, out=ratio)  # -coef / (1 + T_y / e_y)
        ratio *= ty
        ratio /= ey
        set_target_entries(plan, st, lo, hi, ratio)
    return True


def set_single_entries(plan: Plan, st: RunState, lo: int, hi: int) -> None:
    """The argmax entries (one column tile) and, for index targets, the target entries
    p_y - 1 = -(T - expm1(x_y - m)) / (1 + T), free of cancellation, of rows lo:hi."""
    eps, row, coef = plan.smoothing, st.row, st.coef
    g = st.grad.reshape(-1)
    shifted = row.max_shifted[lo:hi]
    if not shifted.any():  # every row by the target-removed tail
        set_target_entries(plan, st, lo, hi, row.target_grad[lo:hi])
        return
    T, m = row.tail[lo:hi], row.max[lo:hi]
    inv = 1.0 / (1.0 + T)
    if plan.tiling.column_tiles == 1:
        ek = 1.0 + (m - m)  # e_k = 1, NaN on a non-finite row
        idx = st.block.max_index[lo:hi]
        if plan.probability_targets:
            kval = coef.scale * (row.b_sum[lo:hi] * inv * ek - row.b_at_max[lo:hi])
        else:
            kval = coef.softmax_coef[lo:hi] * inv * ek
            if eps > 0:
                kval -= coef.beta[lo:hi] * plan.class_weights[idx - plan.row_offsets[lo:hi]]
        if not shifted.all():
            g[idx[shifted]] = to_grad_dtype(plan, kval[shifted])
        else:
            g[idx] = to_grad_dtype(plan, kval)
    if plan.probability_targets:
        return
    dt, err = row.target_minus_max[lo:hi], row.target_minus_max_err[lo:hi]
    ey = np.exp(dt)
    gy = -coef.alpha[lo:hi] * (T - (np.expm1(dt) + ey * err)) * inv
    if eps > 0:
        gy += coef.beta[lo:hi] * (
            plan.class_weight_total * (ey + ey * err) * inv - coef.target_weight_raw[lo:hi]
        )
    gy += 0.0  # -0.0 -> 0.0 on ignored rows
    if not shifted.all():
        gy = np.where(shifted, gy, row.target_grad[lo:hi])
    set_target_entries(plan, st, lo, hi, gy)


def set_target_entries(plan: Plan, st: RunState, lo: int, hi: int, gy: np.ndarray) -> None:
    """The gradient's target entries of rows lo:hi (-0.0 made 0.0, as on ignored rows)."""
    gy += 0.0
    flat = plan.row_offsets[lo:hi] + st.coef.safe_targets[lo:hi]
    st.grad.reshape(-1)[flat] = to_grad_dtype(plan, gy)


def to_grad_dtype(plan: Plan, v: np.ndarray) -> np.ndarray:
    """float64 values into the gradient's dtype, rounded once."""
    return round_to(v, plan.input_dtype) if plan.converts else v.astype(plan.dtype)


def row_losses(plan: Plan, st: RunState, lo: int, hi: int) -> None:
    row = st.row
    if plan.probability_targets or plan.smoothing > 0:
        lse = np.log1p(row.tail[lo:hi])  # log sum_j exp(x_j - m)
    if plan.probability_targets:
        row.loss_prob[lo:hi] = row.b_sum[lo:hi] * lse - row.dots[lo:hi]  # sum_c b_c (lse - d_c)
        return
    valid = st.coef.valid[lo:hi]
    row.loss_target[lo:hi] = np.where(valid, st.coef.target_weight[lo:hi] * row.nll[lo:hi], 0.0)
    if plan.smoothing > 0:
        smoothing = plan.class_weight_total * lse - row.dots[lo:hi]
        row.loss_smoothing[lo:hi] = np.where(valid, smoothing, 0.0)


def reduce(plan: Plan, st: RunState) -> np.ndarray:
    """The reduction of the per-row losses, in float64, rounded once to the logits' dtype."""
    eps, C, red, row = plan.smoothing, plan.classes, plan.reduction, st.row
    if plan.probability_targets:
        out = row.loss_prob if red == "none" else row.loss_prob.sum() * st.coef.scale
    else:
        if red == "none":
            out = row.loss_target
            if eps > 0:
                out = (1.0 - eps) * row.loss_target + (eps / C) * row.loss_smoothing
        else:
            # Finite losses near the float64 maximum with weights of both signs: +inf and -inf
            # partial sums where the exact sum is finite. Then the sums are taken scaled by
            # 2^-64 (exact) and scaled back at the end (inf only if the result itself is).
            k = 0
            with np.errstate(over="ignore", invalid="ignore"):
                total = row.loss_target.sum()
                total_sm = row.loss_smoothing.sum() if eps > 0 else 0.0
            if not (np.isfinite(total) and np.isfinite(total_sm)) and np.isfinite(row.loss_target).all() \
                    and (eps == 0 or np.isfinite(row.loss_smoothing).all()):
                k = 64
                total = np.ldexp(row.loss_target, -k).sum()
                total_sm = np.ldexp(row.loss_smoothing, -k).sum() if eps > 0 else 0.0
            if red == "mean":
                total = total / st.coef.weight_total
                total_sm = total_sm / st.coef.weight_total
            out = (1.0 - eps) * total + (eps / C) * total_sm if eps > 0 else total
            if k:
                with np.errstate(over="ignore"):
                    out = np.ldexp(out, k)
    out = np.asarray(out, dtype=F64).reshape(plan.problem.output_shape)
    return round_to(out, plan.input_dtype)


def torch_style_grad(plan: Plan, st: RunState) -> np.ndarray:
    """PyTorch's autograd when the mean divides by a zero total weight: it backpropagates
    G = -((1-eps)/W) w_y onehot_y - ((eps/C)/W) w (valid rows) through log_softmax as
    G - p sum(G). Only used when sum_n w_{y_n} = 0, where the loss is NaN anyway."""
    M, C, eps = plan.rows, plan.classes, plan.smoothing
    x = plan.logits.astype(F64)
    m = x.max(axis=1, keepdims=True)
    p = np.exp(x - m) / np.exp(x - m).sum(axis=1, keepdims=True)
    G = np.zeros((M, C))
    W = st.coef.weight_total
    rows = np.nonzero(st.coef.valid)[0]
    G[rows, st.coef.safe_targets[rows]] = st.coef.target_weight_raw[rows] * -((1.0 - eps) / W)
    if eps > 0:
        G[rows] += -((eps / C) / W) * plan.class_weights
    grad = G - p * G.sum(axis=1, keepdims=True)
    return grad.astype(plan.input_dtype)
