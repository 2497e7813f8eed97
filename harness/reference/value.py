"""One reference value as head + tail (:class:`_Value`), and the two decisions made on a single
value: a tail below MPFR's range (:func:`_deep_value`) and a value on a rounding boundary
(:func:`_sticky`), decided from the exact head and the tail's sign instead of more bits."""

from __future__ import annotations

from dataclasses import dataclass

import gmpy2
import mpmath
from gmpy2 import mpfr

from harness.reference.arithmetic import GOOD_BITS, _ctx


@dataclass
class _Value:
    """One value as head + tail. ``head`` is built from the inputs by +, -, * (and one division
    by the mean's denominator): exact when ``head_exact``. ``tail`` carries every exp/log1p and
    has a known sign; ``bound`` bounds |(head + tail) - true| for ``value`` = RN(head + tail)."""

    value: object
    bound: object
    head: object
    head_exact: bool
    tail: object
    tail_err: object
    tail_sign: int = 0  # the sign of a tail too small for MPFR's exponent range (tail == 0)



def _deep_value(v: _Value, tail: mpmath.mpf, prec: int) -> _Value:
    """A value whose tail is below MPFR's range: the tail itself (mpmath) when the head is 0,
    else the head with the tail's sign kept for :func:`_sticky`. The tail is a product of at most
    four correctly rounded factors and an mpmath exp (< 2 ulp): relative error < 16 u."""
    if tail == 0:
        return v
    sign = 1 if tail > 0 else -1
    if v.head == 0:
        with mpmath.workprec(prec):
            b = abs(tail) * mpmath.mpf(2) ** (4 - prec)
        return _Value(tail, b, v.head, v.head_exact, mpfr(0), mpfr(0), sign)
    return _Value(v.head if v.head_exact else v.value, v.bound, v.head, v.head_exact, mpfr(0), mpfr(0), sign)


def _sticky(v: _Value, prec: int) -> _Value | None:
    """Decide a value that sits on a rounding boundary to within 2^-prec: when its head is an
    exact dyadic number and its tail is nonzero with a known sign, the true value is head plus
    a tail far below the head's last bit. Return head ± 2^(e_head - P), P two bits past the
    head's precision: it lies on the tail's side of head and strictly nearer head than any
    other dyadic boundary of <= 54 bits, so it rounds to every format exactly as the true value
    does (float16 [0x1.f42p+9, 0], target 1: 1000.25 + e^-1000.25 rounds up to 1000.5)."""
    H, T = v.head, v.tail
    if not v.head_exact or not isinstance(H, mpfr) or not gmpy2.is_finite(H) or H == 0:
        return None
    if isinstance(T, mpfr) and T != 0:
        if not abs(T) > v.tail_err:
            return None  # the tail's sign is not known
        sign = 1 if T > 0 else -1
    elif v.tail_sign:
        sign = v.tail_sign  # a tail below MPFR's range (e^-1e9): known sign, negligible size
    else:
        return None
    man, _ = H.as_mantissa_exp()
    bits = int(man).bit_length() - gmpy2.bit_scan1(gmpy2.mpz(abs(int(man))))  # significant bits
    P = max(bits, GOOD_BITS + 2) + 2
    eh = gmpy2.get_exp(H)  # H = f 2^eh, 1/2 <= |f| < 1
    with _ctx(P + 4):
        step = gmpy2.mul_2exp(mpfr(1), eh - P)
        if isinstance(T, mpfr) and not abs(T) + v.tail_err < step:
            return None  # the tail is not below the head's grid: not a boundary case
        z = H + sign * step  # exact at P + 4 bits
        return _Value(z, 2 * step, H, True, T, v.tail_err, v.tail_sign)


def _plus_zero(v, bound):
    """An exact zero is +0: the true value 0 has no sign (IEEE's exact zero sums are +0 too)."""
    return mpfr(0) if isinstance(v, mpfr) and v == 0 and bound == 0 else v
