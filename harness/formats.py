"""The four floating-point output formats the harness measures, and their parameters.

A format is IEEE-style binary floating point with ``precision`` significand bits (hidden bit
included) and normal exponents in [emin, emax]. The ULP of a value in the format is
2**(max(e, emin) - precision + 1) where e is the value's binary exponent, so every subnormal
has ULP 2**(emin - precision + 1) (Zimmermann's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class Format:
    name: str
    precision: int  # significand bits, hidden bit included
    emin: int  # smallest normal exponent
    emax: int  # largest exponent

    @property
    def dtype(self) -> np.dtype:
        return _numpy_dtype(self.name)

    @property
    def max(self) -> float:
        """Largest finite value."""
        # exact: (2 - 2**(1-p)) * 2**emax
        return (2.0 - 2.0 ** (1 - self.precision)) * 2.0**self.emax

    @property
    def tiny(self) -> float:
        """Smallest positive normal value."""
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.precision + 1)

    @property
    def exp_overflow(self) -> float:
        """log(max): exp(x) overflows to inf for x just above this."""
        return float(np.log(self.max))

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize


FORMATS: dict[str, Format] = {
    "float16": Format("float16", 11, -14, 15),
    "bfloat16": Format("bfloat16", 8, -126, 127),
    "float32": Format("float32", 24, -126, 127),
    "float64": Format("float64", 53, -1022, 1023),
}
DTYPE_NAMES: tuple[str, ...] = tuple(FORMATS)


@cache
def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def format_of(dtype) -> Format:
    """The Format of a NumPy dtype, dtype name or Format; ValueError for anything else."""
    if isinstance(dtype, Format):
        return dtype
    if isinstance(dtype, str) and dtype in FORMATS:
        return FORMATS[dtype]
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in FORMATS:
        raise ValueError(
            f"unsupported dtype {name!r}: use one of {', '.join(DTYPE_NAMES)}"
        )
    return FORMATS[name]


def compute_dtype(fmt: Format) -> np.dtype:
    """The dtype accurate implementations compute in: float32 for the 16-bit formats."""
    return np.dtype(np.float64) if fmt.name == "float64" else np.dtype(np.float32)
