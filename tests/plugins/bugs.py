"""Deliberately wrong implementations, one per bug hypothesis of harness/hypotheses.toml, each
modelled on a real bug (the hypothesis' ``why``). tests/test_diagnosis.py shows that the
diagnosis recognises each one.

``Contract`` is PyTorch's contract in float64 with a max-shifted log-softmax, written the way a
third party would (plain NumPy arrays in and out): every sample's loss is −Σ_j c_nj log p_nj
with a coefficient matrix c (index targets: (1 − ε) w_t onehot + ε/C w_j; probabilities:
w_j ((1 − ε) q_j + ε/C)), so its gradient is (Σ_j c_nj) p_nk − c_nk. Each subclass changes one
thing. Plugins from tests/plugins/faulty.py demonstrate three hypotheses too
(WrongWeightedMean, IgnoreInsideIgnored, NoMaxShift).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)


def _rows(x, t):
    """(M, C) rows, targets (M,) or (M, C), and the sample shape."""
    if x.ndim == 1:
        rows_t = t.reshape(1, -1) if t.dtype.kind == "f" else t.reshape(1)
        return x.reshape(1, -1), rows_t, ()
    C = x.shape[1]
    xr = np.moveaxis(x, 1, -1).reshape(-1, C)
    tr = np.moveaxis(t, 1, -1).reshape(-1, C) if t.dtype.kind == "f" else t.reshape(-1)
    return xr, tr, x.shape[:1] + x.shape[2:]


def _unrows(g, logits):
    if logits.ndim == 1:
        return g.reshape(logits.shape)
    moved = np.moveaxis(logits, 1, -1).shape
    return np.moveaxis(g.reshape(moved), -1, 1)


class Contract:
    """PyTorch's cross_entropy in float64 (all options), max-shifted; correct."""

    def log_softmax(self, x, dtype):
        with np.errstate(all="ignore"):
            z = x - x.max(axis=1, keepdims=True)
            return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    # -- the pieces a bug changes ---------------------------------------------------------------
    def weights(self, weight, C):
        return np.ones(C) if weight is None else np.asarray(weight, np.float64)

    def index_coefficients(self, t, kept, w, eps, C):
        onehot = np.zeros((t.size, C))
        onehot[np.flatnonzero(kept), t[kept]] = 1.0
        wt = np.where(kept, w[np.where(kept, t, 0)], 0.0)
        return (1 - eps) * wt[:, None] * onehot + self.smoothing(eps, C) * w[None, :] * kept[:, None]

    def smoothing(self, eps, C):
        return eps / C

    def prob_coefficients(self, q, w, eps, C):
        return w[None, :] * ((1 - eps) * q + eps / C)

    def denominator(self, wt, kept):
        return wt.sum()

    def reduce(self, per, reduction, denom, shape):
        if reduction == "none":
            return per.reshape(shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            return per.sum() / denom if reduction == "mean" else per.sum()

    def per_sample(self, logp, c, x, t, kept, w):
        with np.errstate(all="ignore"):
            return -np.where(c == 0, 0.0, c * logp).sum(axis=1)

    def row_total(self, c):
        """Σ_j c_nj: the factor of softmax in the gradient."""
        return c.sum(axis=1, keepdims=True)

    def output(self, value, dtype):
        return np.asarray(value).astype(dtype)

    # -- the contract ---------------------------------------------------------------------------
    def _parts(self, logits, target, weight, ignore_index, label_smoothing):
        x, t, shape = _rows(np.asarray(logits).astype(np.float64), np.asarray(target))
        C = x.shape[1]
        w = self.weights(weight, C)
        logp = self.log_softmax(x, np.asarray(logits).dtype)
        if t.dtype.kind == "f":
            kept = np.ones(x.shape[0], bool)
            c = self.prob_coefficients(t.astype(np.float64), w, label_smoothing, C)
            wt = kept.astype(np.float64)
            denom = float(x.shape[0])
        else:
            kept = t != ignore_index
            c = self.index_coefficients(t, kept, w, label_smoothing, C)
            wt = np.where(kept, w[np.where(kept, t, 0)], 0.0)
            denom = self.denominator(wt, kept)
        return x, t, kept, w, logp, c, denom, shape

    def loss(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        x, t, kept, w, logp, c, denom, shape = self._parts(logits, target, weight, ignore_index, label_smoothing)
        per = self.per_sample(logp, c, x, t, kept, w)
        return self.output(self.reduce(per, reduction, denom, shape), np.asarray(logits).dtype)

    def grad(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        logits = np.asarray(logits)
        *_, logp, c, denom, _ = self._parts(logits, target, weight, ignore_index, label_smoothing)
        p = np.exp(logp)
        g = self.row_total(c) * p - c
        if reduction == "mean":
            g = g / denom if denom else np.zeros_like(g)
        return self.output(_unrows(g, logits), logits.dtype)


# -- denominators and reductions --------------------------------------------------------------------


class IgnoredInDenominator(Contract):
    """(loss * mask).sum() / count: each ignored sample still counts once in the mean's
    denominator."""

    def denominator(self, wt, kept):
        return wt.sum() + np.count_nonzero(~kept)


class SumForMean(Contract):
    """reduction 'mean' returns the sum (the reduction argument lost on the way)."""

    def reduce(self, per, reduction, denom, shape):
        return super().reduce(per, "sum" if reduction == "mean" else reduction, denom, shape)


class WeightsIgnored(Contract):
    """Accepts ``weight`` and never applies it."""

    def weights(self, weight, C):
        return np.ones(C)


# -- label smoothing ---------------------------------------------------------------------------------


class SmoothingIgnored(Contract):
    """Accepts ``label_smoothing`` and never applies it."""

    def index_coefficients(self, t, kept, w, eps, C):
        return super().index_coefficients(t, kept, w, 0.0, C)


class SmoothingOverOthers(Contract):
    """OpenNMT-style smoothing: 1 − ε on the target, ε / (C − 1) on each other class."""

    def index_coefficients(self, t, kept, w, eps, C):
        onehot = np.zeros((t.size, C))
        onehot[np.flatnonzero(kept), t[kept]] = 1.0
        q = (1 - eps) * onehot + eps / (C - 1) * (1 - onehot)
        return w[None, :] * q * kept[:, None]


class SmoothingIncludesIgnored(Contract):
    """The ignore mask applied to the nll term only: ignored samples keep their smoothing term."""

    def index_coefficients(self, t, kept, w, eps, C):
        c = super().index_coefficients(t, kept, w, eps, C)
        return np.where(kept[:, None], c, eps / C * w[None, :])


class SmoothingWeightedByTarget(Contract):
    """Keras/TensorFlow style: smooth the one-hot targets, then weight each sample by w[target]."""

    def index_coefficients(self, t, kept, w, eps, C):
        onehot = np.zeros((t.size, C))
        onehot[np.flatnonzero(kept), t[kept]] = 1.0
        wt = np.where(kept, w[np.where(kept, t, 0)], 0.0)
        return wt[:, None] * ((1 - eps) * onehot + eps / C) * kept[:, None]


# -- precision ----------------------------------------------------------------------------------------


class _Narrowed(Contract):
    """The inputs rounded to ``work`` and the result returned in ``work``'s precision (cast
    back to the input dtype), as under autocast or without jax_enable_x64."""

    work = np.dtype(np.float32)

    def _narrow(self, a):
        return None if a is None else np.asarray(a).astype(self.work)

    def loss(self, logits, target, *, weight=None, **kw):
        logits = np.asarray(logits)
        t = self._narrow(target) if np.asarray(target).dtype.kind == "f" else target
        y = super().loss(self._narrow(logits), t, weight=self._narrow(weight), **kw)
        return np.asarray(y).astype(logits.dtype)

    def grad(self, logits, target, *, weight=None, **kw):
        logits = np.asarray(logits)
        t = self._narrow(target) if np.asarray(target).dtype.kind == "f" else target
        g = super().grad(self._narrow(logits), t, weight=self._narrow(weight), **kw)
        return np.asarray(g).astype(logits.dtype)


class InFloat32(_Narrowed):
    """float64 in, float32 inside (jax without jax_enable_x64)."""

    dtypes = ("float64",)
    work = np.dtype(np.float32)


class InBfloat16(_Narrowed):
    """float32/float64 in, bfloat16 inside (an autocast region left on)."""

    dtypes = ("float32", "float64")
    work = BF16


class InFloat16(_Narrowed):
    """float32/float64 in, float16 inside (mixed precision)."""

    dtypes = ("float32", "float64")
    work = np.dtype(np.float16)


class SumInFloat16(Contract):
    """torch's CPU float16 'mean': the per-sample losses rounded to float16 and summed in
    float16, so the sum overflows above 65504 although the mean is finite."""

    dtypes = ("float16",)

    def reduce(self, per, reduction, denom, shape):
        if reduction != "mean":
            return super().reduce(per, reduction, denom, shape)
        total = np.float16(0)
        with np.errstate(over="ignore"):
            for v in per.astype(np.float16):
                total = np.float16(total + v)
            return total / np.float16(denom)


# -- clamps ----------------------------------------------------------------------------------------------


class KerasClip(Contract):
    """Keras' categorical cross-entropy on softmax probabilities: p clipped to [1e-7, 1 − 1e-7]."""

    supports = ("weight", "ignore_index", "kdim", "unbatched", "reduction:mean", "reduction:sum", "reduction:none")

    def per_sample(self, logp, c, x, t, kept, w):
        p = np.clip(np.exp(logp), 1e-7, 1 - 1e-7)
        wt = c.sum(axis=1)  # the one-hot coefficients: w[target] (0 for ignored samples)
        return -wt * np.log(p[np.arange(t.size), np.where(kept, t, 0)])


class LogClamp100(Contract):
    """torch.nn.BCELoss' habit carried over: log p clamped at −100."""

    supports = KerasClip.supports

    def per_sample(self, logp, c, x, t, kept, w):
        wt = c.sum(axis=1)
        return -wt * np.maximum(logp[np.arange(t.size), np.where(kept, t, 0)], -100.0)


# -- no max shift ---------------------------------------------------------------------------------------


class NaiveInDtype(Contract):
    """The textbook softmax exp(x) / Σ exp(x) in the input dtype, without the max shift."""

    dtypes = ("float16", "float32", "float64")

    def log_softmax(self, x, dtype):
        with np.errstate(all="ignore"):
            e = np.exp(x.astype(dtype))
            s = e.sum(axis=1, keepdims=True, dtype=np.float32 if dtype.itemsize == 2 else dtype).astype(dtype)
            return np.log(e / s).astype(np.float64)


class LogOfSoftmax(Contract):
    """torch.log(torch.softmax(x)): the probabilities (max-shifted) in the input dtype, then
    their log: −log p_t is inf once p_t underflows."""

    dtypes = ("float16", "float32", "float64")

    def log_softmax(self, x, dtype):
        with np.errstate(all="ignore"):
            z = (x - x.max(axis=1, keepdims=True)).astype(dtype)
            e = np.exp(z)
            return np.log(e / e.sum(axis=1, keepdims=True)).astype(np.float64)


# -- probability targets ---------------------------------------------------------------------------------


class RenormalisedTargets(Contract):
    """target / target.sum(-1) first."""

    def prob_coefficients(self, q, w, eps, C):
        s = q.sum(axis=1, keepdims=True)
        return super().prob_coefficients(np.where(s != 0, q / np.where(s != 0, s, 1), q), w, eps, C)


class AssumedNormalised(Contract):
    """The fused soft-label form logsumexp(x) − Σ q' x (right only when Σ q' = 1)."""

    supports = ("probability_target", "label_smoothing", "kdim", "unbatched", "reduction:mean",
                "reduction:sum", "reduction:none")

    def per_sample(self, logp, c, x, t, kept, w):
        m = x.max(axis=1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
        return lse - (c * x).sum(axis=1)

    def row_total(self, c):
        return np.ones((c.shape[0], 1))  # d lse / dx = softmax, whatever Σ q' is
