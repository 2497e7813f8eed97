"""PyTorch's results for a problem with nothing to compute: no sample (M = 0) or no class (C = 0).

Shared by the built-in implementations whose kernels assume M > 0 and C > 0 (their row
machinery takes logarithms of C, indexes the target class, launches grids of M rows). The values
are ``torch.nn.functional.cross_entropy``'s in float64 (see docs/semantics.md, "Shapes and
dtypes"; tests/test_contract.py checks them against torch):

* the gradient has M·C = 0 elements: it is the empty array of the logits' shape;
* index targets (with C = 0 every target is ignore_index): 'none' → 0 per sample, 'sum' → 0,
  'mean' → NaN (0/0); with label smoothing ε > 0 and C = 0, PyTorch multiplies the (zero)
  smoothing term by ε/C = +inf, so 'none' → NaN per sample and 'sum' → NaN;
* probability targets: 'none' → −0 per sample (minus an empty sum), 'sum' → −0, 'mean' → NaN
  (PyTorch divides by numel / C = 0/0, or fills NaN when numel = 0).
"""

from __future__ import annotations

import numpy as np

from harness.problem import Problem


def is_degenerate(problem: Problem) -> bool:
    return problem.num_samples == 0 or problem.num_classes == 0


def degenerate_result(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """(loss, gradient) of a problem with M·C = 0, in the logits' dtype."""
    if not is_degenerate(problem):
        raise ValueError("degenerate_result: the problem has samples and classes")
    if problem.probability_target:
        per, total = -0.0, -0.0
    elif problem.label_smoothing > 0 and problem.num_classes == 0:
        per, total = np.nan, np.nan  # (eps / C) * 0 = inf * 0
    else:
        per, total = 0.0, 0.0
    if problem.reduction == "none":
        loss = np.full(problem.sample_shape, per, dtype=np.float64)
    elif problem.reduction == "sum":
        loss = np.array(total, dtype=np.float64)
    else:
        loss = np.array(np.nan, dtype=np.float64)
    grad = np.zeros(problem.logits.shape, dtype=problem.dtype)
    return loss.astype(problem.dtype), grad
