"""A deliberately wrong plugin whose error lives in one narrow interval of the input space:
our accurate NumPy implementation, except that in float32, for a row whose largest logit
exceeds the second largest by a gap in [87.0, 87.5] (around -log(tiny): where the float32
loss of a dominant target becomes subnormal, a plausible place for a special-case branch),
the row's loss is 0.01 too large and its target's gradient 0.01 too large — far outside
every budget. Anywhere else it is bit-identical to ``numpy``.

The fixed catalogue has no such row (tests/test_hunt.py checks that ``check`` passes it);
the hunt's structured family of dominant gaps near each format's thresholds finds it."""

from __future__ import annotations

import numpy as np

from harness.implementations.numpy_stable import NumpyStable

LO, HI = 87.0, 87.5
ERROR = 0.01


def in_window(x: np.ndarray) -> np.ndarray:
    """Per row of (N, C) float32 logits: is the top-two gap in [LO, HI]?"""
    if x.shape[-1] < 2:
        return np.zeros(x.shape[:-1], bool)
    top = np.sort(x.astype(np.float64), axis=-1)[..., -2:]
    with np.errstate(invalid="ignore"):  # inf - inf: not in the window
        gap = top[..., 1] - top[..., 0]
    return (gap >= LO) & (gap <= HI)


class NarrowBug(NumpyStable):
    name = "narrow-bug"
    description = "numpy, wrong by 0.01 when float32 rows have a top-two gap in [87, 87.5]"
    dtypes = frozenset({"float32"})
    features = frozenset({"reduction:none", "reduction:mean", "reduction:sum"})

    @staticmethod
    def _rows_hit(problem):
        x = problem.logits
        if x.dtype != np.float32 or x.ndim != 2:
            return None
        hit = in_window(x)
        return hit if hit.any() else None

    def _wrong(self, problem, y, g):
        hit = self._rows_hit(problem)
        if hit is None:
            return y, g
        if y is not None:
            y = np.array(y, np.float32)
            if problem.reduction == "none":
                y[hit] += np.float32(ERROR)
            else:
                y += np.float32(ERROR * (hit.mean() if problem.reduction == "mean" else hit.sum()))
        if g is not None:
            g = np.array(g, np.float32)
            rows = np.flatnonzero(hit)
            g[rows, np.asarray(problem.target)[rows]] += np.float32(ERROR)
        return y, g

    def loss_and_grad(self, problem):
        return self._wrong(problem, *super().loss_and_grad(problem))

    def loss(self, problem):
        return self._wrong(problem, super().loss(problem), None)[0]

    def grad(self, problem):
        return self._wrong(problem, None, super().grad(problem))[1]
