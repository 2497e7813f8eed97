"""Bit-exact conversions between the harness's NumPy arrays and other libraries' tensors.

The harness hands an implementation NumPy arrays of the logits' dtype: ``float16``,
``float32``, ``float64``, and ``ml_dtypes.bfloat16`` for bfloat16 (NumPy has no bfloat16 of its
own). Libraries that do not read ``ml_dtypes`` arrays directly get the 16 bits as ``uint16`` (or
``int16``) and re-view them as their bfloat16: a *bit-cast*, never a rounding, so subnormals,
signed zeros, infinities and NaN payloads cross unchanged. Results come back the same way, as
arrays of exactly the dtype asked for (the harness refuses any other: a float32 loss for float64
logits is an error cell, whatever its value).

Each library is imported inside its functions: importing this module costs NumPy and ml_dtypes.
``tests/test_zoo.py`` checks every pair both ways on every bit pattern of float16 and bfloat16.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

#: NumPy's name for bfloat16 arrays (what the harness passes and expects back).
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(arr) -> bool:
    return np.asarray(arr).dtype == BFLOAT16


def _c(arr) -> np.ndarray:
    """``arr`` as a C-contiguous array of the same shape (0-d stays 0-d, unlike
    ``np.ascontiguousarray``)."""
    return np.asarray(arr, order="C")


def bits(arr: np.ndarray) -> np.ndarray:
    """The bit patterns of a 16-bit float array as ``uint16`` (a view, not a conversion)."""
    arr = _c(arr)
    if arr.dtype.itemsize != 2:
        raise TypeError(f"bits: a 16-bit float array is needed, not {arr.dtype.name}")
    return arr.view(np.uint16)


def from_bits(patterns: np.ndarray, dtype) -> np.ndarray:
    """``uint16``/``int16`` bit patterns re-viewed as float16 or bfloat16 (a copy)."""
    dtype = np.dtype(dtype)
    return _c(patterns).view(dtype).copy()


def cast_like(y, like: np.ndarray) -> np.ndarray:
    """``y`` as a NumPy array of ``like``'s dtype. An exact widening (float32 -> float64) or
    identity is exact; a narrowing rounds once to nearest even, as the library would have had to."""
    y = np.asarray(y)
    return y if y.dtype == like.dtype else y.astype(like.dtype)


# -- torch ---------------------------------------------------------------------------------------


def to_torch(arr: np.ndarray, device: str = "cpu"):
    """A NumPy array as a torch tensor (bfloat16 through its bits: int16 -> torch.bfloat16)."""
    from harness.implementations.torch_impl import to_torch as _to_torch

    return _to_torch(arr, device)


def from_torch(t) -> np.ndarray:
    """A torch tensor as a NumPy array (torch.bfloat16 -> ml_dtypes.bfloat16 by its bits)."""
    from harness.implementations.torch_impl import to_numpy

    return to_numpy(t)


# -- jax -------------------------------------------------------------------------------------------


def to_jax(arr: np.ndarray, device=None):
    """A NumPy array as a jax array. jax's bfloat16 *is* ``ml_dtypes.bfloat16``, so this is a
    plain transfer; float64 needs ``jax_enable_x64`` (else jax silently makes it float32, which
    this refuses rather than pass on)."""
    import jax

    arr = np.asarray(arr)
    out = jax.device_put(arr, device)
    if out.dtype != arr.dtype:
        raise TypeError(f"to_jax: jax turned {arr.dtype.name} into {out.dtype.name} "
                        "(enable jax_enable_x64 for float64)")
    return out


def from_jax(x) -> np.ndarray:
    """A jax array as a NumPy array (bfloat16 stays ``ml_dtypes.bfloat16``)."""
    return np.array(x, copy=True)


# -- tensorflow ------------------------------------------------------------------------------------


def to_tf(arr: np.ndarray):
    """A NumPy array as a ``tf.Tensor`` (bfloat16: ``tf.bitcast`` of its uint16 bits)."""
    import tensorflow as tf

    arr = _c(arr)
    if arr.dtype == BFLOAT16:
        return tf.bitcast(tf.constant(bits(arr)), tf.bfloat16)
    return tf.constant(arr)


def from_tf(t) -> np.ndarray:
    """A ``tf.Tensor`` as a NumPy array (tf.bfloat16 -> ``ml_dtypes.bfloat16`` by its bits)."""
    import tensorflow as tf

    if t.dtype == tf.bfloat16:
        return from_bits(tf.bitcast(t, tf.uint16).numpy(), BFLOAT16)
    return np.array(t.numpy(), copy=True)


# -- paddle ----------------------------------------------------------------------------------------


def to_paddle(arr: np.ndarray, place: str = "cpu"):
    """A NumPy array as a paddle tensor (bfloat16: its uint16 bits viewed as paddle.bfloat16)."""
    import paddle

    arr = _c(arr)
    if arr.dtype == BFLOAT16:
        return paddle.to_tensor(bits(arr), place=place).view(paddle.bfloat16)
    return paddle.to_tensor(arr, place=place)


def from_paddle(t) -> np.ndarray:
    """A paddle tensor as a NumPy array (paddle.bfloat16 -> ``ml_dtypes.bfloat16``)."""
    import paddle

    if t.dtype == paddle.bfloat16:
        return from_bits(t.view(paddle.uint16).numpy(), BFLOAT16)
    return np.array(t.numpy(), copy=True)


# -- tinygrad --------------------------------------------------------------------------------------


def to_tinygrad(arr: np.ndarray, device: str | None = None):
    """A NumPy array as a tinygrad Tensor (bfloat16: its uint16 bits, ``bitcast`` on device)."""
    from tinygrad import Tensor, dtypes

    arr = _c(arr)
    if arr.dtype == BFLOAT16:
        return Tensor(bits(arr).copy(), device=device).bitcast(dtypes.bfloat16)
    return Tensor(arr.copy(), device=device)


def from_tinygrad(t) -> np.ndarray:
    """A tinygrad Tensor as a NumPy array (dtypes.bfloat16 -> ``ml_dtypes.bfloat16``)."""
    from tinygrad import dtypes

    if t.dtype == dtypes.bfloat16:
        return from_bits(t.bitcast(dtypes.uint16).numpy(), BFLOAT16)
    return np.array(t.numpy(), copy=True)
