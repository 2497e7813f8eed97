"""``numpy-naive``: a DELIBERATELY BROKEN canary, kept to prove the harness catches it.

It is the textbook softmax cross-entropy, computed in the logits' own dtype:

    p = exp(x) / sum(exp(x))          # no max shift: exp overflows for large logits
    loss = -w_y log p_y               # (plus the label-smoothing / probability-target terms)
    grad = p - onehot                 # scaled by the same per-row coefficients

Without the max shift, exp(x) overflows to inf as soon as a logit exceeds log(max) of the
format (about 88.7 in float32 and bfloat16, 709.8 in float64, 11.1 in float16), and then
p = inf / inf = NaN. It also loses every digit of a tiny loss (-log p_y with p_y rounded to 1)
and of the target gradient (p_y - 1 cancels). On small ordinary logits it is right, and it
implements every option of the contract (weights, ignore_index, label smoothing, probability
targets, K-dim, unbatched, reductions) with PyTorch's semantics, so that its failures are
exactly the numerical ones. Only the row sums of the 16-bit formats accumulate in float32
(their result is stored back in the 16-bit dtype), so ordinary problems stay near 1 ulp.
"""

from __future__ import annotations

import numpy as np

from harness.implementations._degenerate import degenerate_result, is_degenerate
from harness.problem import Problem
from harness.registry import Implementation


class NumpyNaive(Implementation):
    name = "numpy-naive"
    canary = True
    description = (
        "CANARY, deliberately broken: textbook softmax exp(x)/sum(exp(x)) without the max "
        "shift, in the input dtype; overflows to inf/NaN on large logits (e.g. 100 in float32)"
    )

    def _compute(self, problem: Problem, backward: bool):
        if is_degenerate(problem):  # no sample or no class (not part of the canary's bug)
            loss, grad = degenerate_result(problem)
            return loss, (grad if backward else None)
        dt = problem.dtype
        acc = np.float32 if dt.itemsize == 2 else dt
        x, t = problem.rows()
        M, C = x.shape
        eps = dt.type(problem.label_smoothing)
        one = dt.type(1.0)
        w = problem.weight if problem.weight is not None else np.ones(C, dt)
        with np.errstate(all="ignore"):
            e = np.exp(x)  # the bug: no max shift
            S = e.sum(axis=1, keepdims=True, dtype=acc).astype(dt)
            p = e / S
            logp = np.log(p)
            if problem.probability_target:
                tp = t * (one - eps) + eps / dt.type(C) if problem.label_smoothing else t
                b = tp * w
                rows = -(logp * b).sum(axis=1, dtype=acc).astype(dt)
                if problem.reduction == "none":
                    loss = rows
                else:
                    loss = rows.sum(dtype=acc).astype(dt)
                    if problem.reduction == "mean":
                        loss = (loss / dt.type(M)) if M else dt.type(np.nan)
                scale = (one / dt.type(M) if M else dt.type(0)) if problem.reduction == "mean" else one
                a = b * scale
            else:
                valid = t != problem.ignore_index
                ts = np.where(valid, t, 0)
                wy = np.where(valid, w[ts], dt.type(0))
                picked = logp[np.arange(M), ts]
                nll = np.where(valid, -picked * wy, dt.type(0))
                smooth = np.where(valid, -(logp * w).sum(axis=1, dtype=acc).astype(dt), dt.type(0))
                if problem.reduction == "none":
                    loss = nll
                    if problem.label_smoothing:
                        loss = (one - eps) * nll + eps / dt.type(C) * smooth
                    scale = one
                else:
                    total = nll.sum(dtype=acc).astype(dt)
                    total_sm = smooth.sum(dtype=acc).astype(dt)
                    scale = one
                    if problem.reduction == "mean":
                        denom = wy.sum(dtype=acc).astype(dt)
                        total, total_sm, scale = total / denom, total_sm / denom, one / denom
                    loss = total
                    if problem.label_smoothing:
                        loss = (one - eps) * total + eps / dt.type(C) * total_sm
                onehot = np.zeros((M, C), dt)
                onehot[np.arange(M), ts] = one
                a = (one - eps) * onehot * wy[:, None]
                if problem.label_smoothing:
                    a = a + (eps / dt.type(C)) * w[None, :] * valid[:, None].astype(dt)
                a = np.where(valid[:, None], a * scale, dt.type(0))  # ignored rows: exactly 0
            loss = np.asarray(loss, dtype=dt).reshape(problem.output_shape)
            if not backward:
                return loss, None
            asum = a.sum(axis=1, keepdims=True, dtype=acc).astype(dt)
            grad = asum * p - a  # = p - onehot for a plain index target
            return loss, problem.unrows(grad.astype(dt))

    def loss(self, problem: Problem) -> np.ndarray:
        return self._compute(problem, False)[0]

    def grad(self, problem: Problem) -> np.ndarray:
        return self._compute(problem, True)[1]

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        return self._compute(problem, True)  # one pass (16-bit NumPy arithmetic is slow)
