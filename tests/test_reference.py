"""The reference against independent evidence: torch float64, hand-derived values, a plain
3000-bit mpmath oracle, and hypothesis invariants."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import reference as R
from harness.problem import Problem
from tests import mp_oracle

torch = pytest.importorskip("torch")
F = torch.nn.functional
inf, nan = math.inf, math.nan


def torch_f64(problem: Problem):
    x = torch.tensor(problem.logits.astype(np.float64), requires_grad=True)
    t = torch.tensor(problem.target if not problem.probability_target else problem.target.astype(np.float64))
    w = None if problem.weight is None else torch.tensor(problem.weight.astype(np.float64))
    loss = F.cross_entropy(x, t, weight=w, ignore_index=problem.ignore_index,
                           reduction=problem.reduction, label_smoothing=problem.label_smoothing)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def random_problem(rng: np.random.Generator) -> Problem:
    """Ordinary (non-extreme) problems that together cover every option."""
    C = int(rng.integers(1, 9))
    layout = rng.choice(["unbatched", "batched", "kdim"], p=[0.15, 0.6, 0.25])
    if layout == "unbatched":
        shape, tshape = (C,), ()
    elif layout == "batched":
        n = int(rng.integers(0, 6))
        shape, tshape = (n, C), (n,)
    else:
        n, d1, d2 = (int(v) for v in rng.integers(1, 4, 3))
        shape, tshape = (n, C, d1, d2), (n, d1, d2)
    x = rng.normal(0, rng.choice([0.1, 1, 5]), shape)
    weight = None
    if rng.random() < 0.5:
        weight = rng.uniform(0, 2, C)
        weight[rng.random(C) < 0.2] = 0.0
    eps = float(rng.choice([0.0, 0.0, 0.1, 0.35, 1.0]))
    reduction = str(rng.choice(["mean", "sum", "none"]))
    if rng.random() < 0.25:
        t = rng.uniform(0, 1, shape)
        if rng.random() < 0.5:  # normalized along the class axis
            t = t / t.sum(axis=0 if layout == "unbatched" else 1, keepdims=True)
        return Problem(x, t, weight=weight, reduction=reduction, label_smoothing=eps)
    ignore = int(rng.choice([-100, 0, C - 1]))  # outside and inside [0, C)
    t = rng.integers(0, C, tshape)
    if rng.random() < 0.3:
        t = np.where(rng.random(tshape) < 0.4, ignore, t)
    if rng.random() < 0.05:
        t = np.full(tshape, ignore)  # fully ignored
    return Problem(x, np.asarray(t), weight=weight, ignore_index=ignore, reduction=reduction,
                   label_smoothing=eps)


def test_agrees_with_torch_float64_on_1200_random_problems():
    rng = np.random.default_rng(7)
    worst_loss = worst_grad = 0.0
    seen = set()
    for _ in range(1200):
        p = random_problem(rng)
        seen |= p.features
        ref = R.evaluate(p, workers=1)
        tl, tg = torch_f64(p)
        # Same NaN pattern (e.g. all-ignored mean), then relative error of the finite values.
        np.testing.assert_array_equal(np.isnan(tl), np.isnan(ref.loss_hi))
        ok = ~np.isnan(tl)
        # torch computes lse - x_t, whose error is a few ulps of lse, not of a loss << 1 (e.g. it
        # is 8e-13 relative on a loss of 6.6e-5, where the 3000-bit oracle sides with the
        # reference), so losses below 1 are compared in absolute terms.
        scale = np.maximum(np.abs(ref.loss_hi), 1.0)
        err = np.abs(tl - ref.loss_hi)[ok] / scale[ok] if ok.any() else np.zeros(1)
        worst_loss = max(worst_loss, float(np.max(err, initial=0)))
        gnorm = np.linalg.norm(ref.grad_hi)
        if gnorm:
            worst_grad = max(worst_grad, float(np.linalg.norm(tg - ref.grad_hi) / gnorm))
        else:
            assert np.all(tg == 0)
    print(f"\nlargest relative disagreement with torch float64: loss {worst_loss:.3g}, grad {worst_grad:.3g}")
    assert worst_loss <= 1e-13
    assert worst_grad <= 1e-13
    assert {"weight", "ignore_index", "label_smoothing", "probability_target", "kdim", "unbatched",
            "reduction:mean", "reduction:sum", "reduction:none"} <= seen


def test_worked_example_from_the_tutorial():
    # The user's document: logits [[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]], targets [0, 2].
    x = [[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]]
    per = R.cross_entropy(x, [0, 2], reduction="none")
    assert [round(float(v), 3) for v in per] == [0.417, 2.524]  # the document rounds to 0.416, 2.525
    assert round(float(R.cross_entropy(x, [0, 2])), 3) == 1.471  # document: 1.4705
    assert round(float(R.cross_entropy(x, [0, 2], reduction="sum")), 3) == 2.942


@pytest.mark.parametrize(
    ("logits", "target", "dtype", "expected"),
    [
        # log1p(exp(-20)) rounded to float32; the usual formulas return 0 here.
        ([20, 0], 0, np.float32, np.float32(2.0611537e-9)),
        ([200, 0], 0, np.float64, 1.3838965267367376e-87),
        ([40, 0, 0], 0, np.float64, float(mpmath.log1p(2 * mpmath.exp(-40)))),
        ([0, -inf, 0], 0, np.float64, math.log(2)),
        ([0, -inf, 0], 1, np.float64, inf),
        ([-inf, -inf], 0, np.float64, nan),
        ([1, nan], 0, np.float64, nan),
        ([inf, 0], 0, np.float64, nan),
    ],
)
def test_hand_derived_values(logits, target, dtype, expected):
    p = Problem(np.array(logits, dtype=dtype), np.array(target))
    got = R.evaluate(p).rounded_loss(dtype)
    if math.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == expected


def test_all_equal_logits_give_log_C_exactly_rounded():
    for C in (1, 2, 3, 10, 1000):
        v = R.cross_entropy(np.full((1, C), 0.75), np.array([C // 2]))
        with mpmath.workprec(200):
            assert abs(v - mpmath.log(C)) <= mpmath.mpf(2) ** -110 * max(1, mpmath.log(C))


def test_tiny_losses_keep_106_bits_where_textbook_mpmath_fails():
    # mpmath's textbook formula at 256 bits returns 0 for [200, 0]; the true loss is log1p(e^-200).
    with mpmath.workprec(256):
        textbook = mpmath.log(mpmath.exp(200) + 1) - 200
    assert textbook == 0
    v = R.cross_entropy([200.0, 0.0], np.array(0))
    with mpmath.workprec(400):
        truth = mpmath.log1p(mpmath.exp(-200))
        assert abs(v - truth) / truth < mpmath.mpf(2) ** -106


def test_gradient_of_the_target_class_is_cancellation_free():
    g = R.cross_entropy_grad(np.array([[200.0, 0.0, -5.0]]), np.array([0]))
    with mpmath.workprec(400):
        e1, e2 = mpmath.exp(-200), mpmath.exp(-205)
        truth = -(e1 + e2) / (1 + e1 + e2)
        assert abs(g[0, 0] - truth) / abs(truth) < mpmath.mpf(2) ** -106
        assert abs(g[0, 1] - e1 / (1 + e1 + e2)) / e1 < mpmath.mpf(2) ** -106


HARD = [
    # (logits, target, options): extreme gaps, negative weights (mixed-sign sums), smoothing.
    (np.array([[30.0, 0.0, -1.0], [0.5, 0.5, 0.5]]), np.array([0, 2]), {}),
    (np.array([[1e4, 0.0], [-3e3, 2.0]]), np.array([0, 1]), {"reduction": "none"}),
    (np.array([[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]]), np.array([0, 2]), {"weight": np.array([1.0, 0.5, -0.25])}),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([0, 1]), {"weight": np.array([1.0, -1.0]), "reduction": "sum"}),
    (np.array([[5.0, 1.0, -2.0], [0.0, 0.0, 9.0]]), np.array([1, 2]), {"label_smoothing": 0.3}),
    (np.array([[1e-300, -1e-300, 0.0]]), np.array([1]), {"label_smoothing": 1.0}),
    (np.array([[3.0, 1.0], [0.0, 4.0]]), np.array([[0.9, 0.3], [-0.2, 1.5]]), {}),
]


@pytest.mark.parametrize(("x", "t", "kw"), HARD)
def test_correctly_rounded_against_3000_bit_oracle(x, t, kw):
    got = R.cross_entropy(x, t, **kw)
    want = mp_oracle.loss(x, t, **kw)
    want = want if isinstance(want, list) else [want]
    for g, w in zip(np.ravel(got), want, strict=False):
        with mpmath.workprec(3000):
            assert abs(g - w) <= abs(w) * mpmath.mpf(2) ** -106 + mpmath.mpf(2) ** -1074
        for dtype in ("float16", "bfloat16", "float32", "float64"):
            assert R.rounded(np.array([g], dtype=object), dtype)[0] == R.rounded(np.array([w], dtype=object), dtype)[0]


SPECIALS = [
    ([[0.0, -inf, 1.0], [1.0, 2.0, 3.0]], [0, 2], {}),
    ([[0.0, -inf, 1.0], [1.0, 2.0, 3.0]], [1, 2], {}),
    ([[0.0, -inf, 1.0], [1.0, 2.0, 3.0]], [0, 2], {"label_smoothing": 0.1}),
    ([[0.0, -inf, 1.0], [1.0, 2.0, 3.0]], [0, 2], {"label_smoothing": 0.1, "weight": [1.0, 0.0, 1.0]}),
    ([[nan, 1.0, 1.0], [1.0, 2.0, 3.0]], [-100, 2], {}),
    ([[inf, 1.0, 1.0], [1.0, 2.0, 3.0]], [0, 2], {"reduction": "none"}),
    ([[-inf, -inf, -inf], [1.0, 2.0, 3.0]], [0, 2], {"reduction": "none"}),
    ([[-inf, -inf, -inf], [1.0, 2.0, 3.0]], [-100, 2], {"reduction": "sum"}),
    ([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]], [-100, -100], {}),
    ([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]], [-100, -100], {"label_smoothing": 0.2}),
    ([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]], [0, 0], {"weight": [0.0, 1.0, 1.0]}),
    ([[1.0, -inf, 1.0], [1.0, 2.0, 3.0]], [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], {}),
    ([[1.0, -inf, 1.0], [1.0, 2.0, 3.0]], [[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], {"reduction": "none"}),
]


@pytest.mark.parametrize(("x", "t", "kw"), SPECIALS)
def test_special_values_follow_torch(x, t, kw):
    t = np.array(t)
    kw = {k: (np.array(v) if k == "weight" else v) for k, v in kw.items()}
    p = Problem(np.array(x), t, **kw)
    ref = R.evaluate(p)
    tl, tg = torch_f64(p)
    np.testing.assert_array_equal(np.isnan(ref.loss_hi), np.isnan(tl))
    np.testing.assert_array_equal(np.isinf(ref.loss_hi), np.isinf(tl))
    np.testing.assert_array_equal(np.isnan(ref.grad_hi), np.isnan(tg))
    fin = np.isfinite(tl)
    np.testing.assert_allclose(ref.loss_hi[fin], tl[fin], rtol=1e-14)
    gfin = np.isfinite(tg)
    np.testing.assert_allclose(ref.grad_hi[gfin], tg[gfin], rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_behaves_as_torch(reduction):
    for t in (np.zeros(0, np.int64), np.zeros((0, 3))):
        p = Problem(np.zeros((0, 3)), t, reduction=reduction)
        ref = R.evaluate(p)
        tl, _tg = torch_f64(p)
        np.testing.assert_array_equal(ref.loss_hi, tl)
        assert ref.grad_hi.shape == (0, 3)


def test_rounding_to_every_format_handles_subnormals_and_overflow():
    # Loss e^-100 (~3.7e-44) is subnormal in float32 and 0 in float16; e^-740 is a float64 subnormal.
    for gap in (100.0, 740.0):
        ex = R.evaluate(Problem(np.array([gap, 0.0]), np.array(0)))
        with mpmath.workprec(3000):
            truth = mpmath.log1p(mpmath.exp(-gap))
        assert ex.rounded_loss(np.float64) == float(truth)
        assert ex.rounded_loss(np.float32) == np.float32(float(truth))
        assert ex.rounded_loss(np.float16) == 0
    # A float64 loss beyond the largest float rounds to inf.
    ex = R.evaluate(Problem(np.array([1.7e308, -1.7e308]), np.array(1)))
    assert ex.rounded_loss(np.float64) == inf


# -- hypothesis invariants -------------------------------------------------------------------------

rows = st.integers(2, 6).flatmap(
    lambda C: st.tuples(
        st.lists(st.lists(st.integers(-2000, 2000), min_size=C, max_size=C), min_size=1, max_size=3),
        st.integers(0, C - 1),
    )
)


@settings(max_examples=40, deadline=None)
@given(rows, st.integers(-2**20, 2**20))
def test_exact_loss_is_shift_invariant(data, shift):
    xs, t = data
    x = np.array(xs, dtype=np.float64) / 64  # dyadic: x + shift is exact
    target = np.full(len(xs), t)
    a = R.evaluate(Problem(x, target), workers=1)
    b = R.evaluate(Problem(x + shift, target), workers=1)
    assert a.loss_hi == b.loss_hi and a.loss_lo == b.loss_lo
    np.testing.assert_array_equal(a.grad_hi, b.grad_hi)


@settings(max_examples=40, deadline=None)
@given(rows, st.sampled_from(["mean", "sum", "none"]))
def test_gradient_rows_sum_to_zero_and_loss_is_nonnegative(data, reduction):
    xs, t = data
    x = np.array(xs, dtype=np.float64) / 97
    ex = R.evaluate(Problem(x, np.full(len(xs), t), reduction=reduction), workers=1)
    assert np.all(ex.loss_hi >= 0)
    # Exactly zero row sums, up to the double-double's own rounding.
    row_sums = ex.grad_hi.sum(axis=1) + ex.grad_lo.sum(axis=1)
    assert np.all(np.abs(row_sums) <= 1e-15 * np.abs(ex.grad_hi).max(axis=1))


@settings(max_examples=15, deadline=None)
@given(rows, st.floats(0, 1), st.booleans())
def test_gradient_matches_high_precision_finite_difference(data, eps, weighted):
    xs, t = data
    x = np.array(xs[:1], dtype=np.float64) / 333
    C = x.shape[1]
    kw = {"label_smoothing": eps, "weight": np.linspace(0.5, 2.0, C) if weighted else None}
    g = R.cross_entropy_grad(x, np.array([t]), **kw)
    h = 2.0**-24
    for j in range(C):
        xp, xm = x.copy(), x.copy()
        xp[0, j] += h
        xm[0, j] -= h
        lp, lm = R.cross_entropy(xp, np.array([t]), **kw), R.cross_entropy(xm, np.array([t]), **kw)
        with mpmath.workprec(300):
            step = mpmath.mpf(xp[0, j]) - mpmath.mpf(xm[0, j])  # the perturbation actually applied
            fd = (lp - lm) / step
            assert abs(fd - g[0, j]) <= 1e-12 * max(1, abs(g[0, j]))


def test_rounded_rounds_once_with_ieee_ties_subnormals_and_overflow():
    with mpmath.workprec(300):
        two = mpmath.mpf(2)
        cases = [
            (two**-149 * 1.5, "float32", 2 * 2.0**-149),  # tie between subnormals: to even
            (two**-150 + two**-250, "float32", 2.0**-149),  # just above half the smallest subnormal
            (two**-150, "float32", 0.0),  # exactly half: to even (zero)
            (mpmath.mpf(65520), "float16", inf),  # max + ulp/2 overflows
            (mpmath.mpf(65519) + two**-30, "float16", 65504.0),
            (1 + two**-11 + two**-200, "float16", 1 + 2.0**-10),  # a 60-digit string would lose this
            (1 + two**-8 + two**-200, "bfloat16", 1 + 2.0**-7),  # the ml_dtypes cast gives 1.0 here
        ]
    for v, dtype, want in cases:
        assert float(R.rounded(np.array([v], dtype=object), dtype)[0]) == want, (v, dtype)


def test_exact_pair_and_rounded():
    import numpy as np

    from harness import reference
    from harness.problem import Problem

    p = Problem(np.array([[20.0, 0.0]], np.float32), np.array([0]), reduction="none")
    ex = reference.evaluate(p)
    (lh, ll), (gh, gl) = ex.pair("loss"), ex.pair("grad")
    assert lh is ex.loss_hi and ll is ex.loss_lo and gh is ex.grad_hi and gl is ex.grad_lo
    assert float(ex.rounded("loss", np.float32)[0]) == float(np.float32(2.0611536e-09))  # true 2.0611536203e-9
    assert np.array_equal(ex.rounded("grad", np.float64), ex.rounded_grad(np.float64))
    loss_only = reference.evaluate(p, grad=False)
    with pytest.raises(ValueError, match="without the gradient"):
        loss_only.pair("grad")
    with pytest.raises(ValueError, match="'loss' or 'grad'"):
        ex.pair("gradient")
