"""The memory layouts a problem's arrays are handed to an implementation in (PyTorch's OpInfo
tests non-contiguous samples the same way).

A :class:`~harness.problem.Problem` keeps its arrays C-ordered (the reference, the digest and
every judge read them so); its ``memory`` field says how an implementation receives them, and
:meth:`~harness.problem.Problem.presented` builds that: the same values, as views into a fresh
buffer laid out by :func:`lay_out`. The layouts:

* ``contiguous``: C order, as stored.
* ``transposed-class``: the class axis moved in memory. (N, C): Fortran order, the samples
  fastest; K-dim (N, C, d1, ...): channels-last, the classes fastest (torch's
  ``channels_last``); probability targets follow the logits, index targets of two or more
  axes are Fortran-ordered. An unbatched (C,) input has one axis and no such layout.
* ``strided``: every array a step-2 slice of a buffer twice as long along its sample axis
  (axis 0) and, for the logits and probability targets, its class axis; the gaps hold NaN
  (floats) or the dtype's largest integer (class indices), so an implementation that reads
  the buffer and not the view gets a wrong answer, not a lucky one.
* ``row-offset``: every array C-ordered but starting one element into a larger buffer (whose
  first element is NaN / the largest integer): contiguous, yet its data pointer is off every
  vector alignment and ``arr.base`` is not the array.

Strides are positive everywhere, so ``torch.from_numpy`` takes every layout without a copy.
The buffer is rebuilt from the C-ordered arrays wherever a view is wanted, so pickling (an
isolated child) reproduces exactly the same strides and offset (see ``Problem.__reduce_ex__``).
"""

from __future__ import annotations

import numpy as np

MEMORY_LAYOUTS = ("contiguous", "transposed-class", "strided", "row-offset")


def _gap(dtype: np.dtype):
    """What fills a buffer's elements outside the view."""
    return np.iinfo(dtype).max if dtype.kind in "iu" else np.nan


def lay_out(arr: np.ndarray, memory: str, class_axis: int | None) -> np.ndarray:
    """``arr`` (C-ordered) as a read-only view in layout ``memory`` with equal values.
    ``class_axis``: the axis of classes (the logits, probability targets), or None (index
    targets, class weights)."""
    if memory not in MEMORY_LAYOUTS:
        raise ValueError(f"memory: unknown layout {memory!r}; use one of {', '.join(MEMORY_LAYOUTS)}")
    if memory == "contiguous" or arr.ndim == 0:
        return arr
    if memory == "transposed-class":
        if arr.ndim == 1:
            view = arr  # one axis: no other order (an unbatched problem refuses this layout)
        elif class_axis is not None and arr.ndim > 2:
            # channels-last: a C-ordered (N, d1, ..., C) buffer seen as (N, C, d1, ...)
            view = np.moveaxis(np.ascontiguousarray(np.moveaxis(arr, class_axis, -1)), -1, class_axis)
        else:
            view = np.asfortranarray(arr)
        buffer = view
    elif memory == "strided":
        axes = {0} if class_axis is None else {0, class_axis}
        shape = tuple(2 * n if i in axes else n for i, n in enumerate(arr.shape))
        buffer = np.full(shape, _gap(arr.dtype), dtype=arr.dtype)
        view = buffer[tuple(slice(None, None, 2) if i in axes else slice(None) for i in range(arr.ndim))]
        view[...] = arr
    else:  # row-offset
        buffer = np.full(arr.size + 1, _gap(arr.dtype), dtype=arr.dtype)
        view = buffer[1:].reshape(arr.shape)
        view[...] = arr
    if view is arr:
        return arr
    buffer.setflags(write=False)
    view.setflags(write=False)
    return view


def describe(arr: np.ndarray) -> dict:
    """How an array lies in memory: its strides, flags and offset into its base buffer (what
    the tests assert on the arrays an implementation receives)."""
    base = arr
    while isinstance(base.base, np.ndarray):
        base = base.base
    return {
        "shape": tuple(arr.shape),
        "strides": tuple(arr.strides),
        "c_contiguous": bool(arr.flags.c_contiguous),
        "f_contiguous": bool(arr.flags.f_contiguous),
        "offset": arr.__array_interface__["data"][0] - base.__array_interface__["data"][0],
    }


__all__ = ["MEMORY_LAYOUTS", "describe", "lay_out"]
