"""The arithmetic every part of the reference shares: the working precisions of the Ziv loop, the
MPFR context with MPFR's whole exponent range, and exact conversions to mpmath (whose exponents
are unbounded: it carries the terms that fall below MPFR's range, and the public API's values).
"""

from __future__ import annotations

import gmpy2
import mpmath
import numpy as np
from gmpy2 import mpfr

#: First working precision of the Ziv loop (bits).
START_BITS = 128
#: Precision cap. Past it a value is returned as computed and counted in ``Exact.unresolved``.
MAX_BITS = 1280
#: Correct bits every returned value carries (so fractional float64 ULP errors are meaningful).
GOOD_BITS = 106

_NAN = float("nan")


def _ctx(prec: int):
    """A context at ``prec`` bits with MPFR's whole exponent range, so that losses like
    e^-2e9 (float32 [0, -2e9]) and 1e308-weighted sums keep their value instead of flushing."""
    return gmpy2.context(gmpy2.get_context(), precision=prec, emin=gmpy2.get_emin_min(),
                         emax=gmpy2.get_emax_max(), subnormalize=False, trap_divzero=False,
                         trap_invalid=False, trap_overflow=False, trap_underflow=False)


def _signed_man_exp(v: mpmath.mpf) -> tuple[int, int]:
    """v = man * 2^exp exactly (mpf.man is the unsigned mantissa; the sign is kept apart)."""
    sign, man, exp, _ = v._mpf_
    return (-int(man) if sign else int(man)), int(exp)


def _mpf(v) -> mpmath.mpf:
    if isinstance(v, mpmath.mpf):
        return v
    with mpmath.workprec(max(v.precision, 53) + 8):
        return _to_mpf(v)


def _to_mpf(v) -> mpmath.mpf:
    if isinstance(v, mpmath.mpf):
        return +v
    if gmpy2.is_nan(v):
        return mpmath.mpf("nan")
    if gmpy2.is_infinite(v):
        return mpmath.mpf("inf") if v > 0 else mpmath.mpf("-inf")
    man, exp = v.as_mantissa_exp()
    return mpmath.mpf((int(man), int(exp)))  # exact under the caller's workprec (see _to_mpf_array)


def _to_mpf_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    # mpf() rounds to the working precision, so build the values at more bits than they have.
    bits = max([v.precision if isinstance(v, mpfr) else int(v.man).bit_length() for v in values
                if not isinstance(v, mpfr) or gmpy2.is_finite(v)], default=53)
    with mpmath.workprec(bits + 64):
        out[:] = [_to_mpf(v) for v in values]
    return out
