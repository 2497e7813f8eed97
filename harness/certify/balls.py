"""The oracle's loss and gradient as arb balls (public API for tests and tools)."""

from __future__ import annotations

import numpy as np

from harness.certify.arb import START_PREC
from harness.certify.exact import PENDING
from harness.certify.ieee_classes import is_special
from harness.certify.oracle import Oracle
from harness.problem import Problem


def _as_ball(v, prec: int):
    if is_special(v):
        return v
    if v is PENDING:
        return None
    return v.ball(prec)


def loss_balls(problem: Problem, prec: int = START_PREC) -> list:
    """The loss as arb balls at ``prec`` bits: one per sample for 'none' (in ``problem.rows()``
    order), one element otherwise. Non-finite results are Python floats (inf, -inf, nan); None
    marks the rare ±inf whose sign (a nonzero numerator over +0) this precision cannot decide."""
    return [_as_ball(v, prec) for v in Oracle(problem).losses(prec)]


def grad_balls(problem: Problem, prec: int = START_PREC) -> np.ndarray:
    """d(loss)/d(logits) (for 'none': of the sum) as an (M, C) object array of arb balls in
    ``problem.rows()`` order; non-finite entries are Python floats."""
    o = Oracle(problem)
    out = np.empty((o.M, o.C), dtype=object)
    for n in range(o.M):
        out[n] = [_as_ball(v, prec) for v in o.grad_row(n, prec)]
    return out
