"""What every row of one problem shares besides its logits (:class:`_Setup`: exact weights,
their sum, the mean's exact denominator, the flags), built once per problem and sent to the
worker processes with each task (so it is a picklable dataclass)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gmpy2
import numpy as np
from gmpy2 import mpfr

from harness.problem import Problem
from harness.reference.arithmetic import _NAN, _ctx


@dataclass
class _Setup:
    """What every row needs besides its logits (picklable, sent once per worker task)."""

    C: int
    prec_in: int  # significand bits of the input format
    eps: float
    weight: list | None  # exact input floats
    wsum: object  # mpfr, exact sum of weights (for smoothing)
    denom: object  # mpfr exact denominator of the mean, or None for sum/none
    probability: bool
    ignore_index: int
    want_grad: bool
    keep: bool  # keep the MPFR gradient values (the public API), not only the double-doubles
    ieee: bool = False  # non-finite weights, or a zero-weight 'mean': torch's chain (_row_ieee)



def _setup(problem: Problem, want_grad: bool, keep: bool = False) -> _Setup:
    C = problem.num_classes
    fmt = problem.format
    w = None if problem.weight is None else problem.weight.astype(np.float64).tolist()
    # Exact sums of input floats: 4400 bits span float64's whole exponent range (and the
    # counts, < 2^63); the products count * w are formed in MPFR, never as Python floats.
    with _ctx(4400):
        wsum = gmpy2.fsum([mpfr(v) for v in w]) if w is not None and all(map(math.isfinite, w)) else (
            mpfr(C) if w is None else mpfr(_NAN))
        denom = None
        if problem.reduction == "mean":
            if problem.probability_target:
                denom = mpfr(problem.num_samples)
            else:
                _, t = problem.rows()
                kept = t[t != problem.ignore_index]
                if w is None:
                    denom = mpfr(int(kept.size))
                else:
                    counts = np.bincount(kept, minlength=C)
                    denom = gmpy2.fsum([mpfr(wc) * int(n) for n, wc in zip(counts.tolist(), w, strict=False) if n])
                    denom = denom + 0  # an exact 0 sum is +0 (IEEE round-to-nearest)
    return _Setup(
        C=C,
        prec_in=fmt.precision,
        eps=problem.label_smoothing,
        weight=w,
        wsum=wsum,
        denom=denom,
        probability=problem.probability_target,
        ignore_index=problem.ignore_index,
        want_grad=want_grad,
        keep=keep,
        ieee=(w is not None and not all(map(math.isfinite, w)))
        or (denom is not None and denom == 0 and not problem.probability_target),
    )
