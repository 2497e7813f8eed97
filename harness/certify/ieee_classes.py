"""IEEE classes ("extended signs"): the explicit special-value rules of products and sums.

A quantity in PyTorch's expression is represented here by its IEEE class: a float NaN/±inf, an
int sign (-1, 0, +1) for a finite value whose sign (and exact zero-ness) is known, or FINITE for a
finite value of unknown sign. The finite values themselves are computed separately, exactly.
"""

from __future__ import annotations

import math

_INF = math.inf
_NAN = math.nan

FINITE = "finite"


def is_special(v) -> bool:
    """Whether a class is a NaN or an infinity (the only classes that are floats)."""
    return isinstance(v, float)


def ieee_mul(*factors):
    """IEEE product class: NaN beats all; inf times an exact zero is NaN; else the sign rule."""
    if any(is_special(f) and math.isnan(f) for f in factors):
        return _NAN
    infinite = any(is_special(f) for f in factors)
    if infinite:
        if any(f == 0 for f in factors if not is_special(f) and f is not FINITE):
            return _NAN
        # Every finite factor multiplied by an infinity has a known sign by construction.
        assert all(f is not FINITE for f in factors), "sign of a finite factor of an infinity unknown"
        sign = 1
        for f in factors:
            sign *= 1 if f > 0 else -1
        return _INF if sign > 0 else -_INF
    if any(f == 0 for f in factors if f is not FINITE):
        return 0  # an exact zero times finite values is an exact zero
    if any(f is FINITE for f in factors):
        return FINITE
    sign = 1
    for f in factors:
        sign *= f
    return sign


def ieee_add(*terms):
    """IEEE sum class: NaN if NaN or +inf and -inf meet; else the infinity; else finite."""
    specials = [t for t in terms if is_special(t)]
    if specials:
        if any(math.isnan(t) for t in specials) or (_INF in specials and -_INF in specials):
            return _NAN
        return specials[0]
    if any(t is FINITE for t in terms):
        return FINITE
    if all(t >= 0 for t in terms):
        return 1 if any(t > 0 for t in terms) else 0
    if all(t <= 0 for t in terms):
        return -1
    return FINITE


def ieee_neg(v):
    """The class of -v."""
    if is_special(v):
        return -v
    return FINITE if v is FINITE else -v


def exact_sign(q) -> int:
    """-1, 0 or +1: the sign of an exact (finite) value."""
    return (q > 0) - (q < 0)


def ieee_class(v):
    """IEEE class of an input value: the float itself when special, else its exact sign."""
    return v if not math.isfinite(v) else exact_sign(v)
