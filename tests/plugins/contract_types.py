"""Plugins that compute the right numbers but return them in the wrong type: each must be an
error cell naming what was expected and what came back (harness.verdicts.check_output).

They wrap ``faulty.Correct`` (a float64 computation returned in the logits' dtype), the way a
third party returns values: a Python float, a 1-element array, the float64 intermediate.
"""

import numpy as np

from tests.plugins.faulty import Correct


class PythonFloat(Correct):
    """The loss as a Python float (np.asarray makes it a float64 0-d array)."""

    def loss(self, *args, **kwargs):
        return float(super().loss(*args, **kwargs).sum())


class OneElement(Correct):
    """The reduced loss as a 1-element array instead of a 0-d one."""

    def loss(self, *args, **kwargs):
        return np.atleast_1d(super().loss(*args, **kwargs))


class Float64Result(Correct):
    """The loss and gradient in float64 whatever the logits' dtype (the exact values of a float64
    computation, not rounded to the logits' dtype)."""

    def loss(self, *args, **kwargs):
        return super().loss(*args, **kwargs).astype(np.float64)

    def grad(self, *args, **kwargs):
        return super().grad(*args, **kwargs).astype(np.float64)


class RecordsTargetDtype(Correct):
    """Correct; fails (raises) unless it is called with class indices of dtype $XENT_TEST_TARGET."""

    def loss(self, logits, target, **kwargs):
        import os

        want = os.environ.get("XENT_TEST_TARGET", "int64")
        if np.asarray(target).dtype != np.dtype(want):
            raise TypeError(f"called with {np.asarray(target).dtype} targets, expected {want}")
        return super().loss(logits, target, **kwargs)
