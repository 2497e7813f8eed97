"""The arrays of one run, shared by the worker threads (which write disjoint rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.implementations.numpy_stable.rounding import F64

if TYPE_CHECKING:
    from harness.implementations.numpy_stable.plan import Plan

Array = np.ndarray


@dataclass(slots=True)
class Coefficients:
    """Per-row coefficients; they depend on the targets only.

    Index targets: row loss alpha_n (-log p_y) + beta_n sum_c w_c (-log p_c), alpha_n =
    s (1 - eps) w_y, beta_n = s eps / C (both 0 on ignored rows; s = 1/sum w_y for 'mean',
    else 1), so the gradient row is softmax_coef_n p - a with softmax_coef_n = alpha_n +
    beta_n W. Probability targets: gradient row s (B_n p - b), s = 1/M for 'mean', else 1.
    """

    scale: float  # s
    valid: Array | None = None  # target != ignore_index
    all_valid: bool = False
    safe_targets: Array | None = None  # targets, 0 on ignored rows
    target_weight_raw: Array | None = None  # w_y, also on ignored rows
    target_weight: Array | None = None  # w_y, 0 on ignored rows
    weight_total: float | None = None  # sum_n w_{y_n} ('mean')
    torch_style_grad: bool = False  # 'mean' over zero total weight: PyTorch's NaN/inf pattern
    alpha: Array | None = None
    alpha_uniform: float = 0.0  # alpha of every row when uniform_rows
    uniform_rows: bool = False  # every row valid, no class weights, target-removed tail
    beta: Array | None = None
    beta_weights: Array | None = None  # beta w_c of the valid rows, in the compute dtype
    softmax_coef: Array | None = None  # the gradient's coefficient of p
    softmax_coef_max: float = 0.0


@dataclass(slots=True)
class RowResults:
    """Per-row quantities in float64, whatever the tiling."""

    max: Array  # m
    tail: Array  # T = sum_{j != k} exp(x_j - m)
    max_shifted: Array  # the row is done by the max shift (else by the target-removed tail)
    dots: Array | None = None  # sum_c w_c (x_c - m) or sum_c b_c (x_c - m)
    b_sum: Array | None = None  # B = sum_c b_c
    b_at_max: Array | None = None  # b_k
    target_logit: Array | None = None  # x_y
    target_exp: Array | None = None  # e_y = exp(x_y), target-removed tail
    target_exp_ok: Array | None = None  # e_y finite and normal, or x_y = -inf
    target_minus_max: Array | None = None  # x_y - m
    target_minus_max_err: Array | None = None  # its rounding error (float64 inputs)
    nll: Array | None = None  # -log p_y
    target_grad: Array | None = None  # the target entry of the gradient (target-removed tail)
    loss_target: Array | None = None  # w_y (-log p_y), 0 on ignored rows
    loss_smoothing: Array | None = None  # sum_c w_c (-log p_c), 0 on ignored rows
    loss_prob: Array | None = None  # per-row losses, probability targets


@dataclass(slots=True)
class WholeRowSums:
    """Blocks of whole rows (one column tile), in the compute dtype."""

    max: Array
    tail: Array  # in units of exp(shift)
    shift: Array  # the shift of each row's exponentials (0: unshifted)
    max_index: Array  # flat index of the max entry in the gradient
    dots: Array | None = None
    b_sum: Array | None = None
    b_at_max: Array | None = None


@dataclass(slots=True)
class TileSums:
    """Column tiles: one column per tile, combined per row afterwards."""

    target_tail: Array  # T_y, target-removed tail (float64)
    denominator: Array  # T_y + e_y (float64)
    max: Array  # tile maxima
    shift: Array  # shift used for the exponentials (0: unshifted)
    dot_shift: Array  # shift used for the dot products (the tile max, floored to be finite)
    tail: Array  # tile sums, the tile's max entry (or target entry) removed
    argmax: Array  # column of the tile max within the tile
    dots: Array | None = None
    b_sum: Array | None = None
    b_at_max: Array | None = None
    factor: Array | None = None  # the gradient's factor of a tile is factor * factor_half
    factor_half: Array | None = None  # exp((shift_j - m) / 2)
    max_exp: Array | None = None  # each tile's removed max entry, in its own units


@dataclass(slots=True)
class RunState:
    backward: bool
    grad: Array | None
    store_in_grad: bool  # the exponentials are written straight into the gradient
    coef: Coefficients
    row: RowResults
    block: WholeRowSums | None
    tile: TileSums | None


def new_state(plan: Plan, backward: bool) -> RunState:
    M, K, f = plan.rows, plan.tiling.column_tiles, plan.dtype
    prob, eps = plan.probability_targets, plan.smoothing
    dots = prob or eps > 0
    row = RowResults(
        max=np.empty(M, F64), tail=np.empty(M, F64),
        max_shifted=np.zeros(M, bool) if plan.target_removed else np.ones(M, bool),
    )
    if dots:
        row.dots = np.empty(M, F64)
    if prob:
        row.b_sum = np.empty(M, F64)
        row.b_at_max = np.empty(M, F64)
        row.loss_prob = np.empty(M, F64)
    else:
        row.target_logit = np.empty(M, F64)  # filled per chunk
        if plan.target_removed:
            row.target_exp = np.empty(M, F64)
            row.target_exp_ok = np.empty(M, bool)
        row.target_minus_max = np.empty(M, F64)
        row.target_minus_max_err = np.zeros(M, F64)
        row.nll = np.empty(M, F64)
        row.target_grad = np.empty(M, F64)
        row.loss_target = np.empty(M, F64)
        if eps > 0:
            row.loss_smoothing = np.empty(M, F64)
    block = tile = None
    if K == 1:
        block = WholeRowSums(
            max=np.empty(M, f), tail=np.empty(M, f), shift=np.zeros(M, f),
            max_index=np.empty(M, np.int64),
        )
        if dots:
            block.dots = np.empty(M, f)
        if prob:
            block.b_sum = np.empty(M, f)
            block.b_at_max = np.empty(M, f)
    else:
        tile = TileSums(
            target_tail=np.empty(M, F64), denominator=np.empty(M, F64),
            max=np.empty((M, K), f), shift=np.empty((M, K), f), dot_shift=np.empty((M, K), f),
            tail=np.empty((M, K), f), argmax=np.empty((M, K), np.int64),
        )
        if dots:
            tile.dots = np.empty((M, K), f)
        if prob:
            tile.b_sum = np.empty((M, K), f)
            tile.b_at_max = np.empty((M, K), f)
        if backward:
            tile.factor = np.empty((M, K), F64)
            tile.factor_half = np.empty((M, K), F64)
            tile.max_exp = np.empty((M, K), F64)
    return RunState(
        backward=backward,
        grad=np.empty((M, plan.classes), plan.input_dtype) if backward else None,
        store_in_grad=backward and not plan.converts,
        coef=coefficients(plan, backward), row=row, block=block, tile=tile,
    )


def coefficients(plan: Plan, backward: bool) -> Coefficients:
    M, C, eps = plan.rows, plan.classes, plan.smoothing
    if plan.probability_targets:
        return Coefficients(scale=(1.0 / M if M else np.nan) if plan.reduction == "mean" else 1.0)
    t = plan.targets
    valid = t != plan.ignore_index
    all_valid = bool(valid.all())
    tsafe = t if all_valid else np.where(valid, t, 0)
    if plan.weight64 is None:
        wy_raw = plan.ones
        wy = plan.ones if all_valid else valid.astype(F64)
    else:
        wy_raw = plan.weight64[tsafe]
        wy = wy_raw if all_valid else np.where(valid, wy_raw, 0.0)
    if plan.reduction == "mean":
        W = np.float64(M if all_valid and plan.weight64 is None else wy.sum())
        s = 1.0 / W
    else:
        W = None
        s = 1.0
    c = Coefficients(
        scale=s, valid=valid, all_valid=all_valid, safe_targets=tsafe, target_weight_raw=wy_raw,
        target_weight=wy, weight_total=W, torch_style_grad=backward and not np.isfinite(s),
    )
    c.alpha = (1.0 - eps) * s * wy
    c.uniform_rows = (
        all_valid and plan.weight64 is None and plan.target_removed and not c.torch_style_grad
    )
    c.alpha_uniform = (1.0 - eps) * s
    if eps > 0:
        c.beta = (eps / C) * s * valid
        c.softmax_coef = c.alpha + c.beta * plan.class_weight_total
        c.beta_weights = ((eps / C) * s * plan.class_weights).astype(plan.dtype)
    else:
        c.beta = None
        c.softmax_coef = c.alpha
    if plan.target_removed:
        if plan.weight64 is None:  # softmax_coef = alpha = (1 - eps) s on the valid rows
            c.softmax_coef_max = abs((1.0 - eps) * s) if M and valid.any() else 0.0
        else:
            c.softmax_coef_max = float(np.abs(c.softmax_coef).max()) if M else 0.0
    return c
