"""The arb oracle (harness.certify): first validated against independent evidence (torch float64,
hand-derived values, the 3000-bit mpmath oracle, NumPy's IEEE casts), then used to certify
harness.reference on a fuzz corpus, on ordinary rows bit by bit, and the golden files.

Tests marked ``certify`` check the *reference* against the oracle. They fail, listing every
disagreement grouped with a minimal reproducer, for as long as the reference has defects; they
are neither weakened nor xfailed (deselect with ``-m "not certify"`` while a fix is under way).
"""

from __future__ import annotations

import collections
import math
import shutil
import time

import mpmath
import numpy as np
import pytest

from harness.formats import FORMATS
from harness.problem import Problem
from tests import mp_oracle
from tests.certify_corpus import DTYPES, corpus, regressions, source

flint = pytest.importorskip("flint", reason="python-flint is needed for the arb oracle (pip install 'xent-harness[certify]')")
from harness import certify as K  # noqa: E402
from harness.certify.certificate import reference_ball  # noqa: E402
from harness.certify.oracle import Oracle  # noqa: E402
from harness.certify.rounding import round_range, round_ratio, round_rational_plus  # noqa: E402

inf, nan = math.inf, math.nan


def mid(v) -> float:
    """A ball's midpoint as a float (specials pass through)."""
    return v if isinstance(v, float) else float(v.mid())


def loss_f64(p: Problem, prec: int = 192) -> np.ndarray:
    return np.array([mid(v) for v in K.loss_balls(p, prec)]).reshape(p.output_shape)


def grad_f64(p: Problem, prec: int = 192) -> np.ndarray:
    g = K.grad_balls(p, prec)
    return p.unrows(np.vectorize(mid, otypes=[float])(g) if g.size else np.zeros(g.shape))


# -- the oracle against torch float64 --------------------------------------------------------------

try:
    import torch
except ImportError:  # only the comparisons with torch need it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install 'xent-harness[torch]')")


def torch_f64(p: Problem):
    x = torch.tensor(p.logits.astype(np.float64), requires_grad=True)
    t = torch.tensor(p.target.astype(np.float64) if p.probability_target else p.target)
    w = None if p.weight is None else torch.tensor(p.weight.astype(np.float64))
    loss = torch.nn.functional.cross_entropy(x, t, weight=w, ignore_index=p.ignore_index, reduction=p.reduction,
                                             label_smoothing=p.label_smoothing)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def ordinary_problem(rng: np.random.Generator) -> Problem:
    """Problems where torch float64 is accurate (moderate logits: no loss or probability rounds
    to 0 in float64), covering every option and the special-value rules."""
    C = int(rng.integers(1, 8))
    layout = rng.choice(["unbatched", "2d", "kdim"], p=[0.15, 0.6, 0.25])
    if layout == "unbatched":
        other, axis = (), 0
    elif layout == "2d":
        other, axis = (int(rng.integers(0, 6)),), 1
    else:
        other, axis = (int(rng.integers(1, 3)), int(rng.integers(1, 3))), 1
    x = rng.normal(0, float(rng.choice([0.1, 1.0, 4.0])), (*other, C))
    special = rng.random()
    if special < 0.15:
        x[rng.random(x.shape) < 0.3] = -inf  # masks (possibly whole rows, possibly targets)
    elif special < 0.22:
        x[rng.random(x.shape) < 0.15] = float(rng.choice([inf, nan]))
    x = np.moveaxis(x, -1, axis)
    weight = None
    u = rng.random()
    if u < 0.2:
        weight = rng.uniform(0.1, 2, C)
    elif u < 0.35:
        weight = rng.uniform(0.1, 2, C) * (rng.random(C) < 0.6)  # zeros
    elif u < 0.45:
        weight = rng.uniform(-1, 2, C)  # negative
    elif u < 0.5:
        weight = rng.choice([1.0, -1.0], C)  # sums that cancel exactly
    elif u < 0.56:
        weight = rng.uniform(0.1, 2, C)
        weight[rng.integers(0, C)] = float(rng.choice([nan, inf, -inf]))  # read or not, see the table
    eps = float(rng.choice([0.0, 0.0, 0.1, 0.5, 1.0, rng.uniform(0, 1)]))
    reduction = str(rng.choice(["mean", "sum", "none"]))
    if rng.random() < 0.3:
        t = rng.uniform(0, 1, (*other, C))
        v = rng.random()
        if v < 0.3:
            t = t / t.sum(axis=-1, keepdims=True)
        elif v < 0.45:
            t[rng.random(t.shape) < 0.4] = 0.0
        elif v < 0.55:
            t = t - 0.4
        elif v < 0.6:
            t[rng.random(t.shape) < 0.2] = inf
        return Problem(x, np.moveaxis(t, -1, axis), weight=weight, reduction=reduction, label_smoothing=eps)
    ignore = int(rng.choice([-100, 0, C - 1]))
    t = rng.integers(0, C, other)
    if rng.random() < 0.3:
        t = np.where(rng.random(other) < 0.4, ignore, t)
    if rng.random() < 0.07:
        t = np.full(other, ignore)
    return Problem(x, np.asarray(t, dtype=np.int64), weight=weight, ignore_index=ignore, reduction=reduction,
                   label_smoothing=eps)


def assert_same_specials(ours, theirs, what):
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN pattern")
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs), err_msg=f"{what}: +inf pattern")
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs), err_msg=f"{what}: -inf pattern")


@needs_torch
def test_oracle_agrees_with_torch_float64_on_ordinary_problems_of_every_option():
    rng = np.random.default_rng(2026)
    worst_loss = worst_grad = 0.0
    seen = collections.Counter()
    for i in range(400):
        p = ordinary_problem(rng)
        seen.update(p.features)
        tl, tg = torch_f64(p)
        ol, og = loss_f64(p), grad_f64(p)
        ctx = f"problem {i}: {source(p)}"
        assert_same_specials(ol, tl, f"loss, {ctx}")
        assert_same_specials(og, tg, f"grad, {ctx}")
        seen["special loss"] += int((~np.isfinite(ol)).any())
        seen["special grad"] += int((~np.isfinite(og)).any())
        fin = np.isfinite(tl)
        if fin.any():
            # torch's lse - x_t is accurate to a few ulps of lse, not of a small loss.
            scale = np.maximum(np.abs(ol[fin]), 1.0)
            worst_loss = max(worst_loss, float(np.max(np.abs(tl[fin] - ol[fin]) / scale)))
        gfin = np.isfinite(tg)
        if gfin.any():
            scale = max(float(np.linalg.norm(og[gfin])), 1e-300)
            worst_grad = max(worst_grad, float(np.linalg.norm(tg[gfin] - og[gfin])) / scale)
    print(f"\nlargest disagreement with torch float64: loss {worst_loss:.3g}, grad {worst_grad:.3g}; {dict(seen)}")
    assert worst_loss <= 1e-13
    assert worst_grad <= 1e-13
    assert {"weight", "ignore_index", "label_smoothing", "probability_target", "kdim", "unbatched",
            "reduction:mean", "reduction:sum", "reduction:none"} <= set(seen)
    assert seen["special loss"] >= 20 and seen["special grad"] >= 20


# The special-values table of docs/semantics.md, plus the cases it is silent about (decided by
# torch 2.13 in float64): (logits, target, options, loss, gradient) with "fin" for finite.
F = "fin"
SPECIAL_TABLE = [
    # a -inf logit, not the target: contributes 0; gradient finite
    ([[0.0, -inf, 1.0]], [0], {"reduction": "none"}, [F], [[F, F, F]]),
    # -inf at the target: +inf (negative weight: -inf; zero weight: 0·inf = NaN), gradient finite
    ([[0.0, -inf, 1.0]], [1], {"reduction": "none"}, [inf], [[F, F, F]]),
    ([[0.0, -inf]], [1], {"reduction": "none", "weight": [1.0, -1.0]}, [-inf], [[F, F]]),
    ([[0.0, -inf]], [1], {"reduction": "none", "weight": [1.0, 0.0]}, [nan], [[F, F]]),
    # any -inf logit with ε > 0: +inf, NaN if that class's weight is 0
    ([[0.0, -inf, 1.0]], [0], {"label_smoothing": 0.1}, inf, [[F, F, F]]),
    ([[0.0, -inf, 1.0]], [0], {"label_smoothing": 0.1, "weight": [1.0, 0.0, 1.0]}, nan, [[F, F, F]]),
    # ε = 1 with an infinite nll: (1 - ε)·inf = NaN (table silent; torch)
    ([[-inf, 0.0]], [0], {"label_smoothing": 1.0, "reduction": "none"}, [nan], [[F, F]]),
    # -inf logit with probability target 0 at that class: 0·inf = NaN
    ([[1.0, -inf, 1.0]], [[0.5, 0.0, 0.5]], {}, nan, [[F, F, F]]),
    ([[1.0, -inf, 1.0]], [[0.5, 0.0, 0.5]], {"label_smoothing": 0.3}, inf, [[F, F, F]]),
    # a +inf or NaN logit: NaN, NaN row
    ([[inf, 0.0], [1.0, 2.0]], [1, 0], {"reduction": "none"}, [nan, F], [[nan, nan], [F, F]]),
    ([[nan, 0.0], [1.0, 2.0]], [1, 0], {}, nan, [[nan, nan], [F, F]]),
    # every logit -inf: NaN, NaN row
    ([[-inf, -inf], [1.0, 2.0]], [0, 0], {"reduction": "sum"}, nan, [[nan, nan], [F, F]]),
    # an ignored sample with NaN / all -inf: excluded (0), but a NaN gradient row
    ([[nan, 0.0], [1.0, 2.0]], [-100, 0], {"reduction": "none"}, [0.0, F], [[nan, nan], [F, F]]),
    ([[-inf, -inf], [1.0, 2.0]], [-100, 0], {}, F, [[nan, nan], [F, F]]),
    # every sample ignored with 'mean': NaN, gradient 0 (NaN rows stay NaN)
    ([[1.0, 0.0], [0.0, 2.0]], [-100, -100], {}, nan, [[0.0, 0.0], [0.0, 0.0]]),
    ([[nan, 0.0], [0.0, 2.0]], [-100, -100], {"label_smoothing": 0.3}, nan, [[nan, nan], [0.0, 0.0]]),
    # kept samples whose weights are 0: 0/0 = NaN, NaN gradient
    ([[1.0, 0.0], [0.0, 2.0]], [0, 0], {"weight": [0.0, 1.0]}, nan, [[nan, nan], [nan, nan]]),
    # target weights summing to 0 with a nonzero numerator (table silent; torch): x/(+0) = ±inf,
    # and the backward's 1/(+0) gives this pattern
    ([[1.0, 0.0], [0.0, 2.0]], [0, 1], {"weight": [1.0, -1.0]}, inf, [[nan, inf], [-inf, nan]]),
    ([[1.0, 0.0], [0.0, 2.0]], [0, 1], {"weight": [1.0, -1.0], "label_smoothing": 0.2}, inf,
     [[nan, nan], [nan, nan]]),
    # an infinite probability target (table silent; torch): +inf, gradient [NaN, +inf]
    ([[0.0, 0.0]], [[inf, 0.0]], {"reduction": "sum"}, inf, [[nan, inf]]),
    ([[0.0, 0.0]], [[inf, 0.0]], {"reduction": "sum", "label_smoothing": 1.0}, nan, [[nan, nan]]),
    ([[0.0, -inf]], [[inf, 0.0]], {"reduction": "sum"}, nan, [[nan, nan]]),  # inf · (L = 0)
    # a NaN or ±inf weight: not read with ε = 0 unless a kept target uses it; with ε > 0 it is,
    # ignored rows included (G = 0·w_j)
    ([[1.0, 0.0], [0.0, 2.0]], [1, 1], {"weight": [nan, 1.0], "reduction": "sum"}, F, [[F, F], [F, F]]),
    ([[1.0, 0.0], [0.0, 2.0]], [-100, 1], {"weight": [nan, 1.0], "label_smoothing": 0.1, "reduction": "none"},
     [0.0, nan], [[nan, nan], [nan, nan]]),
    ([[1.0, 0.0], [0.0, 2.0]], [-100, 1], {"weight": [inf, 1.0], "label_smoothing": 0.1, "reduction": "sum"},
     inf, [[nan, nan], [nan, inf]]),
    ([[1.0, 0.0], [0.0, 2.0]], [0, 1], {"weight": [inf, 1.0]}, nan, [[nan, nan], [0.0, 0.0]]),
    ([[1.0, 0.0], [0.0, 2.0]], [0, 1], {"weight": [-inf, 1.0], "reduction": "sum"}, -inf, [[nan, -inf], [F, F]]),
]


@needs_torch
@pytest.mark.parametrize(("x", "t", "kw", "loss", "grad"), SPECIAL_TABLE)
def test_special_values_follow_the_table_and_torch(x, t, kw, loss, grad):
    kw = {k: (np.array(v) if k == "weight" else v) for k, v in kw.items()}
    p = Problem(np.array(x), np.array(t), **kw)
    ol, og = loss_f64(p), grad_f64(p)
    for got, want, what in ((ol, np.array(loss, dtype=object), "loss"), (og, np.array(grad, dtype=object), "grad")):
        for g, w in zip(np.ravel(got), np.ravel(want)):
            if w == F:
                assert math.isfinite(g), what
            elif math.isnan(w):
                assert math.isnan(g), what
            else:
                assert g == w, what
    tl, tg = torch_f64(p)
    assert_same_specials(ol, tl, "loss vs torch")
    assert_same_specials(og, tg, "grad vs torch")
    np.testing.assert_allclose(ol[np.isfinite(ol)], tl[np.isfinite(ol)], rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(og[np.isfinite(og)], tg[np.isfinite(og)], rtol=1e-13, atol=1e-15)


@needs_torch
def test_empty_batches_and_no_classes_follow_torch():
    for shape in ((0, 3), (2, 0), (0, 0)):
        for prob in (False, True):
            if not prob and shape[1] == 0 and shape[0] == 0:
                continue
            t = np.zeros(shape) if prob else np.full(shape[:1], -100, dtype=np.int64)
            for reduction in ("mean", "sum", "none"):
                for eps in (0.0, 0.5):
                    p = Problem(np.zeros(shape), t, reduction=reduction, label_smoothing=eps)
                    tl, _ = torch_f64(p)
                    ol = loss_f64(p)
                    assert ol.shape == np.shape(tl)
                    np.testing.assert_array_equal(ol, tl, err_msg=f"{shape} prob={prob} {reduction} ε={eps}")
                    assert K.grad_balls(p).shape == (p.num_samples, p.num_classes)


# -- hand-derived values ---------------------------------------------------------------------------


def agrees(ball, value, bits: int = 180) -> bool:
    """Whether an arb ball is within 2^-bits (relative) of an mpmath value computed at more bits."""
    v = reference_ball(value if isinstance(value, mpmath.mpf) else mpmath.mpf(value))  # mpf(mpf) would round
    with flint.ctx.workprec(600):
        return bool(abs(ball - v).abs_lower() <= abs(v) * flint.arb(2) ** -bits)


def test_worked_example_from_the_tutorial():
    x = np.array([[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]])
    per = K.loss_balls(Problem(x, np.array([0, 2]), reduction="none"), 200)
    assert [round(mid(v), 5) for v in per] == [0.41703, 2.52450]
    (mean,) = K.loss_balls(Problem(x, np.array([0, 2])), 200)
    assert round(mid(mean), 5) == 1.47076
    # and in closed form: log(Σe^x) - x_t, evaluated independently with mpmath at 300 bits
    with mpmath.workprec(300):
        want = [mpmath.log(sum(mpmath.exp(mpmath.mpf(v)) for v in row)) - mpmath.mpf(row[c]) for row, c in zip(x, [0, 2])]
        for ball, w in zip(per, want):
            assert agrees(ball, w, 190)
            assert ball.rad() < 2.0**-190


@pytest.mark.parametrize("C", [1, 2, 3, 7, 1000])
def test_all_equal_logits_give_log_C(C):
    (ball,) = K.loss_balls(Problem(np.full((2, C), -3.25), np.array([0, C - 1])), 300)
    with flint.ctx.workprec(300):
        assert ball.overlaps(flint.arb(C).log()) and ball.rad() < flint.arb(2) ** -280
    # the gradient is rational: p_j - [j = t] over 2 samples, exactly
    g = Oracle(Problem(np.full((2, C), -3.25), np.array([0, C - 1]))).grad_row(0, 128)
    assert all(v.exact for v in g)
    assert g[0].r == flint.fmpq(1, 2 * C) - flint.fmpq(1, 2)


def test_regression_values_from_first_principles():
    cases = dict(regressions())
    # [20, 0] float32: log1p(e^-20)
    (v,) = K.loss_balls(cases["tiny-loss-20-f32"], 200)
    assert float(v.mid()) == pytest.approx(2.06115362031438070324e-9, rel=1e-19)
    with flint.ctx.workprec(200):
        assert v.overlaps(flint.arb(-20).exp().log1p())
    # weight 2^40, ε = 0.5: grad[0] = σ(A p_0 - α_0) by hand: α = (ε/2)·w + (1-ε)·w_1 [c = 1]
    p = cases["weight-2^40-smoothing"]
    with mpmath.workprec(300):
        w0, w1, eps = mpmath.mpf(2) ** 40, mpmath.mpf(1), mpmath.mpf("0.5")
        a0, a1 = eps / 2 * w0, eps / 2 * w1 + (1 - eps) * w1
        p0 = 1 / (1 + mpmath.exp(-26))
        want = (a0 + a1) * p0 - a0
    g = K.grad_balls(p, 256)[0, 0]
    assert float(g.mid()) == pytest.approx(-0.6543756984212587, rel=1e-15)
    assert agrees(g, want, 240)
    # zeros (3, 2), weights [0.1, 0.7], mean: ln 2 and exactly -1/6 at the target
    p = cases["weighted-mean-zeros"]
    (v,) = K.loss_balls(p, 200)
    with flint.ctx.workprec(200):
        assert v.overlaps(flint.arb(2).log())
    g = Oracle(p).grad_row(0, 128)
    assert g[0].exact and g[0].r == flint.fmpq(-1, 6) and g[1].r == flint.fmpq(1, 6)
    # weight [1e308, 1], mean: ln 2 and ±1/4 exactly (Σw overflows float64; the contract is exact)
    p = cases["weight-1e308-mean"]
    (v,) = K.loss_balls(p, 200)
    with flint.ctx.workprec(200):
        assert v.overlaps(flint.arb(2).log())
    g = Oracle(p).grad_row(1, 128)
    assert (g[0].r, g[1].r) == (flint.fmpq(-1, 4), flint.fmpq(1, 4))
    # 1000.25 + e^-1000.25 is just above a float16 midpoint: it rounds up to 1000.5
    p = cases["f16-midpoint-1000.25"]
    (v,) = Oracle(p).losses(128)
    lo, hi = round_range(v, FORMATS["float16"], 128)
    assert lo == hi == 1000.5


def test_oracle_agrees_with_the_3000_bit_mpmath_oracle():
    rng = np.random.default_rng(5)
    problems = [
        Problem(np.array([[200.0, 0.0]]), np.array([0]), reduction="none"),
        Problem(np.array([[1e4, 0.0], [-3e3, 2.0]]), np.array([0, 1]), reduction="none"),
        Problem(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([0, 1]), weight=np.array([1.0, -1.0]), reduction="sum"),
        Problem(np.array([[1e-300, -1e-300, 0.0]]), np.array([1]), label_smoothing=1.0),
        Problem(np.array([[3.0, 1.0], [0.0, 4.0]]), np.array([[0.9, 0.3], [-0.2, 1.5]])),
    ]
    for _ in range(40):
        C, N = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        x = rng.normal(0, float(rng.choice([0.5, 5, 50])), (N, C))
        w = rng.uniform(-0.5, 2, C) if rng.random() < 0.5 else None
        eps = float(rng.choice([0.0, 0.2, 1.0]))
        red = str(rng.choice(["mean", "sum", "none"]))
        if rng.random() < 0.3:
            problems.append(Problem(x, rng.uniform(-0.2, 1, (N, C)), weight=w, reduction=red, label_smoothing=eps))
        else:
            problems.append(Problem(x, rng.integers(0, C, N), weight=w, reduction=red, label_smoothing=eps))
    for p in problems:
        want = mp_oracle.loss(p.logits, p.target, **p.kwargs())
        want = want if isinstance(want, list) else [want]
        got = K.loss_balls(p, 400)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            if isinstance(g, float):
                assert math.isnan(g) and mpmath.isnan(w), source(p)
                continue
            with mpmath.workprec(3000):
                text = mpmath.nstr(w, 320) if w else "0"
            with flint.ctx.workprec(1200):
                W = flint.arb(text)
                # 2^-350 relative: both agree and the oracle's ball is tight. mp_oracle's textbook
                # log-sum-exp minus x_t has an absolute error of ~2^-3000 times the logits' size.
                tol = abs(W) * flint.arb(2) ** -350 + flint.arb(2) ** -2480
                assert abs(g - W) <= tol, source(p)


# -- exact rounding and exactness ------------------------------------------------------------------


def ieee_round(v: float, fmt) -> float:
    """Independent correct rounding of a float64 value: NumPy's casts (single roundings in
    hardware / npy_double_to_half) for float16 and float32, MPFR via gmpy2 for bfloat16, because
    ml_dtypes casts float64 -> bfloat16 through float32 (two roundings: 1 + 2^-8 + 2^-30 -> 1)."""
    import gmpy2

    if fmt.name == "bfloat16":
        ctx = gmpy2.context(precision=fmt.precision, emin=fmt.emin - fmt.precision + 2, emax=fmt.emax + 1,
                            subnormalize=True)
        with gmpy2.context(ctx):
            return float(gmpy2.mpfr(v) + 0)
    with np.errstate(over="ignore"):
        return float(np.array(v).astype(fmt.dtype).astype(np.float64))


def test_rounding_is_ieee_round_to_nearest_even_with_subnormals_and_overflow():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 2**63, 6000, dtype=np.uint64).view(np.float64)
    vals = [v for v in raw.tolist() if math.isfinite(v)]
    for name, fmt in FORMATS.items():
        # values spread over (and past) this format's exponent range, its ties and subnormals
        near = [v for v in np.exp2(rng.uniform(fmt.emin - fmt.precision - 3, fmt.emax + 2, 3000)).tolist()
                if math.isfinite(v) and v > 0]
        near += [v * (1 + 2.0**-fmt.precision) for v in near[:500]]
        ties = [(k + 0.5) * 2.0 ** (fmt.emin - fmt.precision + 1) for k in range(8)]
        if name != "float64":  # these need more than 53 bits in float64
            ties += [fmt.max + 2.0 ** (fmt.emax - fmt.precision), 1 + 2.0**-fmt.precision, 1 + 3 * 2.0**-fmt.precision]
        for v in vals + near + ties:
            for s in (v, -v):
                n, d = float(s).as_integer_ratio()
                assert round_ratio(n, d, fmt) == ieee_round(s, fmt), (name, s.hex())
    f64 = FORMATS["float64"]
    assert round_ratio(2**53 + 1, 2**53, f64) == 1.0  # tie to even (down)
    assert round_ratio(2**53 + 3, 2**53, f64) == 1 + 2.0**-51  # tie to even (up)
    assert round_ratio(2**1024 - 2**970, 1, f64) == inf  # max + ulp/2 overflows
    assert round_ratio(2**1024 - 2**970 - 1, 1, f64) == f64.max
    assert round_ratio(1, 2**1075, f64) == 0.0 and round_ratio(1 + 2**40, 2**1115, f64) == 2.0**-1074
    # a rational that no float is: 1/3
    assert round_ratio(1, 3, FORMATS["float16"]) == float(np.float16(1 / 3))
    assert round_ratio(1, 3, f64) == 1 / 3
    # an offset far below any rounding boundary only counts by its sign
    r = flint.fmpq(*(1 + 2.0**-11).as_integer_ratio())  # a float16 midpoint
    assert round_rational_plus(r, 1, -10**12, FORMATS["float16"]) == 1 + 2.0**-10
    assert round_rational_plus(r, -1, -10**12, FORMATS["float16"]) == 1.0
    assert round_rational_plus(r, 0, 0, FORMATS["float16"]) == 1.0  # the tie goes to even


def test_rounded_ball_decides_or_says_undecided():
    with flint.ctx.workprec(128):
        assert K.rounded_ball(flint.arb(1) / 3, "float32") == float(np.float32(1 / 3))
        straddling = flint.arb(1 + 2.0**-11, 2.0**-30)  # a float16 midpoint inside the ball
        assert K.rounded_ball(straddling, "float16") is None
        assert K.rounded_ball(straddling, "float64") is None
        assert K.rounded_ball(straddling, "bfloat16") == 1.0


def test_exact_zeros_are_decided_by_exactness_not_left_undecided():
    # ε = 1 on equal logits: g = σ(p_j - 1/C) = 0 exactly; A = 0: g = -σ α_j exactly; C = 1.
    cases = [
        Problem(np.full((2, 3), 0.5), np.array([0, 1]), label_smoothing=1.0),
        Problem(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, -1.0, 0.0]]), reduction="sum"),
        Problem(np.array([[5.0], [-3.0]]), np.array([0, 0]), reduction="sum"),
        Problem(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0, -100])),  # an ignored row
        Problem(np.array([[0.0, -inf, 1.0]]), np.array([0])),  # p = 0 at the -inf class
    ]
    for p in cases:
        o = Oracle(p)
        zeros = [v for n in range(o.M) for v in o.grad_row(n, 128) if v.exact and v.r == 0]
        assert zeros, source(p)
        zero_grad = np.zeros(p.logits.shape, dtype=object)
        zero_grad[...] = mpmath.mpf(0)
        report = K.certify(p, grad_values=zero_grad)
        # every exact zero is a pass (never undecided); nonzero entries fail against 0
        assert not report.undecided
        assert len(report.failures) == o.M * o.C - len(zeros)


def test_a_cancellation_across_rows_that_is_exactly_zero_is_undecided():
    # 2·log 2 - log 4 = 0, but the rows' softmax sums differ (2 vs 4 finite classes).
    p = Problem(np.array([[0.0, 0.0, -inf, -inf], [0.0, 0.0, 0.0, 0.0]]), np.array([0, 2]),
                weight=np.array([2.0, 1.0, -1.0, 1.0]), reduction="sum")
    zero = np.array(mpmath.mpf(0), dtype=object)
    rounded = {"float16": (np.array(0.0), None), "float64": (np.array(0.0), None)}
    report = K.certify(p, loss_values=zero, rounded=rounded, max_prec=512)
    assert report.failures == []
    # a ball of radius ~2^-510 around 0 decides float16 (everything there rounds to 0) but
    # neither the 106-bit value check nor float64, whose subnormals reach 2^-1074
    assert [f.check for f in report.undecided] == ["value", "rounded:float64"]
    assert report.prec == 512 and report.checked == 3


def test_certify_catches_wrong_values_roundings_and_specials():
    p = Problem(np.array([[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]], dtype=np.float32), np.array([0, 2]), reduction="none")
    with mpmath.workprec(300):
        truth = [mpmath.log1p(mpmath.exp(-1) + mpmath.exp(mpmath.mpf(float(np.float32(0.1))) - 2)),
                 mpmath.mpf(float(np.float32(2.5))) - mpmath.mpf(float(np.float32(0.3)))
                 + mpmath.log1p(mpmath.exp(mpmath.mpf(float(np.float32(1.2))) - mpmath.mpf(float(np.float32(2.5))))
                                + mpmath.exp(mpmath.mpf(float(np.float32(0.3))) - mpmath.mpf(float(np.float32(2.5)))))]
        good = np.array(truth, dtype=object)
        close = np.array([v * (1 + mpmath.mpf(2) ** -115) for v in truth], dtype=object)
        off = np.array([truth[0] * (1 + mpmath.mpf(2) ** -95), truth[1]], dtype=object)
    def ratio(v):  # an mpf as an exact fraction
        sign, man, exp, _ = v._mpf_
        return (-1) ** sign * int(man) << max(exp, 0), 1 << max(-exp, 0)

    f32 = np.array([round_ratio(*ratio(v), FORMATS["float32"]) for v in truth], dtype=np.float32)
    assert K.certify(p, loss_values=good, rounded={"float32": (f32, None)}).ok
    assert K.certify(p, loss_values=close).ok
    r = K.certify(p, loss_values=off)
    assert [(f.index, f.check) for f in r.failures] == [((0,), "value")]
    assert "correct bits" in r.failures[0].detail
    bad = f32.copy()
    bad[1] = np.nextafter(bad[1], np.float32(inf))
    r = K.certify(p, rounded={"float32": (bad, None)})
    assert [(f.index, f.check) for f in r.failures] == [((1,), "rounded:float32")]
    r = K.certify(p, loss_values=np.array([mpmath.mpf("nan"), truth[1]], dtype=object))
    assert [f.detail for f in r.failures] == ["special value differs"]
    # a finite answer where the contract says +inf
    q = Problem(np.array([[0.0, -inf]]), np.array([1]), reduction="none")
    r = K.certify(q, loss_values=np.array([mpmath.mpf(1e308)], dtype=object))
    assert len(r.failures) == 1 and r.failures[0].oracle == "inf"
    # a double-double's hi is RN_float64: +inf is right for a loss of 3.4e308, wrong for 1.7e308
    for x0, ok in ((1.7e308, True), (0.85e308, False)):
        q = Problem(np.array([[x0, -x0]]), np.array([1]), reduction="none")
        dd = K.Values("dd", "loss", (np.array([inf]), np.array([0.0])), floor=K.DD_FLOOR)
        assert K.certify(q, values=[dd]).ok is ok


def test_importing_the_harness_does_not_import_python_flint():
    import subprocess
    import sys

    code = "import sys, harness, harness.certify, harness.cli, harness.golden; assert 'flint' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_python_flint_is_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setattr("harness.certify.arb._FLINT", None)
    monkeypatch.setitem(sys.modules, "flint", None)
    with pytest.raises(K.CertifyUnavailable, match=r"pip install 'xent-harness\[certify\]'") as info:
        K.loss_balls(Problem(np.zeros((1, 2)), np.array([0])))
    assert "\n" not in str(info.value)


# -- certifying the reference ----------------------------------------------------------------------


def _magnitude(text: str) -> str:
    """A coarse class of an oracle value for grouping findings."""
    if text in ("nan", "inf", "-inf"):
        return "special"
    try:
        v = abs(mpmath.mpf(text.split(" ")[0].strip("[")))
    except (ValueError, TypeError):
        return "exact"
    if v == 0:
        return "0"
    if v < mpmath.mpf(2) ** -1074:
        return "below float64's subnormals"
    if v < mpmath.mpf(2) ** -1022:
        return "float64 subnormal"
    return "normal"


def special_inputs(p: Problem) -> str:
    """The special inputs of a problem, to tell apart groups with different causes."""
    x = p.logits.astype(np.float64)
    tags = []
    if np.isnan(x).any() or np.isposinf(x).any():
        tags.append("NaN/+inf logit")
    if np.isneginf(x).any():
        tags.append("-inf logit")
    if p.weight is not None and not np.isfinite(p.weight.astype(np.float64)).all():
        tags.append("NaN/±inf weight")
    if p.probability_target and not np.isfinite(p.target.astype(np.float64)).all():
        tags.append("NaN/±inf target")
    if not p.probability_target and (p.target == p.ignore_index).any():
        tags.append("ignored samples")
    if p.num_classes == 0:
        tags.append("C = 0")
    if p.label_smoothing:
        tags.append("ε > 0")
    return ", ".join(tags) or "finite inputs"


def run_fuzz(problems) -> tuple[dict, dict, int, float]:
    """Certify the reference on every problem. Returns (groups of failures, undecided counts,
    max precision, seconds). A group is one kind of disagreement — the same quantity and nature,
    whichever checks (value, double-double, roundings) show it — and maps its signature to
    [count, the checks involved, the smallest reproducer, an example line]."""
    groups: dict[str, list] = {}
    undecided: collections.Counter = collections.Counter()
    max_prec = 0
    t0 = time.perf_counter()

    def note(sig, check, p, line):
        g = groups.setdefault(sig, [0, set(), None, None])
        g[0] += 1
        g[1].add(check)
        if g[2] is None or p.logits.size < g[2].logits.size:
            g[2], g[3] = p, line

    for name, p in problems:
        try:
            report = K.certify_reference(p)
        except Exception as exc:  # a crash of the reference is a finding, not a test error
            note(f"reference raised {type(exc).__name__}: {str(exc)[:120]}", "raised", p, f"{name}: {exc!r}")
            continue
        max_prec = max(max_prec, report.prec)
        for f in report.failures:
            mag = _magnitude(f.oracle)
            if "special" in f.detail or mag == "special" or f.got in ("nan", "inf", "-inf"):
                nature = "special value differs"
            elif f.check.startswith("rounded:"):
                nature = "wrong rounding"
            else:
                nature = "value outside its 106-bit tolerance"
            note(f"{f.kind}: {nature} (oracle {mag}) with {special_inputs(p)}", f.check, p,
                 f"{name} [{p.dtype.name}] {f.line()}")
        for f in report.undecided:
            undecided[f"{f.kind} {f.check}: {f.detail}"] += 1
    return groups, dict(undecided), max_prec, time.perf_counter() - t0


def summary(groups: dict) -> str:
    out = []
    for sig, (count, checks, p, line) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        out.append(f"[{count}x] {sig}; checks: {', '.join(sorted(checks))}\n    e.g. {line[:400]}\n"
                   f"    reproducer: {source(p)[:600]}")
    return "\n".join(out)


def coverage(p: Problem) -> set[str]:
    """What a problem exercises, beyond ``Problem.features``: extremes and special inputs."""
    x = p.logits.astype(np.float64)
    fin = x[np.isfinite(x)]
    tags = set(p.features) | {p.dtype.name} | set(special_inputs(p).split(", "))
    w = None if p.weight is None else p.weight.astype(np.float64)
    if w is not None and (w == 0).any():
        tags.add("zero weight")
    if w is not None and (w < 0).any():
        tags.add("negative weight")
    if not p.probability_target and p.num_samples and (p.target == p.ignore_index).all():
        tags.add("all ignored")
    if not p.probability_target and 0 <= p.ignore_index < p.num_classes:
        tags.add("ignore_index inside [0, C)")
    if p.probability_target and p.num_classes:
        sums = np.moveaxis(p.target.astype(np.float64), p.class_axis, -1).sum(axis=-1)
        if np.isfinite(sums).all() and not np.allclose(sums, 1):
            tags.add("unnormalized targets")
    if fin.size and np.abs(fin).max() >= 1e4:
        tags.add("|x| >= 1e4")
    if fin.size and (np.abs(fin[fin != 0]) < p.format.tiny).any():
        tags.add("subnormal logit")
    if p.num_classes == 1:
        tags.add("C = 1")
    if p.num_classes >= 1000:
        tags.add("C >= 1000")
    if p.label_smoothing in (0.1, 0.5, 0.995, 1.0):
        tags.add(f"ε = {p.label_smoothing}")
    return tags


def check_fuzz(n: int, seed: int):
    problems = list(corpus(n, seed))
    groups, undecided, max_prec, seconds = run_fuzz(problems)
    print(f"\ncertified {len(problems)} problems in {seconds:.1f} s, arb up to {max_prec} bits; "
          f"undecided: {undecided or 'none'}")
    # The corpus really spans the options and the extremes (else a pass would mean little).
    seen = set().union(*(coverage(p) for _, p in problems))
    required = {"weight", "ignore_index", "label_smoothing", "probability_target", "kdim", "unbatched",
                "reduction:mean", "reduction:sum", "reduction:none", *DTYPES, "zero weight", "negative weight",
                "NaN/±inf weight", "all ignored", "ignore_index inside [0, C)", "unnormalized targets",
                "NaN/±inf target", "NaN/+inf logit", "-inf logit", "|x| >= 1e4", "subnormal logit", "C = 0",
                "C = 1", "C >= 1000", "ε = 0.1", "ε = 0.5", "ε = 0.995", "ε = 1.0"}
    assert required <= seen, f"the corpus misses {sorted(required - seen)}"
    assert not groups, f"the reference disagrees with the arb oracle in {len(groups)} way(s):\n{summary(groups)}"


@pytest.mark.certify
def test_fuzz_certifies_the_reference_short():
    check_fuzz(220, seed=1)


@pytest.mark.certify
@pytest.mark.slow
def test_fuzz_certifies_the_reference_full():
    check_fuzz(2400, seed=7)


def ordinary_low_precision(rng: np.random.Generator) -> Problem:
    """Everyday rows: normal logits of scale 0.3..4 in float32/bfloat16/float16, all options."""
    dtype = FORMATS[str(rng.choice(["float32", "bfloat16", "float16"]))].dtype
    C, N = int(rng.integers(2, 12)), int(rng.integers(1, 5))
    x = rng.normal(0, float(rng.choice([0.3, 1.0, 4.0])), (N, C)).astype(dtype)
    w = rng.uniform(0.2, 2.0, C).astype(dtype) if rng.random() < 0.4 else None
    eps = float(rng.choice([0.0, 0.1]))
    red = str(rng.choice(["mean", "sum", "none"]))
    if rng.random() < 0.25:
        t = rng.dirichlet(np.ones(C), N).astype(dtype)
        return Problem(x, t, weight=w, reduction=red, label_smoothing=eps)
    return Problem(x, rng.integers(0, C, N), weight=w, reduction=red, label_smoothing=eps)


def correct_bits(value, ball) -> float:
    """-log2 of the relative distance from a reference value to an (exact or tight) ball:
    inf when they agree exactly, -inf when one is special (or zero) and the other not."""
    ref = reference_ball(value)
    if isinstance(ref, float) or isinstance(ball, float):
        same = isinstance(ref, float) and isinstance(ball, float) and (ref == ball or (math.isnan(ref) and math.isnan(ball)))
        return math.inf if same else -math.inf
    with flint.ctx.workprec(600):
        err = abs(ref - ball)
        if err.contains(0):
            return math.inf
        if ball.contains(0):
            return -math.inf
        return float((-(err / abs(ball)).log() / flint.arb(2).log()).mid())


@pytest.mark.certify
def test_ordinary_rows_carry_100_bits_not_only_correct_roundings():
    # A reference computing at 53 bits would still round ordinary float16/bfloat16/float32 values
    # correctly; only measuring the bits of the unrounded values catches it.
    from harness import reference

    rng = np.random.default_rng(11)
    bits: list[tuple[float, str, str]] = []
    for _ in range(60):
        p = ordinary_low_precision(rng)
        kw = p.kwargs()
        truth_l = K.loss_balls(p, 400)
        truth_g = K.grad_balls(p, 400).reshape(-1)
        ex = reference.evaluate(p)
        sets = [
            ("cross_entropy", np.ravel(reference.cross_entropy(p.logits, p.target, **kw)), truth_l),
            ("cross_entropy_grad", np.moveaxis(reference.cross_entropy_grad(p.logits, p.target, **kw),
                                               p.class_axis, -1).reshape(-1), truth_g),
            ("evaluate.loss_hi+lo", list(zip(np.ravel(ex.loss_hi), np.ravel(ex.loss_lo))), truth_l),
            ("evaluate.grad_hi+lo", list(zip(np.moveaxis(ex.grad_hi, p.class_axis, -1).reshape(-1),
                                             np.moveaxis(ex.grad_lo, p.class_axis, -1).reshape(-1))), truth_g),
        ]
        for label, values, truths in sets:
            for v, t in zip(values, truths):
                bits.append((correct_bits(v, t), label, source(p)))
        # The measurement itself tells 53 bits from 106: the same values rounded to float64
        # (what a reference computing in double would return) measure far below 100.
        if p.label_smoothing == 0 and p.weight is None:
            as_double = [mpmath.mpf(float(v)) for v in sets[0][1]]
            assert min(correct_bits(v, t) for v, t in zip(as_double, truth_l)) < 90
    worst = min(bits)
    hist = collections.Counter(int(min(b, 200)) // 10 * 10 for b, _, _ in bits)  # 200: exact
    print(f"\ncorrect bits of {len(bits)} values: min {worst[0]:.1f}; histogram {dict(sorted(hist.items()))}")
    assert worst[0] >= 100, f"{worst[1]} carries only {worst[0]:.1f} bits on {worst[2]}"


# -- the golden references -------------------------------------------------------------------------


@pytest.fixture
def copy_of_references(tmp_path):
    from harness import golden

    dest = tmp_path / "references"
    shutil.copytree(golden.default_dir(), dest)
    return dest


@pytest.mark.certify
def test_references_verify_certify_accepts_the_stored_references(capsys):
    from harness.cli import main

    code = main(["references", "verify", "--sample", "0", "--certify"])
    out = capsys.readouterr().out
    assert code == 0, out


def test_references_verify_certify_catches_a_consistently_tampered_value(copy_of_references, capsys):
    import hashlib
    import json

    from harness import golden
    from harness.cli import main

    # Move one gradient entry by one float64 ulp and update the hash: only a recomputation or the
    # certification can notice; the certification names the case and the element.
    name = "ordinary-float32"
    path = copy_of_references / f"{name}.npz"
    with np.load(path) as data:
        payload = dict(data)
    payload["grad_hi"] = payload["grad_hi"].copy()
    payload["grad_hi"][3, 4] = np.nextafter(payload["grad_hi"][3, 4], inf)
    np.savez_compressed(path, **payload)
    manifest_path = copy_of_references / golden.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["cases"][name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["references", "verify", "--dir", str(copy_of_references), "--sample", "0", "--certify"]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL") and name in ln]
    assert lines and all("grad[3, 4]" in ln for ln in lines), lines
    assert any("grad_hi+lo" in ln for ln in lines)


def test_references_verify_certify_without_python_flint_exits_2(monkeypatch, capsys):
    import sys

    from harness.cli import main

    monkeypatch.setattr("harness.certify.arb._FLINT", None)
    monkeypatch.setitem(sys.modules, "flint", None)
    assert main(["references", "verify", "--sample", "0", "--certify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "xent-harness[certify]" in err
