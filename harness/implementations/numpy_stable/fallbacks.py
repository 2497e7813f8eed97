"""Problems the fast path does not take: no samples or classes, or coefficients that are not
all finite."""

from __future__ import annotations

import numpy as np

from harness.implementations._degenerate import degenerate_result
from harness.implementations.numpy_stable.rounding import F64, round_to
from harness.problem import Problem


class EmptyPlan:
    """The plan of a problem with M = 0 samples or C = 0 classes: PyTorch's fixed results."""

    col_parallel = False

    def __init__(self, problem: Problem):
        self.problem = problem

    def run(self, backward: bool):
        loss, grad = degenerate_result(self.problem)
        return loss, (grad if backward else None)


class PyTorchChainPlan:
    """Problems whose coefficients are not all finite (a NaN or infinite class weight or
    probability target): the rearranged sums of the fast path (W log1p(T) - sum_c w_c d_c)
    would turn an infinite coefficient into inf - inf, so these follow PyTorch's own chain of
    operations in float64, whose inf/NaN pattern the contract is (docs/semantics.md):
    log p = log_softmax(x); the reduction of the (1 - eps) nll and (eps/C) smoothing parts; the
    gradient G with respect to log p, then G - p sum(G). Rare, unblocked, one thread."""

    col_parallel = False

    def __init__(self, problem: Problem):
        self.problem = problem

    def run(self, backward: bool):
        pr = self.problem
        with np.errstate(all="ignore"):
            loss, grad = self._compute(backward)
        loss = round_to(np.asarray(loss, F64).reshape(pr.output_shape), pr.dtype)
        if grad is not None:
            grad = pr.unrows(round_to(grad, pr.dtype))
        return loss, grad

    def _compute(self, backward: bool):
        pr = self.problem
        x, t = pr.rows()
        x = x.astype(F64)
        M, C = x.shape
        eps, red = pr.label_smoothing, pr.reduction
        w = np.ones(C) if pr.weight is None else pr.weight.astype(F64)
        # log_softmax: (x - m) - log1p(sum of the other exponentials), m a row max
        k = x.argmax(axis=1)
        m = x[np.arange(M), k]
        d = x - m[:, None]
        e = np.exp(d)
        e[np.arange(M), k] = 0.0
        lp = d - np.log1p(e.sum(axis=1))[:, None]
        p = np.exp(lp)
        G = np.zeros((M, C))
        if pr.probability_target:
            tp = t.astype(F64)
            if eps > 0:
                tp = tp * (1.0 - eps) + eps / C
            rows = -(lp * tp * w).sum(axis=1)
            if red == "none":
                loss = rows
            else:
                loss = rows.sum() / M if red == "mean" else rows.sum()
            s = 1.0 / M if red == "mean" else 1.0
            G = -(tp * w) * s
        else:
            kept = t != pr.ignore_index
            r = np.nonzero(kept)[0]
            y = t[r]
            wy = w[y]
            nll = np.zeros(M)
            nll[r] = -(wy * lp[r, y])
            if eps > 0:
                smooth = np.zeros(M)
                smooth[r] = -(lp[r] * w).sum(axis=1)
            W = wy.sum()
            if red == "none":
                loss = (1.0 - eps) * nll + smooth * (eps / C) if eps > 0 else nll
            else:
                total = nll.sum() / W if red == "mean" else nll.sum()
                if eps > 0:
                    sm = smooth.sum() / W if red == "mean" else smooth.sum()
                    total = (1.0 - eps) * total + sm * (eps / C)
                loss = total
            a = (1.0 - eps) / W if red == "mean" else 1.0 - eps
            G[r, y] = -(wy * a)
            if eps > 0:  # PyTorch's masked_fill backward gives the ignored rows 0 * w_j
                b = (eps / C) / W if red == "mean" else eps / C
                G += -(np.where(kept, b, 0.0)[:, None] * w)
        if not backward:
            return loss, None
        return loss, G - p * G.sum(axis=1, keepdims=True)


def nonfinite_coefficients(problem: Problem) -> bool:
    """A NaN or infinite class weight or probability target."""
    if problem.weight is not None and not np.isfinite(problem.weight.astype(F64)).all():
        return True
    return problem.probability_target and not np.isfinite(problem.target.astype(F64)).all()
