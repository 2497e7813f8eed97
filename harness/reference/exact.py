"""The reference's result for one problem: :class:`Exact`, double-double views of the loss and
gradient with their rigorous bounds (and the MPFR values of record when kept)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.formats import FORMATS
from harness.reference.arithmetic import START_BITS


@dataclass
class Exact:
    """Reference values of one problem as double-doubles: value = hi + lo, hi = RN_float64(value).

    ``loss_hi``/``loss_lo`` have ``problem.output_shape``; ``grad_hi``/``grad_lo`` the logits'
    shape (None when not requested). ``bits`` is the largest working precision used.
    """

    loss_hi: np.ndarray
    loss_lo: np.ndarray
    grad_hi: np.ndarray | None = None
    grad_lo: np.ndarray | None = None
    bits: int = START_BITS
    unresolved: int = 0
    loss_mpfr: list = field(default_factory=list, repr=False)
    grad_mpfr: list | None = field(default=None, repr=False)
    #: Rigorous upper bounds on |value of record - true value| (float64, rounded up by at most
    #: one ulp): the loss's (output shape) and the gradient's (logits' shape).
    loss_bound: np.ndarray | None = field(default=None, repr=False)
    grad_bound: np.ndarray | None = field(default=None, repr=False)

    def pair(self, quantity: str) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) of the 'loss' or the 'grad'."""
        if quantity == "loss":
            return self.loss_hi, self.loss_lo
        if quantity == "grad":
            if self.grad_hi is None:
                raise ValueError("this reference was computed without the gradient")
            return self.grad_hi, self.grad_lo
        raise ValueError(f"quantity must be 'loss' or 'grad', not {quantity!r}")

    def rounded(self, quantity: str, dtype) -> np.ndarray:
        """The loss or gradient correctly rounded to ``dtype`` (float16, bfloat16, float32,
        float64), by :func:`harness.metrics.round_to_format` (the one round-to-format)."""
        from harness.metrics import round_to_format

        hi, lo = self.pair(quantity)
        fmt = FORMATS[np.dtype(dtype).name]
        return round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi))

    def rounded_loss(self, dtype) -> np.ndarray:
        """The loss correctly rounded to ``dtype``."""
        return self.rounded("loss", dtype)

    def rounded_grad(self, dtype) -> np.ndarray:
        """The gradient correctly rounded to ``dtype``."""
        return self.rounded("grad", dtype)
