"""A second, independent oracle of the cross-entropy contract in ball arithmetic (python-flint's
``arb``), and the certification of reference values against it.

It shares no code with :mod:`harness.reference`: the contract of ``docs/semantics.md`` is written
again, directly, and every finite result is an ``arb`` ball *guaranteed* to contain the true value
(Arb's rigorous error propagation), so correctness comes from the balls, not from the formulas.
python-flint is an optional dependency (``pip install 'xent-harness[certify]'``); it is imported
on first use so that ``import harness`` neither needs nor pays for it.

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

Certification (:func:`certify`): a reference value v passes when it lies within its ball widened
by 2^-106·|v| (plus an absolute 2^-1074 for double-doubles, whose low part cannot carry 106
bits below 2^-969: :data:`DD_FLOOR`), and each correctly rounded value must equal the rounding of the
ball, which is *decided* when both ends of the ball round to the same value (IEEE round to nearest
even with the format's subnormals and overflow, computed exactly in integers). Undecided balls are
recomputed at twice the precision up to :data:`MAX_PREC` bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from harness.formats import FORMATS, Format
from harness.problem import Problem

#: First arb working precision (bits).
START_PREC = 128
#: Precision cap of the certification loop.
MAX_PREC = 20_000
#: Correct bits the reference promises for every value it returns.
GOOD_BITS = 106
#: Absolute error allowed on top of 2^-106·|v| for double-double values (hi + lo), as a power of
#: two. An ideal double-double errs by at most 2^-1075 below float64's subnormals; the reference's
#: keep a *sticky* low part (the smallest subnormal with the residual's sign, so that hi + lo stays
#: on v's side of hi and ties round the right way), and document |v − (hi + lo)| ≤ 2^-1074 there.
DD_FLOOR = -1074
INSTALL_HINT = "pip install 'xent-harness[certify]'"

_INF = math.inf
_NAN = math.nan


class CertifyUnavailable(ImportError):
    """python-flint is missing; the message is one line naming the fix."""


_FLINT = None


def require() -> None:
    """Raise :class:`CertifyUnavailable` (one line, naming the fix) unless python-flint imports."""
    _flint()


def _flint():
    global _FLINT
    if _FLINT is None:
        try:
            import flint
        except ImportError:
            raise CertifyUnavailable(f"python-flint is not installed (needed for --certify): {INSTALL_HINT}") from None
        _FLINT = flint
    return _FLINT


# -- extended signs: the explicit special-value rules ----------------------------------------------
# A quantity in PyTorch's expression is represented here by its IEEE class: a float NaN/±inf, an
# int sign (-1, 0, +1) for a finite value whose sign (and exact zero-ness) is known, or _FIN for a
# finite value of unknown sign. The finite values themselves are computed separately, exactly.

_FIN = "finite"


def _isspecial(v) -> bool:
    return isinstance(v, float)


def _emul(*factors):
    """IEEE product class: NaN beats all; inf times an exact zero is NaN; else the sign rule."""
    if any(_isspecial(f) and math.isnan(f) for f in factors):
        return _NAN
    infinite = any(_isspecial(f) for f in factors)
    if infinite:
        if any(f == 0 for f in factors if not _isspecial(f) and f is not _FIN):
            return _NAN
        # Every finite factor multiplied by an infinity has a known sign by construction.
        assert all(f is not _FIN for f in factors), "sign of a finite factor of an infinity unknown"
        sign = 1
        for f in factors:
            sign *= 1 if f > 0 else -1
        return _INF if sign > 0 else -_INF
    if any(f == 0 for f in factors if f is not _FIN):
        return 0  # an exact zero times finite values is an exact zero
    if any(f is _FIN for f in factors):
        return _FIN
    sign = 1
    for f in factors:
        sign *= f
    return sign


def _eadd(*terms):
    """IEEE sum class: NaN if NaN or +inf and -inf meet; else the infinity; else finite."""
    specials = [t for t in terms if _isspecial(t)]
    if specials:
        if any(math.isnan(t) for t in specials) or (_INF in specials and -_INF in specials):
            return _NAN
        return specials[0]
    if any(t is _FIN for t in terms):
        return _FIN
    if all(t >= 0 for t in terms):
        return 1 if any(t > 0 for t in terms) else 0
    if all(t <= 0 for t in terms):
        return -1
    return _FIN


def _eneg(v):
    if _isspecial(v):
        return -v
    return _FIN if v is _FIN else -v


def _sign(q) -> int:
    return (q > 0) - (q < 0)


# -- exact values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Val:
    """A finite value r + b: r an exact rational (fmpq), b a ball (arb) or None (the value is r)."""

    r: object
    b: object | None = None

    @property
    def exact(self) -> bool:
        return self.b is None

    def scaled(self, c, prec: int) -> _Val:
        if self.b is None:
            return _Val(self.r * c)
        with _flint().ctx.workprec(prec):
            return _Val(self.r * c, self.b * c)

    def ball(self, prec: int):
        fl = _flint()
        with fl.ctx.workprec(prec):
            return fl.arb(self.r) if self.b is None else fl.arb(self.r) + self.b


#: A finite value whose sign was needed (division by +0) but is not decided at this precision.
_PENDING = "pending"


def _q(v: float):
    """The exact rational of a finite float."""
    fl = _flint()
    n, d = float(v).as_integer_ratio()
    return fl.fmpq(n, d)


class _Row:
    """Precision-independent facts about one row of logits, and its arb statistics per precision."""

    def __init__(self, x: list[float]):
        fl = _flint()
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
            self._mq = _q(self.m)
        return self._mq - _q(self.x[c])

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
        fl = _flint()
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


def _cls(v):
    """IEEE class of an input value: the float itself when special, else its exact sign."""
    return v if not math.isfinite(v) else (v > 0) - (v < 0)


class _Oracle:
    """The contract of one problem, evaluated in ball arithmetic at a chosen precision.

    Every quantity is first classified by the IEEE rules of the module docstring, following
    PyTorch's expression; exact values (rationals and balls) are computed only where that class
    is finite, where every weight and target involved is finite by construction."""

    def __init__(self, problem: Problem):
        fl = _flint()
        self.problem = problem
        x, t = problem.rows()
        x = x.astype(np.float64)  # exact for every supported format
        self.M, self.C = x.shape
        C = self.C
        self.rows = [_Row(r) for r in x.tolist()]
        wf = problem.weight.astype(np.float64).tolist() if problem.weight is not None else [1.0] * C
        self.wcls = [_cls(v) for v in wf]
        self.w = [_q(v) if math.isfinite(v) else None for v in wf]  # None: NaN/±inf weight
        self.eps = _q(problem.label_smoothing)
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
            dcls = _eadd(*(self.wcls[y] for y in kept_w)) if kept_w else 0
            # D = Σ_{n∈K} w_{y_n}: an exact rational, or an IEEE special (a NaN/±inf weight).
            self.D = dcls if _isspecial(dcls) else sum((self.w[y] for y in kept_w), fl.fmpq(0))
            if self.reduction != "mean":
                self.sigma = fl.fmpq(1)
            elif _isspecial(self.D):
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
        q = _q(v)
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
        fl = _flint()
        row = self.rows[n]
        R = fl.fmpq(0)
        A = fl.fmpq(0)
        for c, a in alpha.items():
            A += a
            R += a * row.m_minus_x(c)
        return R, A

    def _lin(self, terms: Iterable[tuple[int, dict]], prec: int) -> _Val:
        """Σ_n Σ_c α_{n,c} L_{n,c} over finite rows, log parts grouped by equal S (exact zeros)."""
        fl = _flint()
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
            return _Val(R)
        with fl.ctx.workprec(prec):
            B = fl.arb(0)
            for key, A in live:
                B += fl.arb(A) * self.rows[reps[key]].stats(prec)[3]
        return _Val(R, B)

    def _index_parts(self, n: int):
        """IEEE classes of (nll_n, smooth_n) as PyTorch computes them (exact 0 when ignored)."""
        if not self.kept[n]:
            return 0, 0
        y = self.y[n]
        nll = _emul(self.wcls[y], self._Lclass(n, y))
        if self.eps == 0:
            return nll, 0
        smooth = _eadd(*(_emul(self.wcls[c], self._Lclass(n, c)) for c in range(self.C)))
        return nll, smooth

    def _prob_class(self, n: int):
        """IEEE class of l_n = ⊕_c L_{n,c} ⊗ t'_c ⊗ w_c."""
        terms = []
        for c, tp in enumerate(self.tp[n]):
            ts = tp if _isspecial(tp) else _sign(tp)
            terms.append(_emul(self._Lclass(n, c), ts, self.wcls[c]))
        return _eadd(*terms)

    def _combine(self, nll, smooth):
        """(1-ε) ⊗ nll ⊕ (ε/C) ⊗ smooth, or nll alone when ε = 0 (PyTorch skips smoothing)."""
        if self.eps == 0:
            return nll
        return _eadd(_emul(_sign(self.one_minus_eps), nll), _emul(self.eps_c_cls, smooth))

    def _div(self, cls, val_fn, prec):
        """IEEE class of a reduced part divided by D (index 'mean')."""
        D = self.D
        if _isspecial(D):  # ±inf or NaN: finite/±inf = ±0, inf/inf and NaN = NaN
            return _NAN if _isspecial(cls) or math.isnan(D) else 0
        if D != 0:
            return _emul(_sign(D), cls)
        if _isspecial(cls):  # divided by +0
            return cls
        if cls == 0:
            return _NAN
        val = val_fn()
        if val.exact:
            s = _sign(val.r)
        else:
            ball = val.ball(prec)
            s = 1 if ball > 0 else -1 if ball < 0 else None
        if s is None:
            return _PENDING
        return _NAN if s == 0 else (_INF if s > 0 else -_INF)

    def losses(self, prec: int) -> list:
        """Per-sample ('none') or the one reduced loss: _Val, special float or _PENDING."""
        fl = _flint()
        M = self.M
        if self.prob:
            classes = [self._prob_class(n) for n in range(M)]
            if self.reduction == "none":
                return [c if _isspecial(c) else self._lin([(n, self.alpha(n))], prec) for n, c in enumerate(classes)]
            if self.reduction == "mean" and M * self.C == 0:
                return [_NAN]  # PyTorch: an empty input gives NaN for 'mean'
            total = _eadd(*classes) if classes else 0
            if _isspecial(total):
                return [total]
            return [self._lin(((n, self.alpha(n)) for n in range(M)), prec).scaled(self.sigma, prec)]

        parts = [self._index_parts(n) for n in range(M)]
        if self.reduction == "none":
            out = []
            for n, (nll, smooth) in enumerate(parts):
                cls = self._combine(nll, smooth)
                out.append(cls if _isspecial(cls) else self._lin([(n, self.alpha(n))], prec))
            return out
        N1 = _eadd(*(p[0] for p in parts)) if parts else 0
        N2 = _eadd(*(p[1] for p in parts)) if parts else 0
        if self.reduction == "mean":
            kept = [n for n in range(M) if self.kept[n]]
            N1 = self._div(N1, lambda: self._lin(((n, {self.y[n]: self.w[self.y[n]]}) for n in kept), prec), prec)
            if self.eps != 0:
                N2 = self._div(N2, lambda: self._lin(((n, {c: w for c, w in enumerate(self.w) if w != 0}) for n in kept),
                                                     prec), prec)
            if _PENDING in (N1, N2):
                return [_PENDING]
        cls = self._combine(N1, N2)
        if _isspecial(cls):
            return [cls]
        if _isspecial(self.sigma):  # divided by +0 yet finite: cannot happen (x/0 is never finite)
            raise AssertionError("finite loss over a zero denominator")
        if M == 0 or self.sigma == 0:
            return [_Val(fl.fmpq(0))]
        return [self._lin(((n, self.alpha(n)) for n in range(M)), prec).scaled(self.sigma, prec)]

    # -- gradient ----------------------------------------------------------------------------------
    def _go_classes(self, n: int) -> list:
        """IEEE classes of d(loss)/d(log p_{n,c}) as PyTorch's backward forms them."""
        C = self.C
        if self.prob:  # -σ ⊗ w_c ⊗ t'_c, σ = 1/#samples or 1 (> 0)
            return [_emul(-1, self.wcls[c], tp if _isspecial(tp) else _sign(tp)) for c, tp in enumerate(self.tp[n])]
        y = self.y[n]
        sig = self.sigma if _isspecial(self.sigma) else _sign(self.sigma)
        u1 = _emul(_sign(self.one_minus_eps) if self.eps else 1, sig)  # (1-ε)/D, or 1/D
        go = [_emul(self.wcls[y], _eneg(u1)) if c == y else 0 for c in range(C)]
        if self.eps != 0:
            u2 = _emul(self.eps_c_cls, sig)  # (ε/C)/D
            go = [_eadd(g, _emul(self.wcls[c], _eneg(u2))) for c, g in enumerate(go)]
        return go

    def grad_row(self, n: int, prec: int) -> list:
        """One gradient row: _Val or special float per class."""
        fl = _flint()
        C = self.C
        row = self.rows[n]
        if C == 0:
            return []
        if row.nan:
            return [_NAN] * C
        if not self.prob and not self.kept[n]:
            # No nll term; the smoothing term is masked to 0 *before* PyTorch multiplies by w_j,
            # so G_j = 0·w_j: exactly 0, but NaN for a NaN/±inf weight (ε > 0 only).
            go = [_emul(0, w) for w in self.wcls] if self.eps != 0 else []
            if not any(_isspecial(g) for g in go):
                return [_Val(fl.fmpq(0))] * C
            return [_NAN] * C  # Σ_c G_c is NaN, so is every G_j - p_j·ΣG
        go = self._go_classes(n)
        if any(_isspecial(g) for g in go):
            # g_j = go_j ⊖ p_j ⊗ Σ_c go_c (log_softmax backward); p_j = 0 exactly for -inf logits.
            total = _eadd(*go)
            out = [_eadd(go[j], _eneg(_emul(1 if row.finite[j] else 0, total))) for j in range(C)]
            assert all(_isspecial(v) for v in out)
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
                out.append(_Val(sA * p - sigma * alpha.get(j, 0)))
            return out
        e, s, S, _ = row.stats(prec)
        with fl.ctx.workprec(prec):
            sAb = fl.arb(sA) if sA != 0 else None
            for j in range(C):
                aj = alpha.get(j, fl.fmpq(0))
                if not row.finite[j] or sAb is None:
                    out.append(_Val(-sigma * aj))  # p_j = 0, or σA = 0: g_j = -σ α_j exactly
                elif j == row.k:
                    out.append(_Val(sA - sigma * aj, -sAb * (s / S)))  # σ(A - α_k) - σ A q_k
                else:
                    out.append(_Val(-sigma * aj, sAb * (e[j] / S)))  # -σ α_j + σ A p_j
        return out


# -- exact rounding to a format --------------------------------------------------------------------


def _rn_rat(n: int, d: int, fmt: Format) -> float:
    """n/d (d > 0) rounded to nearest-even in ``fmt`` (subnormals, overflow to inf), as a float."""
    if n == 0:
        return 0.0
    neg = n < 0
    n = -n if neg else n
    p = fmt.precision
    e = n.bit_length() - d.bit_length()  # floor(log2(n/d)) is e or e - 1
    if (n << max(0, -e)) < (d << max(0, e)):
        e -= 1
    if e > fmt.emax:
        r = _INF
    elif e < fmt.emin - p - 1:  # below half the smallest subnormal
        r = 0.0
    else:
        q = max(e, fmt.emin) - p + 1  # the quantum (ulp exponent) of n/d's binade
        num, den = (n, d << q) if q >= 0 else (n << -q, d)
        N, rem = divmod(num, den)
        if 2 * rem > den or (2 * rem == den and N & 1):
            N += 1
        r = _INF if N and q + N.bit_length() - 1 > fmt.emax else math.ldexp(N, q)
    return -r if neg else r


#: Rounding boundaries of every format (midpoints, overflow thresholds, ±half the smallest
#: subnormal) are multiples of 2^-1075.
_BOUNDARY_BITS = 1075


def _rn_plus(r, man: int, exp: int, fmt: Format) -> float:
    """RN_fmt(r + man·2^exp) for a rational r (fmpq), exactly, whatever the size of exp."""
    n, d = int(r.p), int(r.q)
    if man == 0:
        return _rn_rat(n, d, fmt)
    # r's distance to any rounding boundary other than r itself exceeds 2^-K, so a smaller offset
    # only matters by its sign: replace it by ±2^-(K+1) (keeps the integers small for e^-1e30).
    K = d.bit_length() + _BOUNDARY_BITS
    if man.bit_length() + exp <= -K:
        man, exp = (1 if man > 0 else -1), -(K + 1)
    if exp >= 0:
        return _rn_rat(n + ((man * d) << exp), d, fmt)
    return _rn_rat((n << -exp) + man * d, d << -exp, fmt)


def _dyadic(a) -> tuple[int, int]:
    man, exp = a.mid().man_exp()
    return int(man), int(exp)


def _ends(val, prec: int):
    """The exact dyadic ends (man, exp) of a value's ball part (outward-rounded), or None."""
    if _isspecial(val) or val.exact:
        return None
    fl = _flint()
    with fl.ctx.workprec(prec + 64):
        return _dyadic(val.b.lower()), _dyadic(val.b.upper())


def _round_range(val, fmt: Format, prec: int, ends=None) -> tuple[float, float]:
    """(RN(lower end), RN(upper end)) of a value: equal when the ball decides the rounding."""
    if _isspecial(val):
        return val, val
    if val.exact:
        r = _rn_rat(int(val.r.p), int(val.r.q), fmt)
        return r, r
    lo, hi = ends if ends is not None else _ends(val, prec)
    return _rn_plus(val.r, *lo, fmt), _rn_plus(val.r, *hi, fmt)


def rounded_ball(ball, dtype) -> float | None:
    """The correctly rounded value in ``dtype`` of every point of an arb ball, or None when the
    ball straddles a rounding boundary (public helper for tests and tools)."""
    fl = _flint()
    fmt = FORMATS[np.dtype(dtype).name] if not isinstance(dtype, str) else FORMATS[dtype]
    lo, hi = _round_range(_Val(fl.fmpq(0), ball), fmt, max(START_PREC, ball.mid().bits() + 64))
    return lo if lo == hi or (math.isnan(lo) and math.isnan(hi)) else None


# -- public ball API -------------------------------------------------------------------------------


def _as_ball(v, prec: int):
    if _isspecial(v):
        return v
    if v is _PENDING:
        return None
    return v.ball(prec)


def loss_balls(problem: Problem, prec: int = START_PREC) -> list:
    """The loss as arb balls at ``prec`` bits: one per sample for 'none' (in ``problem.rows()``
    order), one element otherwise. Non-finite results are Python floats (inf, -inf, nan); None
    marks the rare ±inf whose sign (a nonzero numerator over +0) this precision cannot decide."""
    return [_as_ball(v, prec) for v in _Oracle(problem).losses(prec)]


def grad_balls(problem: Problem, prec: int = START_PREC) -> np.ndarray:
    """d(loss)/d(logits) (for 'none': of the sum) as an (M, C) object array of arb balls in
    ``problem.rows()`` order; non-finite entries are Python floats."""
    o = _Oracle(problem)
    out = np.empty((o.M, o.C), dtype=object)
    for n in range(o.M):
        out[n] = [_as_ball(v, prec) for v in o.grad_row(n, prec)]
    return out


# -- certification ---------------------------------------------------------------------------------


@dataclass
class Values:
    """One set of reference values to certify.

    ``kind`` is 'loss' (``problem.output_shape``) or 'grad' (the logits' shape). Elements may be
    ``mpmath.mpf``, floats, decimal strings (certified as the decimal they spell) or (hi, lo)
    double-double pairs (pass ``hi`` and ``lo`` arrays as ``array=(hi, lo)``). With the tolerance
    τ = 2^-rel_bits·|v| + 2^floor (no absolute term when ``floor`` is None), a value fails when
    every point of the ball is farther than τ from it (a certain violation), passes when every
    point is within τ, and is undecided otherwise (after the precision loop).
    """

    label: str
    kind: str
    array: object
    rel_bits: float = GOOD_BITS
    floor: int | None = None

    @property
    def double_double(self) -> bool:
        return isinstance(self.array, tuple)


@dataclass
class Finding:
    """One disagreement (or undecided check) between a reference value and the oracle."""

    kind: str  # 'loss' or 'grad'
    index: tuple  # in the loss's ('none') or the logits' layout
    check: str  # a Values label (value check) or 'rounded:<format>'
    got: str
    oracle: str
    detail: str

    def line(self) -> str:
        where = f"{self.kind}[{', '.join(map(str, self.index))}]"
        return f"{where} {self.check}: got {self.got}, oracle {self.oracle} ({self.detail})"


@dataclass
class Report:
    """The outcome of certifying one problem."""

    problem: Problem
    failures: list[Finding] = field(default_factory=list)
    undecided: list[Finding] = field(default_factory=list)
    prec: int = START_PREC  # the largest arb precision used
    checked: int = 0  # individual checks made

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        return [f.line() for f in self.failures]

    def __str__(self) -> str:
        head = (f"{self.problem!r}: {len(self.failures)} failure(s), {len(self.undecided)} undecided, "
                f"{self.checked} checks, up to {self.prec} bits")
        return "\n".join([head] + ["  FAIL " + s for s in self.lines()]
                         + ["  UNDECIDED " + f.line() for f in self.undecided])


def _show(v, digits: int = 20, prec: int = START_PREC) -> str:
    """A value for a report line; balls are evaluated at ``prec`` (the precision that decided)."""
    if _isspecial(v):
        return repr(v)
    if v is None or v is _PENDING:
        return "undecided sign"
    if isinstance(v, _Val):
        if v.exact:
            return f"{v.r} (exact)"
        return v.ball(prec).str(digits, radius=True)
    if hasattr(v, "str"):  # arb
        return v.str(digits, radius=True)
    return repr(v)


def _to_ref(v):
    """A reference value as an exact arb (decimal strings: a ball containing the decimal), or a
    special float."""
    import mpmath

    fl = _flint()
    if isinstance(v, tuple):  # double-double
        hi, lo = float(v[0]), float(v[1])
        if not math.isfinite(hi):
            return hi
        with fl.ctx.workprec(2200):  # exact: hi and lo span < 2200 bits
            return fl.arb(hi) + fl.arb(lo)
    if isinstance(v, mpmath.mpf):
        if mpmath.isnan(v) or mpmath.isinf(v):
            return float(v)
        sign, man, exp, _ = v._mpf_
        return fl.arb((-int(man) if sign else int(man), int(exp)))
    if isinstance(v, str):
        s = v.strip().lower().lstrip("+")
        if s in ("nan", "inf", "-inf"):
            return float(s)
        with fl.ctx.workprec(512):
            return fl.arb(v)
    f = float(v)
    return f if not math.isfinite(f) else fl.arb(f)


def _same_special(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _value_outcome(ref, truth, rel_bits: float, floor: int | None, prec: int, dd: bool = False) -> tuple[str, str]:
    """('pass' | 'fail' | 'open', detail) for one reference value against one truth."""
    fl = _flint()
    if dd and _isspecial(ref) and isinstance(truth, _Val) and not math.isnan(ref):
        # A double-double's hi is RN_float64(v): ±inf stands for a finite v beyond float64's range.
        lo, hi = _round_range(truth, FORMATS["float64"], prec)
        if lo == hi:
            return ("pass", "") if lo == ref else ("fail", "special value differs")
        return "open", "ball too wide to decide float64 overflow"
    if _isspecial(truth) or _isspecial(ref):
        if _isspecial(truth) and _isspecial(ref) and _same_special(truth, ref):
            return "pass", ""
        return "fail", "special value differs"
    if truth is _PENDING:
        return "open", "the oracle cannot decide the sign of a numerator over +0"
    P = prec + 128
    with fl.ctx.workprec(P):
        X = truth.ball(P)
        Z = ref - X  # contains v - t for every t in the ball
        tol = abs(ref) * fl.arb(2) ** (-rel_bits)
        if floor is not None:
            tol += fl.arb((1, floor))
        if Z.abs_lower() > tol:
            err = Z.abs_lower()
            rel = err / abs(X) if not X.contains(0) else None
            bits = (-rel.log() / fl.arb(2).log()) if rel is not None and rel > 0 else None
            return "fail", f"error {err.str(3)}" + (f", {bits.str(4)} correct bits" if bits is not None else "")
        if Z.abs_upper() <= tol:
            return "pass", ""
    return "open", "ball too wide to decide"


class _Item:
    """One true value and everything to check against it."""

    __slots__ = ("index", "kind", "pos", "refs", "rounded", "truth")

    def __init__(self, kind, pos, index):
        self.kind, self.pos, self.index = kind, pos, index
        self.refs: list[tuple] = []  # (label, ref arb or special, rel_bits, floor, double-double?)
        self.rounded: dict[str, float] = {}  # format name -> given value
        self.truth = None


def _flatten(problem: Problem, kind: str, arr) -> list:
    """Reference values in oracle order: losses flattened, gradients in problem.rows() order."""
    if isinstance(arr, tuple):  # (hi, lo)
        hi, lo = (_flatten(problem, kind, a) for a in arr)
        return list(zip(hi, lo))
    a = np.asarray(arr, dtype=object) if not isinstance(arr, np.ndarray) else arr
    if kind == "loss":
        return list(np.reshape(a, -1))
    if a.ndim != problem.logits.ndim:
        raise ValueError(f"gradient values must have the logits' shape {problem.logits.shape}, got {a.shape}")
    return list(np.moveaxis(a, problem.class_axis, -1).reshape(-1))  # rows order (C = 0 safe)


def _grad_index(problem: Problem) -> list[tuple]:
    """For each (n, j) in rows() order, its index in the logits' layout."""
    M, C = problem.num_samples, problem.num_classes
    pos = problem.unrows(np.arange(M * C).reshape(M, C))
    out = [()] * (M * C)
    for idx in np.ndindex(pos.shape):
        out[int(pos[idx])] = tuple(int(i) for i in idx)
    return out


def certify(
    problem: Problem,
    *,
    loss_values=None,
    grad_values=None,
    rounded: Mapping[str, tuple] | None = None,
    values: Iterable[Values] = (),
    rel_bits: float = GOOD_BITS,
    loss_floor: int | None = None,
    grad_floor: int | None = DD_FLOOR,
    max_prec: int = MAX_PREC,
) -> Report:
    """Certify reference values of ``problem`` against the arb oracle.

    ``loss_values`` (output shape) and ``grad_values`` (logits' shape) are arrays of
    ``mpmath.mpf`` (as returned by ``reference.cross_entropy`` / ``cross_entropy_grad``); each
    must lie within its ball widened by 2^-rel_bits·|value| (+ 2^loss_floor / 2^grad_floor; the
    gradient API rebuilds values from double-doubles, hence :data:`DD_FLOOR`). ``rounded``
    maps a format name to (rounded loss, rounded gradient or None): each must equal the rounding
    of the ball in that format. ``values`` adds further :class:`Values` sets. Balls that do not
    decide are recomputed at twice the precision up to ``max_prec`` bits; what stays undecided is
    listed in ``Report.undecided``, never counted as a pass or a failure.
    """
    _flint()
    oracle = _Oracle(problem)
    M, C = oracle.M, oracle.C
    sets = list(values)
    if loss_values is not None:
        sets.append(Values("value", "loss", loss_values, rel_bits, loss_floor))
    if grad_values is not None:
        sets.append(Values("value", "grad", grad_values, rel_bits, grad_floor))
    n_loss = M if problem.reduction == "none" else 1
    sample_shape = problem.sample_shape
    loss_items = [_Item("loss", i, tuple(int(v) for v in np.unravel_index(i, sample_shape)) if problem.reduction == "none" else ())
                  for i in range(n_loss)]
    gidx = None
    grad_items: list[_Item] = []
    wants_grad = any(s.kind == "grad" for s in sets) or any(g is not None for _, g in (rounded or {}).values())
    if wants_grad:
        gidx = _grad_index(problem)
        grad_items = [_Item("grad", (n, j), gidx[n * C + j]) for n in range(M) for j in range(C)]
    for s in sets:
        items = loss_items if s.kind == "loss" else grad_items
        flat = _flatten(problem, s.kind, s.array)
        if len(flat) != len(items):
            raise ValueError(f"{s.label}: expected {len(items)} {s.kind} values, got {len(flat)}")
        for it, v in zip(items, flat):
            it.refs.append((s.label, _to_ref(v), s.rel_bits, s.floor, s.double_double))
    for name, (lv, gv) in (rounded or {}).items():
        for items, arr, kind in ((loss_items, lv, "loss"), (grad_items, gv, "grad")):
            if arr is None:
                continue
            flat = _flatten(problem, kind, np.asarray(arr).astype(np.float64))
            for it, v in zip(items, flat):
                it.rounded[name] = float(v)

    report = Report(problem)
    pending_loss, pending_grad = list(loss_items), list(grad_items)
    prec = START_PREC
    while True:
        report.prec = prec
        if pending_loss:
            truths = oracle.losses(prec)
            for it in pending_loss:
                it.truth = truths[it.pos]
        for n in sorted({it.pos[0] for it in pending_grad}):
            row = oracle.grad_row(n, prec)
            for it in pending_grad:
                if it.pos[0] == n:
                    it.truth = row[it.pos[1]]
        last = prec >= max_prec
        pending_loss = [it for it in pending_loss if not _settle(it, prec, report, final=last)]
        pending_grad = [it for it in pending_grad if not _settle(it, prec, report, final=last)]
        if last or not (pending_loss or pending_grad):
            break
        prec = min(2 * prec, max_prec)
    return report


def _settle(it: _Item, prec: int, report: Report, *, final: bool) -> bool:
    """Check one item at this precision. Record its findings and return True when every check is
    decided (or ``final``); return False to recompute it at a higher precision."""
    truth = it.truth
    outcomes = []
    for label, ref, rel_bits, floor, dd in it.refs:
        status, detail = _value_outcome(ref, truth, rel_bits, floor, prec, dd)
        outcomes.append((label, _show(ref, 25), status, detail))
    ends = _ends(truth, prec) if it.rounded and isinstance(truth, _Val) else None
    for name, given in it.rounded.items():
        fmt = FORMATS[name]
        if truth is _PENDING:
            outcomes.append((f"rounded:{name}", repr(given), "open", "sign over +0 undecided"))
            continue
        lo, hi = _round_range(truth, fmt, prec, ends)
        if _isspecial(truth) or lo == hi:
            ok = _same_special(lo, given) if _isspecial(lo) else (not math.isnan(given) and given == lo)
            outcomes.append((f"rounded:{name}", repr(given), "pass" if ok else "fail",
                             "" if ok else f"correctly rounded is {lo!r}"))
        else:
            # RN is monotone: the true rounding lies in [RN(lo), RN(hi)].
            inside = not math.isnan(given) and lo <= given <= hi
            outcomes.append((f"rounded:{name}", repr(given), "open" if inside else "fail",
                             f"ball rounds to {lo!r} .. {hi!r}"))
    if not final and any(s == "open" for *_, s, _ in outcomes):
        return False
    oracle_text = _show(truth, prec=prec)
    for label, got, status, detail in outcomes:
        report.checked += 1
        if status == "fail":
            report.failures.append(Finding(it.kind, it.index, label, got, oracle_text, detail))
        elif status == "open":
            report.undecided.append(Finding(it.kind, it.index, label, got, oracle_text, detail))
    return True


# -- convenience: certify the reference and stored references -------------------------------------


def certify_reference(problem: Problem, *, rel_bits: float = GOOD_BITS, max_prec: int = MAX_PREC) -> Report:
    """Run ``harness.reference`` on ``problem`` through its public API and certify everything it
    returns: ``cross_entropy`` and ``cross_entropy_grad`` (mpf values), ``evaluate``'s
    double-doubles, and ``rounded_loss`` / ``rounded_grad`` in every format."""
    from harness import reference

    kw = problem.kwargs()
    loss = reference.cross_entropy(problem.logits, problem.target, **kw)
    grad = reference.cross_entropy_grad(problem.logits, problem.target, **kw)
    ex = reference.evaluate(problem)
    return certify(
        problem,
        loss_values=loss,
        grad_values=grad,
        rounded={name: (ex.rounded_loss(f.dtype), ex.rounded_grad(f.dtype)) for name, f in FORMATS.items()},
        values=[Values("evaluate.loss_hi+lo", "loss", (ex.loss_hi, ex.loss_lo), rel_bits, DD_FLOOR),
                Values("evaluate.grad_hi+lo", "grad", (ex.grad_hi, ex.grad_lo), rel_bits, DD_FLOOR)],
        rel_bits=rel_bits,
        max_prec=max_prec,
    )


def certify_double_double(problem: Problem, loss_hi, loss_lo, grad_hi, grad_lo, *, loss_str=None,
                          max_prec: int = MAX_PREC) -> Report:
    """Certify stored double-doubles (e.g. a golden file): hi + lo to 106 bits (+ DD_FLOOR), hi as
    the correctly rounded float64, the rounding of hi + lo to the other formats (what
    ``Exact.rounded_*`` and the metrics derive from them), and optional 40-digit loss strings
    (the reference's value to 106 bits, plus 10^-39 for the decimal rounding)."""
    from harness.metrics import round_to_format

    def rounded_from(hi, lo, fmt):
        if fmt.name == "float64":
            return np.asarray(hi, dtype=np.float64)
        return round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi))

    rounded = {name: (rounded_from(loss_hi, loss_lo, f), rounded_from(grad_hi, grad_lo, f)) for name, f in FORMATS.items()}
    values = [Values("loss_hi+lo", "loss", (loss_hi, loss_lo), GOOD_BITS, DD_FLOOR),
              Values("grad_hi+lo", "grad", (grad_hi, grad_lo), GOOD_BITS, DD_FLOOR)]
    if loss_str is not None:
        # The strings print the reference's value (>= 106 correct bits) to 40 digits.
        values.append(Values("loss_str", "loss", np.asarray(loss_str, dtype=object),
                             -math.log2(2.0**-GOOD_BITS + 1e-39), None))
    return certify(problem, rounded=rounded, values=values, max_prec=max_prec)
