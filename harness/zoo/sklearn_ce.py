"""scikit-learn: ``sklearn.metrics.log_loss`` of the softmax probabilities.

``log_loss(y_true, y_prob, labels=range(C), sample_weight=w[y], normalize=...)`` on
``scipy.special.softmax(x)`` (scipy is a dependency of scikit-learn): the metric a
scikit-learn user reports for a classifier's logits. ``normalize=True`` is
``np.average(losses, weights=sample_weight)`` = Σ w_y·l / Σ w_y, PyTorch's weighted 'mean';
``normalize=False`` is the weighted sum. It returns one number, so reduction 'none' is not
supported, and it has no gradient, ``ignore_index``, probability targets or label smoothing.
It clips the probabilities to ``[eps, 1 - eps]`` of their dtype (float16, float32 or float64), so
a loss is at most ``-log(eps)``, and returns a Python float, which the adapter rounds to the
logits' dtype. bfloat16 is not a NumPy dtype to scikit-learn's validation: unsupported.
"""

from __future__ import annotations

import numpy as np

from harness.zoo.base import LAYOUTS, Adapter, class_last, output


class SklearnLogLoss(Adapter):
    """sklearn.metrics.log_loss of scipy.special.softmax(logits): mean (weighted) or sum; no gradient."""

    name = "sklearn-log-loss"
    description = "sklearn.metrics.log_loss(y, scipy.special.softmax(x), sample_weight=w[y], normalize=mean)"
    library = "scikit-learn"
    extra = "zoo-sklearn"
    requires = ("sklearn", "scipy")
    features = LAYOUTS | {"weight", "reduction:mean", "reduction:sum"}
    #: scikit-learn's validation knows NumPy's dtypes only: an ml_dtypes.bfloat16 sample_weight
    #: raises "dtype argument must be a NumPy dtype"
    dtypes = frozenset({"float16", "float32", "float64"})

    def loss(self, problem):
        from scipy import special
        from sklearn.metrics import log_loss

        x, t = class_last(problem)
        w = None if problem.weight is None else problem.weight[t]
        p = special.softmax(x, axis=-1)
        value = log_loss(t, p, labels=np.arange(problem.num_classes), sample_weight=w,
                         normalize=problem.reduction == "mean")
        return output(problem, value)
