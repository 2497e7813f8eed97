"""The cross-entropy contract of one problem, evaluated in arb ball arithmetic.

Formulation (exact inputs: every float is a dyadic rational, so logits, weights, probability
targets and ε are converted exactly; ``fmpq`` rationals hold what is exact, ``arb`` what is not).
Per row n, with m = max of the finite logits, k its first index, d_j = x_j − m (exact),
s = Σ_{j≠k, finite} e^{d_j}, S = 1 + s:

* the contract's per-sample loss is l_n = Σ_c α_c L_c with exact coefficients
  α_c = (1−ε) w_y [c=y] + (ε/C) w_c (kept index targets; 0 for ignored ones) or α_c = w_c t'_c,
  t' = (1−ε) t + ε/C (probability targets; t' = t when ε = 0). Since L_c = (m − x_c) + log1p(s),
  l_n = R_n + A_n·log1p(s) with R_n = Σ_c α_c (m − x_c) an exact rational and A_n = Σ_c α_c.
* the gradient is g_{n,j} = σ (A_n p_j − α_j), σ = 1/Σ_{n∈K} w_{y_n} (index 'mean'),
  1/#samples (probability 'mean') or 1. Written without cancellation as an exact rational plus a
  ball: g_{n,k} = σ(A_n − α_k) − σ A_n q_k with q_k = 1 − p_k = s/S, and
  g_{n,j} = −σ α_j + σ A_n p_j (j ≠ k, p_j = e^{d_j}/S ≤ 1/2).
* reductions: the weighted 'mean' divides by Σ_{n∈K} w_{y_n}; probability 'mean' by the number
  of samples; 'none' returns l_n and its gradient is that of Σ_n l_n.

Exactness (so that exact zeros and exactly representable values are decided, not left as a ball
around them that never shrinks): a value whose ball part vanishes *by construction* is kept as an
exact rational — A_n = 0, s = 0 (one finite logit), a −inf class (p_j = 0), a row whose finite
logits are all equal (p_j = 1/F), an ignored row. Every other value is irrational, so a ball
eventually decides its rounding: by Lindemann–Weierstrass the e^{d} of distinct rationals d are
linearly independent over the algebraic numbers, hence p_j (row with two distinct finite logits)
and log S (S ≠ 1) are irrational. A reduced loss sums A_n log1p(s_n) over rows; rows with the
same multiset of d are grouped, and if every group's ΣA_n is 0 the log part is exactly 0. Two or
more surviving groups could (in principle) cancel: such a value is certified only if its ball
decides; otherwise it is reported as *undecided*, never as a pass or a fail.

Special values: explicit rules, not arb arithmetic on infinities. PyTorch evaluates its formulas
in IEEE arithmetic; the rules below reproduce the special-values table of docs/semantics.md by
following PyTorch's expression structure with exact signs, where every finite factor's sign and
exact zero-ness is known (weights, t', ε, σ are exact; p_j > 0 and L_c > 0 for finite classes,
except L_k = 0 when k is the only finite class; p_j = 0 and L_j = +inf for a −inf logit):

* products: NaN if a factor is NaN, or an infinite factor meets an exact zero (0·inf); otherwise
  ±inf when a factor is infinite (sign = product of signs); finite otherwise;
* sums: NaN if a term is NaN or both +inf and −inf occur; else ±inf if one occurs; else finite;
* a row with a NaN or +inf logit, or with every logit −inf, has NaN log-probabilities: its loss
  is NaN when the sample counts, and its gradient row is NaN even when ignored (PyTorch's
  log_softmax backward multiplies its NaN softmax by a zero upstream gradient);
* index targets, as PyTorch computes them: nll_n = w_y ⊗ L_{n,y}, smooth_n = ⊕_c w_c ⊗ L_{n,c}
  (only when ε > 0; ignored samples contribute exact zeros), loss = (1−ε) ⊗ R(nll) ⊕ (ε/C) ⊗
  R(smooth) (just R(nll) when ε = 0), R the reduction. So a −inf target logit gives +inf (−inf for
  a negative weight, NaN for a zero weight), any −inf logit with ε > 0 gives ±inf or NaN, and
  ε = 1 with an infinite nll gives 0·inf = NaN;
* probability targets: l_n = ⊕_c (L_{n,c} ⊗ t'_c ⊗ w_c) (t' = ±inf/NaN for an infinite/NaN
  target, NaN when ε = 1 meets an infinite target); so a −inf logit with t' = 0 gives NaN, an
  infinite target gives ±inf (NaN if it meets L = 0);
* 'mean' of index targets with W_K = Σ_{n∈K} w_{y_n} = 0 (all ignored, empty, zero weights, or
  mixed-sign weights that cancel exactly): each part is divided by +0 as IEEE does — 0/0 = NaN, a
  nonzero finite or infinite numerator gives ±inf by its sign (PyTorch 2.13: x = [[1, 0], [0, 2]],
  y = [0, 1], w = [1, −1] gives +inf). A NaN or ±inf W_K (a non-finite target weight) gives NaN
  for an infinite or NaN numerator and 0 for a finite one;
* non-finite weights are IEEE factors like any other: with ε = 0 a weight that no kept target
  uses is never read; C = 0 makes ε/C = +inf (ε > 0), so (ε/C) ⊗ 0 = NaN;
* gradient: PyTorch's chain. G_{n,c} = d(loss)/d(log p_{n,c}) is, for a kept index target,
  −(1−ε)σ ⊗ w_y at c = y plus −(ε/C)σ ⊗ w_c when ε > 0 (σ = 1/W_K for 'mean', with W_K = Σ_{n∈K}
  w_{y_n}: 1/(+0) = +inf, 1/±inf = 0, NaN stays NaN); 0·w_c for an ignored sample when ε > 0
  (PyTorch masks before multiplying by the weight, so a NaN/±inf weight makes it NaN), nothing
  otherwise; −σ ⊗ w_c ⊗ t'_c for probability targets. Then g_j = G_j ⊖ p_j ⊗ Σ_c G_c
  (log_softmax backward). When every G is finite this is the exact formula above (−inf logits
  have p = 0; all-ignored 'mean' has gradient 0); otherwise the row follows these rules. A total
  weight of −0 (every kept target weight −0) would flip signs, but its numerator is 0·L = 0, so
  the loss and the kept rows are NaN either way.
* empty batch: 'mean' NaN, 'sum' 0, 'none' empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from harness.certify.arb import load_flint
from harness.certify.exact import PENDING, RationalBall, rational
from harness.certify.ieee_classes import (
    exact_sign,
    ieee_add,
    ieee_class,
    ieee_mul,
    ieee_neg,
    is_special,
)
from harness.certify.row import LogitRow
from harness.problem import Problem

_INF = math.inf
_NAN = math.nan


class Oracle:
    """The contract of one problem, evaluated in ball arithmetic at a chosen precision.

    Every quantity is first classified by the IEEE rules of this module's docstring, following
    PyTorch's expression; exact values (rationals and balls) are computed only where that class
    is finite, where every weight and target involved is finite by construction."""

    def __init__(self, problem: Problem):
        fl = load_flint()
        self.problem = problem
        x, t = problem.rows()
        x = x.astype(np.float64)  # exact for every supported format
        self.M, self.C = x.shape
        C = self.C
        self.rows = [LogitRow(r) for r in x.tolist()]
        wf = problem.weight.astype(np.float64).tolist() if problem.weight is not None else [1.0] * C
        self.wcls = [ieee_class(v) for v in wf]
        self.w = [rational(v) if math.isfinite(v) else None for v in wf]  # None: NaN/±inf weight
        self.eps = rational(problem.label_smoothing)
        self.one_minus_eps = 1 - self.eps
        # ε/C: PyTorch's label_smoothing / n_classes is +inf for C = 0.
        self.eps_c = (self.eps / C) if C else None
        self.eps_c_cls = 1 if C else _INF
        self.prob = problem.probability_target
        self.reduction = problem.reduction
        if self.prob:
            tf = t.astype(np.float64)
            self.tp = [[self._tprime(v) for v in row] for row in tf.tolist()]
            self.sigma = fl.fmpq(1, self.M) if self.reduction == "mean" and self.M else fl.fmpq(1)
        else:
            self.y = [int(v) for v in t.tolist()]
            self.kept = [v != problem.ignore_index for v in self.y]
            kept_w = [self.y[n] for n in range(self.M) if self.kept[n]]
            dcls = ieee_add(*(self.wcls[y] for y in kept_w)) if kept_w else 0
            # D = Σ_{n∈K} w_{y_n}: an exact rational, or an IEEE special (a NaN/±inf weight).
            self.D = dcls if is_special(dcls) else sum((self.w[y] for y in kept_w), fl.fmpq(0))
            if self.reduction != "mean":
                self.sigma = fl.fmpq(1)
            elif is_special(self.D):
                self.sigma = _NAN if math.isnan(self.D) else fl.fmpq(0)  # 1/±inf = ±0
            else:
                self.sigma = 1 / self.D if self.D != 0 else _INF  # PyTorch divides by +0
        self._alpha: dict[int, dict] = {}

    # -- exact ingredients -------------------------------------------------------------------------
    def _tprime(self, v: float):
        """t' = (1-ε) t + ε/C exactly; IEEE classes for an infinite or NaN target."""
        if math.isnan(v):
            return _NAN
        if math.isinf(v):
            if self.eps == 0:
                return v
            return _NAN if self.one_minus_eps == 0 else v  # 0·inf, or (1-ε)>0 keeps the sign
        q = rational(v)
        return q if self.eps == 0 else self.one_minus_eps * q + self.eps_c

    def alpha(self, n: int) -> dict:
        """The row's nonzero loss coefficients {c: α_c}; only called where they are finite."""
        a = self._alpha.get(n)
        if a is None:
            if self.prob:
                a = {c: self.w[c] * tp for c, tp in enumerate(self.tp[n]) if self.w[c] * tp != 0}
            elif not self.kept[n]:
                a = {}
            else:
                y = self.y[n]
                if self.eps == 0:
                    a = {y: self.w[y]} if self.w[y] != 0 else {}
                else:
                    a = {c: self.eps_c * wc for c, wc in enumerate(self.w)}
                    a[y] = a[y] + self.one_minus_eps * self.w[y]
                    a = {c: v for c, v in a.items() if v != 0}
            self._alpha[n] = a
        return a

    def _Lclass(self, n: int, c: int):
        """IEEE class of L_{n,c}: NaN row, +inf for a -inf logit, 0 (exact) or +1."""
        row = self.rows[n]
        if row.nan:
            return _NAN
        if not row.finite[c]:
            return _INF
        return 0 if row.nfin == 1 else 1

    # -- loss --------------------------------------------------------------------------------------
    def _row_RA(self, n: int, alpha: dict):
        """(R_n, A_n): Σ_c α_c L_c = R_n + A_n log1p(s_n), α_c = 0 on -inf classes."""
        fl = load_flint()
        row = self.rows[n]
        R = fl.fmpq(0)
        A = fl.fmpq(0)
        for c, a in alpha.items():
            A += a
            R += a * row.m_minus_x(c)
        return R, A

    def _lin(self, terms: Iterable[tuple[int, dict]], prec: int) -> RationalBall:
        """Σ_n Σ_c α_{n,c} L_{n,c} over finite rows, log parts grouped by equal S (exact zeros)."""
        fl = load_flint()
        R = fl.fmpq(0)
        groups: dict = {}
        reps: dict = {}
        for n, alpha in terms:
            Rn, An = self._row_RA(n, alpha)
            R += Rn
            row = self.rows[n]
            if An == 0 or row.nfin <= 1:  # no log part: A_n = 0 or log1p(0) = 0
                continue
            key = row.key
            groups[key] = groups.get(key, fl.fmpq(0)) + An
            reps.setdefault(key, n)
        live = [(key, A) for key, A in groups.items() if A != 0]
        if not live:
            return RationalBall(R)
        with fl.ctx.workprec(prec):
            B = fl.arb(0)
            for key, A in live:
                B += fl.arb(A) * self.rows[reps[key]].stats(prec)[3]
        return RationalBall(R, B)

    def _index_parts(self, n: int):
        """IEEE classes of (nll_n, smooth_n) as PyTorch computes them (exact 0 when ignored)."""
        if not self.kept[n]:
            return 0, 0
        y = self.y[n]
        nll = ieee_mul(self.wcls[y], self._Lclass(n, y))
        if self.eps == 0:
            return nll, 0
        smooth = ieee_add(*(ieee_mul(self.wcls[c], self._Lclass(n, c)) for c in range(self.C)))
        return nll, smooth

    def _prob_class(self, n: int):
        """IEEE class of l_n = ⊕_c L_{n,c} ⊗ t'_c ⊗ w_c."""
        terms = []
        for c, tp in enumerate(self.tp[n]):
            ts = tp if is_special(tp) else exact_sign(tp)
            terms.append(ieee_mul(self._Lclass(n, c), ts, self.wcls[c]))
        return ieee_add(*terms)

    def _combine(self, nll, smooth):
        """(1-ε) ⊗ nll ⊕ (ε/C) ⊗ smooth, or nll alone when ε = 0 (PyTorch skips smoothing)."""
        if self.eps == 0:
            return nll
        return ieee_add(ieee_mul(exact_sign(self.one_minus_eps), nll), ieee_mul(self.eps_c_cls, smooth))

    def _div(self, cls, val_fn, prec):
        """IEEE class of a reduced part divided by D (index 'mean')."""
        D = self.D
        if is_special(D):  # ±inf or NaN: finite/±inf = ±0, inf/inf and NaN = NaN
            return _NAN if is_special(cls) or math.isnan(D) else 0
        if D != 0:
            return ieee_mul(exact_sign(D), cls)
        if is_special(cls):  # divided by +0
            return cls
        if cls == 0:
            return _NAN
        val = val_fn()
        if val.exact:
            s = exact_sign(val.r)
        else:
            ball = val.ball(prec)
            s = 1 if ball > 0 else -1 if ball < 0 else None
        if s is None:
            return PENDING
        return _NAN if s == 0 else (_INF if s > 0 else -_INF)

    def losses(self, prec: int) -> list:
        """Per-sample ('none') or the one reduced loss: RationalBall, special float or PENDING."""
        fl = load_flint()
        M = self.M
        if self.prob:
            classes = [self._prob_class(n) for n in range(M)]
            if self.reduction == "none":
                return [c if is_special(c) else self._lin([(n, self.alpha(n))], prec) for n, c in enumerate(classes)]
            if self.reduction == "mean" and M * self.C == 0:
                return [_NAN]  # PyTorch: an empty input gives NaN for 'mean'
            total = ieee_add(*classes) if classes else 0
            if is_special(total):
                return [total]
            return [self._lin(((n, self.alpha(n)) for n in range(M)), prec).scaled(self.sigma, prec)]

        parts = [self._index_parts(n) for n in range(M)]
        if self.reduction == "none":
            out = []
            for n, (nll, smooth) in enumerate(parts):
                cls = self._combine(nll, smooth)
                out.append(cls if is_special(cls) else self._lin([(n, self.alpha(n))], prec))
            return out
        N1 = ieee_add(*(p[0] for p in parts)) if parts else 0
        N2 = ieee_add(*(p[1] for p in parts)) if parts else 0
        if self.reduction == "mean":
            kept = [n for n in range(M) if self.kept[n]]
            N1 = self._div(N1, lambda: self._lin(((n, {self.y[n]: self.w[self.y[n]]}) for n in kept), prec), prec)
            if self.eps != 0:
                N2 = self._div(N2, lambda: self._lin(((n, {c: w for c, w in enumerate(self.w) if w != 0}) for n in kept),
                                                     prec), prec)
            if PENDING in (N1, N2):
                return [PENDING]
        cls = self._combine(N1, N2)
        if is_special(cls):
            return [cls]
        if is_special(self.sigma):  # divided by +0 yet finite: cannot happen (x/0 is never finite)
            raise AssertionError("finite loss over a zero denominator")
        if M == 0 or self.sigma == 0:
            return [RationalBall(fl.fmpq(0))]
        return [self._lin(((n, self.alpha(n)) for n in range(M)), prec).scaled(self.sigma, prec)]

    # -- gradient ----------------------------------------------------------------------------------
    def _go_classes(self, n: int) -> list:
        """IEEE classes of d(loss)/d(log p_{n,c}) as PyTorch's backward forms them."""
        C = self.C
        if self.prob:  # -σ ⊗ w_c ⊗ t'_c, σ = 1/#samples or 1 (> 0)
            return [ieee_mul(-1, self.wcls[c], tp if is_special(tp) else exact_sign(tp)) for c, tp in enumerate(self.tp[n])]
        y = self.y[n]
        sig = self.sigma if is_special(self.sigma) else exact_sign(self.sigma)
        u1 = ieee_mul(exact_sign(self.one_minus_eps) if self.eps else 1, sig)  # (1-ε)/D, or 1/D
        go = [ieee_mul(self.wcls[y], ieee_neg(u1)) if c == y else 0 for c in range(C)]
        if self.eps != 0:
            u2 = ieee_mul(self.eps_c_cls, sig)  # (ε/C)/D
            go = [ieee_add(g, ieee_mul(self.wcls[c], ieee_neg(u2))) for c, g in enumerate(go)]
        return go

    def grad_row(self, n: int, prec: int) -> list:
        """One gradient row: RationalBall or special float per class."""
        fl = load_flint()
        C = self.C
        row = self.rows[n]
        if C == 0:
            return []
        if row.nan:
            return [_NAN] * C
        if not self.prob and not self.kept[n]:
            # No nll term; the smoothing term is masked to 0 *before* PyTorch multiplies by w_j,
            # so G_j = 0·w_j: exactly 0, but NaN for a NaN/±inf weight (ε > 0 only).
            go = [ieee_mul(0, w) for w in self.wcls] if self.eps != 0 else []
            if not any(is_special(g) for g in go):
                return [RationalBall(fl.fmpq(0))] * C
            return [_NAN] * C  # Σ_c G_c is NaN, so is every G_j - p_j·ΣG
        go = self._go_classes(n)
        if any(is_special(g) for g in go):
            # g_j = go_j ⊖ p_j ⊗ Σ_c go_c (log_softmax backward); p_j = 0 exactly for -inf logits.
            total = ieee_add(*go)
            out = [ieee_add(go[j], ieee_neg(ieee_mul(1 if row.finite[j] else 0, total))) for j in range(C)]
            assert all(is_special(v) for v in out)
            return out
        sigma = self.sigma
        alpha = self.alpha(n)
        A = sum(alpha.values(), fl.fmpq(0))
        sA = sigma * A
        out = []
        if row.equal:  # p_j = 1/F exactly: the whole row is rational
            pj = fl.fmpq(1, row.nfin)
            for j in range(C):
                p = pj if row.finite[j] else 0
                out.append(RationalBall(sA * p - sigma * alpha.get(j, 0)))
            return out
        e, s, S, _ = row.stats(prec)
        with fl.ctx.workprec(prec):
            sAb = fl.arb(sA) if sA != 0 else None
            for j in range(C):
                aj = alpha.get(j, fl.fmpq(0))
                if not row.finite[j] or sAb is None:
                    out.append(RationalBall(-sigma * aj))  # p_j = 0, or σA = 0: g_j = -σ α_j exactly
                elif j == row.k:
                    out.append(RationalBall(sA - sigma * aj, -sAb * (s / S)))  # σ(A - α_k) - σ A q_k
                else:
                    out.append(RationalBall(-sigma * aj, sAb * (e[j] / S)))  # -σ α_j + σ A p_j
        return out
