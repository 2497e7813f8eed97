"""One row of logits: its maximum, the exact differences d_j = x_j − m, and their arb sums."""

from __future__ import annotations

import math

from harness.certify.arb import load_flint
from harness.certify.exact import rational

_INF = math.inf


class LogitRow:
    """Precision-independent facts about one row of logits, and its arb statistics per precision."""

    def __init__(self, x: list[float]):
        fl = load_flint()
        self.x = x
        # NaN log-probabilities: a NaN or +inf logit, or every logit -inf (C = 0 has no classes,
        # hence no log-probabilities at all, and is not such a row).
        self.nan = bool(x) and (any(math.isnan(v) or v == _INF for v in x) or all(v == -_INF for v in x))
        self.cache: dict[int, tuple] = {}
        self.finite = [v != -_INF for v in x]
        self.nfin = sum(self.finite)
        self._mq = None
        self._key = None
        if self.nan or not x:
            self.equal = True
            return
        self.m = max(v for v in x if v != -_INF)
        self.k = x.index(self.m)
        # All finite logits equal: e^{d_j} = 1 and p_j = 1/F are rational (incl. F = 1, s = 0).
        self.equal = all(v == self.m for v in x if v != -_INF)
        # d_j = x_j - m exactly: two float64 values span < 2200 bits.
        with fl.ctx.workprec(2200):
            am = fl.arb(self.m)
            self.d = [fl.arb(v) - am if self.finite[j] else None for j, v in enumerate(x)]
        assert all(d.is_exact() for d in self.d if d is not None)

    def m_minus_x(self, c):
        """m - x_c as an exact rational."""
        if self._mq is None:
            self._mq = rational(self.m)
        return self._mq - rational(self.x[c])

    @property
    def key(self):
        """The multiset of finite d_j: rows with equal keys have equal S = Σ e^{d_j}."""
        if self._key is None:
            self._key = tuple(sorted(tuple(int(t) for t in d.mid().man_exp()) for d in self.d if d is not None))
        return self._key

    def stats(self, prec: int):
        """(e_j or None for -inf, s, S, log1p(s)) as arb balls at ``prec`` bits."""
        got = self.cache.get(prec)
        if got is not None:
            return got
        fl = load_flint()
        with fl.ctx.workprec(prec):
            if self.equal:
                e = [fl.arb(1) if f else None for f in self.finite]
                s = fl.arb(self.nfin - 1)
            else:
                e = [d.exp() if d is not None else None for d in self.d]
                e[self.k] = fl.arb(1)
                s = sum((v for j, v in enumerate(e) if v is not None and j != self.k), fl.arb(0))
            S = 1 + s
            got = (e, s, S, s.log1p())
        self.cache[prec] = got
        return got
