"""Plugins for the memory-layout tests (tests/test_memory_layout.py).

``NumpyRecorder`` and ``TorchRecorder`` are the built-in numpy and torch implementations that
also record how the arrays they receive lie in memory (and, for torch, the tensors it made of
them) to the JSON-lines file named by ``XENT_LAYOUT_LOG``: in this process or in an isolated
child alike. ``CStrides`` is a deliberately wrong third-party plugin: it reads the logits
through their data pointer with the strides of a C-ordered array of their shape (as a C
extension handed ``x.ctypes.data`` would), so it is right on contiguous (and offset) inputs
and wrong on transposed and strided ones.
"""

import json
import os

import numpy as np

from harness.implementations.numpy_stable import NumpyStable
from harness.implementations.torch_impl import TorchCPU
from harness.memory_layout import describe
from tests.plugins.faulty import Correct


def _record(entry: dict) -> None:
    path = os.environ.get("XENT_LAYOUT_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def _arrays(problem) -> dict:
    out = {"memory": problem.memory, "logits": describe(problem.logits), "target": describe(problem.target)}
    if problem.weight is not None:
        out["weight"] = describe(problem.weight)
    return out


class NumpyRecorder(NumpyStable):
    name = "numpy-recorder"

    def loss_and_grad(self, problem):
        _record({"impl": self.name, "pid": os.getpid(), **_arrays(problem)})
        return super().loss_and_grad(problem)


class TorchRecorder(TorchCPU):
    name = "torch-recorder"

    def _tensors(self, problem):
        x, t, w = super()._tensors(problem)
        a = problem.logits
        _record({"impl": self.name, "pid": os.getpid(), **_arrays(problem),
                 "torch": {"strides": [s * a.itemsize for s in x.stride()],
                           "same_memory": x.data_ptr() == a.__array_interface__["data"][0],
                           "target_same_memory": t.data_ptr() == problem.target.__array_interface__["data"][0]}})
        return x, t, w


def _c_order_view(a: np.ndarray) -> np.ndarray:
    """The bug: ``a``'s memory read from its data pointer as if it were C-ordered."""
    strides = [a.itemsize] * a.ndim
    for i in range(a.ndim - 2, -1, -1):
        strides[i] = strides[i + 1] * a.shape[i + 1]
    return np.lib.stride_tricks.as_strided(a, a.shape, strides, writeable=False)


class CStrides(Correct):
    """Correct, except that it reads the logits with C-order strides from their data pointer."""

    def loss(self, logits, target, **kw):
        return super().loss(_c_order_view(np.asarray(logits)), target, **kw)

    def grad(self, logits, target, **kw):
        return super().grad(_c_order_view(np.asarray(logits)), target, **kw)
