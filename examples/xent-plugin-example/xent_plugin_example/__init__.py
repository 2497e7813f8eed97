"""A third-party cross-entropy written against plain NumPy arrays (no harness import needed).

The harness calls ``loss`` and ``grad`` with PyTorch's arguments; ``dtypes`` and ``supports``
tell it which cases to send (others are reported as "not supported").
"""

import numpy as np


class LogSumExp:
    """float64 log-sum-exp cross-entropy (class-index targets, weights, ignore_index, reductions)."""

    name = "example-logsumexp"
    dtypes = ("float32", "float64")
    supports = ("weight", "ignore_index", "kdim", "unbatched", "reduction:mean", "reduction:sum", "reduction:none")

    @staticmethod
    def _rows(logits, target):
        x = np.asarray(logits, np.float64)
        if x.ndim == 1:
            return x[None], np.asarray(target).reshape(1)
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), np.asarray(target).reshape(-1)

    def _parts(self, logits, target, weight, ignore_index):
        x, t = self._rows(logits, target)
        w = np.ones(x.shape[1]) if weight is None else np.asarray(weight, np.float64)
        m = x.max(axis=1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=1, keepdims=True)
        kept = t != ignore_index
        tt = np.where(kept, t, 0)
        wy = np.where(kept, w[tt], 0.0)
        nll = wy * (np.log(s[:, 0]) + m[:, 0] - x[np.arange(len(t)), tt])
        return x, e / s, tt, wy, nll, kept

    def loss(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        _, _, _, wy, nll, _ = self._parts(logits, target, weight, ignore_index)
        dtype = np.asarray(logits).dtype
        if reduction == "none":
            return nll.reshape(np.shape(target)).astype(dtype)
        total = nll.sum()
        if reduction == "mean":
            with np.errstate(invalid="ignore"):
                total = total / wy.sum()
        return np.asarray(total, dtype=dtype)

    def grad(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        _, p, tt, wy, _, kept = self._parts(logits, target, weight, ignore_index)
        g = wy[:, None] * p
        g[np.arange(len(tt)), tt] -= wy
        if reduction == "mean":
            g = g / wy.sum() if kept.any() else np.zeros_like(g)
        logits = np.asarray(logits)
        if logits.ndim == 1:
            return g[0].astype(logits.dtype)
        shape = np.moveaxis(logits, 1, -1).shape
        return np.moveaxis(g.reshape(shape), -1, 1).astype(logits.dtype)
