"""Exact values of the oracle: a rational plus an optional ball, the exact rational of a float."""

from __future__ import annotations

from dataclasses import dataclass

from harness.certify.arb import load_flint


@dataclass(frozen=True)
class RationalBall:
    """A finite value r + b: r an exact rational (fmpq), b a ball (arb) or None (the value is r)."""

    r: object
    b: object | None = None

    @property
    def exact(self) -> bool:
        return self.b is None

    def scaled(self, c, prec: int) -> RationalBall:
        if self.b is None:
            return RationalBall(self.r * c)
        with load_flint().ctx.workprec(prec):
            return RationalBall(self.r * c, self.b * c)

    def ball(self, prec: int):
        fl = load_flint()
        with fl.ctx.workprec(prec):
            return fl.arb(self.r) if self.b is None else fl.arb(self.r) + self.b


#: A finite value whose sign was needed (division by +0) but is not decided at this precision.
PENDING = "pending"


def rational(v: float):
    """The exact rational of a finite float."""
    fl = load_flint()
    n, d = float(v).as_integer_ratio()
    return fl.fmpq(n, d)
