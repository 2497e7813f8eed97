"""scipy: cross-entropy from ``scipy.special.log_softmax``, gradient from ``scipy.special.softmax``.

What a NumPy user writes with scipy: ``-log_softmax(x)[target]`` (class indices) or
``-(t * log_softmax(x)).sum()`` (probabilities), reduced with NumPy; the gradient is the
analytic ``softmax(x) * sum(t) - t`` (``softmax - onehot`` for indices), scaled by the
reduction. scipy has no class weights, ``ignore_index`` or label smoothing: those are declared
unsupported. scipy computes in the input's dtype, 16-bit ones included (every NumPy operation
on a float16 or ``ml_dtypes.bfloat16`` array rounds to it). ``log_softmax`` replaces a
non-finite row maximum by 0 before subtracting it.
"""

from __future__ import annotations

import numpy as np

from harness.zoo.base import LAYOUTS, REDUCTIONS, Adapter, class_last, output, per_sample, rows_back


class Scipy(Adapter):
    """scipy.special.log_softmax cross-entropy (class indices or probabilities), softmax gradient."""

    name = "scipy"
    description = "-scipy.special.log_softmax(x)[t] reduced by NumPy; gradient softmax(x)·Σt − t"
    library = "scipy"
    extra = "zoo-scipy"
    requires = ("scipy",)
    contract = "scipy"  # a +inf logit gives +inf (docs/contracts.md)
    features = REDUCTIONS | LAYOUTS | {"probability_target"}

    def _parts(self, problem):
        from scipy import special

        x, t = class_last(problem)
        logp = special.log_softmax(x, axis=-1)
        if problem.probability_target:
            nll = -(t * logp).sum(axis=-1)
        else:
            nll = -np.take_along_axis(logp, t[:, None], axis=-1)[:, 0]
        return x, t, nll

    def loss(self, problem):
        _, _, nll = self._parts(problem)
        if problem.reduction == "none":
            return output(problem, per_sample(problem, nll))
        with np.errstate(invalid="ignore", divide="ignore"):
            return output(problem, nll.sum() if problem.reduction == "sum" else nll.mean())

    def grad(self, problem):
        from scipy import special

        x, t = class_last(problem)
        p = special.softmax(x, axis=-1)
        if problem.probability_target:
            g = p * t.sum(axis=-1, keepdims=True) - t
        else:
            g = p.copy()
            g[np.arange(len(t)), t] -= 1
        if problem.reduction == "mean":
            g = g / x.shape[0] if x.shape[0] else g
        return output(problem, rows_back(problem, g))
