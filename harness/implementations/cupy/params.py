"""The kernels' parameter structs, declared once for the host (xent.cu, "Kernel parameters").

Each :class:`CStruct` lists the fields of one C struct of xent.cu in declaration order with their
C types. Its NumPy structured dtype follows the C alignment rules (``align=True``), so offsets,
padding and size are the compiler's; tests/test_cupy_kernel.py checks the field lists against
the source and every offset, size and alignment against g++ and nvcc.

:meth:`CStruct.pack` returns a one-element array of that dtype. CuPy passes a one-element NumPy
array by value (``cupy.cuda.function`` hands the driver the array's data pointer, and the driver
copies ``sizeof(parameter)`` bytes: CuPy's "custom user types"); the host emulator in the tests
does the same. Pointer fields take device arrays (or None for null).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: C type of a field (as xent.cu spells it, pointers as "ptr") -> NumPy type.
C_TYPES: dict[str, type] = {
    "i64": np.int64,
    "int": np.int32,
    "double": np.float64,
    "ptr": np.uint64,
}


def address(arr) -> int:
    """The device address of a CuPy array (the data address of a NumPy one); 0 for None."""
    if arr is None:
        return 0
    data = arr.data
    return data.ptr if hasattr(data, "ptr") else arr.ctypes.data


@dataclass(frozen=True, slots=True)
class CStruct:
    """One C struct: its name in xent.cu and its (field, C type) pairs in declaration order."""

    name: str
    fields: tuple[tuple[str, str], ...]
    dtype: np.dtype = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        dtype = np.dtype([(n, C_TYPES[t]) for n, t in self.fields], align=True)
        object.__setattr__(self, "dtype", dtype)

    def pack(self, **values) -> np.ndarray:
        """A one-element array holding the struct; every field must be given."""
        names = [n for n, _ in self.fields]
        if set(values) != set(names):
            missing, extra = set(names) - set(values), set(values) - set(names)
            raise TypeError(f"{self.name}: missing {sorted(missing)}, unknown {sorted(extra)}")
        out = np.zeros(1, self.dtype)
        for n, t in self.fields:
            out[n] = address(values[n]) if t == "ptr" else values[n]
        return out


#: template <typename T> struct Tensors: the problem's arrays.
TENSORS = CStruct(
    "Tensors",
    (
        ("x", "ptr"),
        ("tidx", "ptr"),
        ("tprob", "ptr"),
        ("w", "ptr"),
        ("grad", "ptr"),
        ("out", "ptr"),
    ),
)
#: struct Shape: rows, classes and the class stride (D > 1 only for xent_strided).
SHAPE = CStruct("Shape", (("M", "i64"), ("C", "i64"), ("D", "i64")))
#: struct Options: ignore_index, 1 - label_smoothing, label_smoothing / C, reduction (0, 1, 2).
OPTIONS = CStruct(
    "Options", (("ignore_index", "i64"), ("om", "double"), ("eoc", "double"), ("reduction", "int"))
)
#: struct Reduce: the grid-wide sum's workspace, the 'mean' denominator, the gradient scale.
REDUCE = CStruct(
    "Reduce", (("partials", "ptr"), ("counter", "ptr"), ("den", "ptr"), ("scale", "double"))
)
#: template <typename A> struct Split: split rows' blocks per row, packs per block, workspace.
SPLIT = CStruct(
    "Split",
    (("splits", "i64"), ("chunk", "i64"), ("ws", "ptr"), ("rowinfo", "ptr"), ("rowtgt", "ptr")),
)

#: Every parameter struct of xent.cu.
STRUCTS: tuple[CStruct, ...] = (TENSORS, SHAPE, OPTIONS, REDUCE, SPLIT)
