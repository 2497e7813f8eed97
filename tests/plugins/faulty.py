"""Deliberately wrong or misbehaving third-party implementations for the tests.

Each is a plain object with ``loss(logits, target, *, weight, ignore_index, reduction,
label_smoothing)`` (and ``grad``) on NumPy arrays, the way a third party would write one.
``Correct`` is a compact float64 implementation of the contract; the others break one thing.
"""

import os
import signal
import time

import numpy as np


def _rows(x, t):
    if x.ndim == 1:
        return x[None, :], np.asarray(t).reshape(1, *np.shape(t)), True
    C = x.shape[1]
    xr = np.moveaxis(x, 1, -1).reshape(-1, C)
    tr = np.moveaxis(t, 1, -1).reshape(-1, C) if t.dtype.kind == "f" else t.reshape(-1)
    return xr, tr, False


class Correct:
    """float64 max-shifted log-softmax with the whole contract (class-index targets only)."""

    dtypes = ("float32", "float64")
    supports = ("weight", "ignore_index", "label_smoothing", "kdim", "unbatched",
                "reduction:mean", "reduction:sum", "reduction:none")
    shift = True
    honour_ignore_inside = True
    divide_by_weights = True

    def _per_sample(self, logits, target, weight, ignore_index, label_smoothing):
        x, t, _ = _rows(np.asarray(logits, np.float64), np.asarray(target))
        C = x.shape[1]
        w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
        with np.errstate(all="ignore"):
            z = x - x.max(axis=1, keepdims=True) if self.shift else x
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        ign = (t == ignore_index) if (self.honour_ignore_inside or not 0 <= ignore_index < C) else np.zeros(t.shape, bool)
        tt = np.where(ign, 0, t)
        wy = np.where(ign, 0.0, w[tt])
        nll = -wy * logp[np.arange(len(t)), tt]
        smooth = np.where(ign, 0.0, -(logp * w).sum(axis=1))
        eps = label_smoothing
        return (1 - eps) * nll + eps / C * smooth, wy

    def loss(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        logits = np.asarray(logits)
        per, wy = self._per_sample(logits, target, weight, ignore_index, label_smoothing)
        if reduction == "none":
            out = per.reshape(np.shape(target))
        elif reduction == "sum":
            out = per.sum()
        else:
            with np.errstate(invalid="ignore"):  # all ignored: 0/0 = NaN, as PyTorch
                out = per.sum() / (wy.sum() if self.divide_by_weights else len(per))
        return np.asarray(out).astype(logits.dtype)

    def grad(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        logits = np.asarray(logits)
        x, t, unbatched = _rows(logits.astype(np.float64), np.asarray(target))
        C = x.shape[1]
        w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
        z = x - x.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        ign = t == ignore_index
        tt = np.where(ign, 0, t)
        wy = np.where(ign, 0.0, w[tt])
        eps = label_smoothing
        a = (1 - eps) * wy + eps / C * w.sum() * (~ign)
        g = a[:, None] * p - eps / C * w[None, :] * (~ign)[:, None]
        g[np.arange(len(t)), tt] -= (1 - eps) * wy
        if reduction == "mean":
            g = np.zeros_like(g) if ign.all() else g / wy.sum()  # all ignored: PyTorch returns 0
        if unbatched:
            return g[0].astype(logits.dtype)
        moved = np.moveaxis(logits, 1, -1).shape
        return np.moveaxis(g.reshape(moved), -1, 1).astype(logits.dtype)


class WrongWeightedMean(Correct):
    """Divides the weighted sum by N instead of the sum of target weights."""

    divide_by_weights = False


class IgnoreInsideIgnored(Correct):
    """Only honours ignore_index when it lies outside [0, C)."""

    honour_ignore_inside = False


class NoMaxShift(Correct):
    """log(sum(exp(x))) without subtracting the max: overflows on large logits."""

    shift = False


class Raises(Correct):
    def loss(self, *args, **kwargs):
        raise RuntimeError("this plugin always raises")


class Hangs(Correct):
    def loss(self, *args, **kwargs):
        time.sleep(3600)


class Segfaults(Correct):
    def loss(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGSEGV)


class WrongShape(Correct):
    def loss(self, *args, **kwargs):
        return np.zeros(7, np.float32)


def bare_loss(logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """A plain function: the loss only (no gradient)."""
    return Correct().loss(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                          label_smoothing=label_smoothing)


class CountsCalls(Correct):
    """Correct, with a fused loss_and_grad; appends the name of every call to $XENT_TEST_CALLS
    (the sweeps should make one fused call per problem, never loss or grad)."""

    def _log(self, what):
        with open(os.environ["XENT_TEST_CALLS"], "a") as fh:
            fh.write(what + "\n")

    def loss(self, *a, **kw):
        self._log("loss")
        return super().loss(*a, **kw)

    def grad(self, *a, **kw):
        self._log("grad")
        return super().grad(*a, **kw)

    def loss_and_grad(self, *a, **kw):
        self._log("loss_and_grad")
        return Correct.loss(self, *a, **kw), Correct.grad(self, *a, **kw)


class FusedNotAPair(Correct):
    """loss_and_grad returns the loss alone."""

    def loss_and_grad(self, *a, **kw):
        return self.loss(*a, **kw)


class SlowToLoad(Correct):
    """Correct, but its construction (in the isolated child) takes 30 s."""

    def __init__(self):
        time.sleep(30)
