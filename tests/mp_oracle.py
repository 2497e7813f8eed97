"""An independent, deliberately plain oracle for tests: PyTorch's cross-entropy written straight
from its definition in mpmath at very high precision (default 3000 bits).

It shares no code with ``harness.reference``: it uses the textbook log-sum-exp minus x_t, which is
exact enough at 3000 bits for any loss above ~2^-2900 (the cancellation that ruins it at 256 bits
for logits [200, 0] costs only ~290 bits). Slow; only for small problems.
"""

from __future__ import annotations

import mpmath
import numpy as np


def _log_softmax(row):
    m = max(row)
    lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in row))
    return [v - lse for v in row]


def loss(logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, prec=3000):
    """Finite inputs only. Returns an mpf (mean/sum) or a list of mpf (none)."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target)
    with mpmath.workprec(prec):
        if x.ndim == 1:
            x, t = x[None], t[None]
        C = x.shape[1]
        x = np.moveaxis(x, 1, -1).reshape(-1, C)
        prob = t.dtype.kind == "f"
        t = np.moveaxis(t, 1, -1).reshape(-1, C) if prob else t.reshape(-1)
        w = [mpmath.mpf(1)] * C if weight is None else [mpmath.mpf(float(v)) for v in np.asarray(weight, np.float64)]
        eps = mpmath.mpf(label_smoothing)
        per, denom = [], mpmath.mpf(0)
        for row, tr in zip(x, t, strict=False):
            lp = _log_softmax([mpmath.mpf(float(v)) for v in row])
            if prob:
                tp = [(1 - eps) * mpmath.mpf(float(v)) + eps / C for v in tr]
                per.append(-mpmath.fsum(w[c] * tp[c] * lp[c] for c in range(C)))
                denom += 1
            elif int(tr) == ignore_index:
                per.append(mpmath.mpf(0))
            else:
                c = int(tr)
                smooth = -mpmath.fsum(w[j] * lp[j] for j in range(C))
                per.append((1 - eps) * (-w[c] * lp[c]) + eps / C * smooth)
                denom += w[c]
        if reduction == "none":
            return per
        total = mpmath.fsum(per)
        if reduction == "sum":
            return total
        return total / denom if denom else mpmath.mpf("nan")
