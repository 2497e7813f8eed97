"""Certifying what harness.reference returns, and stored double-doubles (the golden files)."""

from __future__ import annotations

import math

import numpy as np

from harness.certify.arb import MAX_PREC
from harness.certify.certificate import DD_FLOOR, GOOD_BITS, Report, Values, certify
from harness.formats import FORMATS
from harness.problem import Problem


def certify_reference(problem: Problem, *, rel_bits: float = GOOD_BITS, max_prec: int = MAX_PREC) -> Report:
    """Run ``harness.reference`` on ``problem`` through its public API and certify everything it
    returns: ``cross_entropy`` and ``cross_entropy_grad`` (mpf values), ``evaluate``'s
    double-doubles, and ``rounded_loss`` / ``rounded_grad`` in every format."""
    from harness import reference

    kw = problem.kwargs()
    loss = reference.cross_entropy(problem.logits, problem.target, **kw)
    grad = reference.cross_entropy_grad(problem.logits, problem.target, **kw)
    ex = reference.evaluate(problem)
    return certify(
        problem,
        loss_values=loss,
        grad_values=grad,
        rounded={name: (ex.rounded_loss(f.dtype), ex.rounded_grad(f.dtype)) for name, f in FORMATS.items()},
        values=[Values("evaluate.loss_hi+lo", "loss", (ex.loss_hi, ex.loss_lo), rel_bits, DD_FLOOR),
                Values("evaluate.grad_hi+lo", "grad", (ex.grad_hi, ex.grad_lo), rel_bits, DD_FLOOR)],
        rel_bits=rel_bits,
        max_prec=max_prec,
    )


def certify_double_double(problem: Problem, loss_hi, loss_lo, grad_hi, grad_lo, *, loss_str=None,
                          max_prec: int = MAX_PREC) -> Report:
    """Certify stored double-doubles (e.g. a golden file): hi + lo to 106 bits (+ DD_FLOOR), hi as
    the correctly rounded float64, the rounding of hi + lo to the other formats (what
    ``Exact.rounded_*`` and the metrics derive from them), and optional 40-digit loss strings
    (the reference's value to 106 bits, plus 10^-39 for the decimal rounding)."""
    from harness.metrics import round_to_format

    def rounded_from(hi, lo, fmt):
        if fmt.name == "float64":
            return np.asarray(hi, dtype=np.float64)
        return round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi))

    rounded = {name: (rounded_from(loss_hi, loss_lo, f), rounded_from(grad_hi, grad_lo, f)) for name, f in FORMATS.items()}
    values = [Values("loss_hi+lo", "loss", (loss_hi, loss_lo), GOOD_BITS, DD_FLOOR),
              Values("grad_hi+lo", "grad", (grad_hi, grad_lo), GOOD_BITS, DD_FLOOR)]
    if loss_str is not None:
        # The strings print the reference's value (>= 106 correct bits) to 40 digits.
        values.append(Values("loss_str", "loss", np.asarray(loss_str, dtype=object),
                             -math.log2(2.0**-GOOD_BITS + 1e-39), None))
    return certify(problem, rounded=rounded, values=values, max_prec=max_prec)
