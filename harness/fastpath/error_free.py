"""Error-free transforms in double precision, compiled with numba: the fast pass's arithmetic.

Notation: u = 2^-53 (unit roundoff of RN), ulp(x) = 2^(floor(log2|x|) - 52),
RN(a op b) = (a op b)(1 + delta), |delta| <= u, and |RN(y) - y| <= ulp(y)/2 <= u|y|.
Additions and subtractions are exact whenever the result underflows, so "a + b" never has an
underflow error; products are only formed on values in the normal range except where noted.

Error-free transforms (never reassociated: every kernel is compiled with fastmath=False, and
LLVM does not contract a*b+c into an FMA without fastmath flags; the FMA below is explicit):
  TwoSum(a, b) = (s, t): s = RN(a + b), s + t = a + b exactly, |t| <= ulp(s)/2   (Knuth)
  Fast2Sum(a, b): same, needs |a| >= |b| or a == 0                              (Dekker)
  TwoProd(a, b) = (p, t): p = RN(ab), t = RN(ab - p) = ab - p exactly via FMA (llvm.fma.f64;
      Python 3.11's math has no fma, so it is an LLVM intrinsic), exact when ab does not underflow
      (|ab| >= 2^-969).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from harness.fastpath.jit import helper

__all__ = ["dd_add", "fast_two_sum", "fma", "from_bits", "pow2", "to_bits", "two_prod", "two_sum"]


# LLVM intrinsics: Python 3.11's math has no fma, and numba has no float <-> bits reinterpretation
@intrinsic
def fma(typingctx, a, b, c):
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(args[0], args[1], args[2])

    return sig, codegen


@intrinsic
def to_bits(typingctx, a):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def from_bits(typingctx, a):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@helper
def two_sum(a, b):
    """Knuth's TwoSum: (s, t) with s = RN(a+b) and s + t = a + b exactly."""
    s = a + b
    bb = s - a
    t = (a - (s - bb)) + (b - bb)
    return s, t


@helper
def fast_two_sum(a, b):
    """Dekker's Fast2Sum: exact like two_sum, requires |a| >= |b| (or a == 0)."""
    s = a + b
    t = b - (s - a)
    return s, t


@helper
def two_prod(a, b):
    """(p, t) with p = RN(ab), p + t = ab exactly (FMA; exact unless ab underflows)."""
    p = a * b
    return p, fma(a, b, -p)


@helper
def dd_add(ah, al, bh, bl):
    """Double-double sum (ah+al) + (bh+bl) -> (h, l), relative error <= 3u^2 for same signs."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


@helper
def pow2(n):
    """2^n as a double for -1022 <= n <= 1023."""
    return from_bits(np.int64(n + 1023) << 52)

