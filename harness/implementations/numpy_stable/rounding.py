"""Rounding between the compute dtype and the problem's dtype, each value rounded once."""

from __future__ import annotations

import ml_dtypes
import numpy as np

F64 = np.dtype(np.float64)
F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)


def round_to(values, dtype) -> np.ndarray:
    """Round float64 values once (to nearest even) into ``dtype``.

    NumPy rounds float64 -> float16/float32 correctly, but ml_dtypes converts float64 ->
    bfloat16 through float32, which double-rounds; for bfloat16 we round to float32 *to odd*
    first, after which the float32 -> bfloat16 rounding is correct.
    """
    values = np.asarray(values, dtype=F64)
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype != BF16:
            return values.astype(dtype)
        y = values.astype(np.float32)
        y64 = y.astype(F64)
        inexact = (y64 != values) & np.isfinite(y64) & np.isfinite(values)
        if inexact.any():
            toward_zero = np.where(np.abs(y64) > np.abs(values), np.nextafter(y, np.float32(0)), y)
            bits = np.asarray(toward_zero, np.float32).view(np.uint32)
            y = np.where(inexact, bits | np.uint32(1), y.view(np.uint32)).view(np.float32)
        return y.astype(BF16)


def _f32_to_f16(src: np.ndarray, out: np.ndarray, tmp: list[np.ndarray]) -> None:
    """out = src rounded to float16 (to nearest even), vectorized bit arithmetic after F.
    Giesen's float_to_half_fast3_rtne; bit for bit NumPy's cast, which is a scalar loop (2.5 ns
    an element) and 25 times slower still when results are subnormal (it signals underflow by
    computing one). ``tmp``: four uint32 arrays of src's shape."""
    u = src.view(np.uint32)
    sign = np.bitwise_and(u, np.uint32(0x80000000), out=tmp[0])
    a = np.bitwise_xor(u, sign, out=tmp[1])  # |src|
    res = np.right_shift(a, np.uint32(13), out=tmp[2])  # normal results: round, rebias
    res &= np.uint32(1)
    res += a
    res += np.uint32((-(112 << 23) + 0xFFF) & 0xFFFFFFFF)
    res >>= np.uint32(13)
    if np.minimum.reduce(a, axis=None) < np.uint32(113 << 23):  # subnormal or zero results
        sub = np.add(a.view(np.float32), np.float32(0.5), out=tmp[3].view(np.float32))
        sub = sub.view(np.uint32)
        sub -= np.uint32(126 << 23)
        np.copyto(res, sub, where=a < np.uint32(113 << 23))
    if np.maximum.reduce(a, axis=None) >= np.uint32(143 << 23):  # overflow, inf, NaN
        big = np.where(a > np.uint32(255 << 23), np.uint32(0x7E00), np.uint32(0x7C00))
        np.copyto(res, big, where=a >= np.uint32(143 << 23))
    sign >>= np.uint32(16)
    res |= sign
    np.copyto(out.view(np.uint16), res, casting="unsafe")


def to_float32(src: np.ndarray, out: np.ndarray) -> None:
    """out = src (float16 or bfloat16) in float32, exactly. (NumPy's float16 cast is a scalar
    loop, 1.7 ns an element, but it releases the GIL; a table lookup with np.take is a little
    faster alone and holds the GIL, which serializes the threads.)"""
    np.copyto(out, src, casting="unsafe")

TINY64 = float(np.finfo(np.float64).tiny)
MAX64 = float(np.finfo(np.float64).max)
