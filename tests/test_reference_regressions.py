"""Regressions of the reference, each checked against independent evidence: a textbook mpmath
computation at thousands of bits written here from the formulas (never the reference's code),
hand-derived values, and torch float64 where torch defines the convention.

Why the earlier suite missed the 53-bit defect: its high-precision oracle cases all had float64
logits (which took the raised-precision branch), the torch comparisons stop at ~1e-13, and the
golden files were produced by the reference itself. So every case below that claims bits uses
narrow-format inputs too, and compares unrounded values at 2^-106, not only after rounding.
"""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest

from harness import reference as R
from harness.problem import Problem

BF16 = ml_dtypes.bfloat16
TWO = mpmath.mpf(2)


def textbook(x, t, *, weight=None, eps=0.0, reduction="mean", prec=4000):
    """Loss and gradient of one (N, C) index-target problem from the docs' formulas, textbook
    style (lse - x_t; softmax), at ``prec`` bits: independent of harness.reference."""
    x = np.asarray(x, dtype=np.float64)
    C = x.shape[1]
    with mpmath.workprec(prec):
        w = [mpmath.mpf(1)] * C if weight is None else [mpmath.mpf(float(v)) for v in weight]
        E = mpmath.mpf(eps)
        losses, grads, den = [], [], mpmath.mpf(0)
        for row, tc in zip(x.tolist(), t, strict=False):
            r = [mpmath.mpf(v) for v in row]
            m = max(r)
            z = mpmath.fsum(mpmath.exp(v - m) for v in r)
            lse = m + mpmath.log(z)
            p = [mpmath.exp(v - m) / z for v in r]
            L = [lse - v for v in r]
            W = mpmath.fsum(w)
            a = (1 - E) * w[tc] + E / C * W
            losses.append((1 - E) * w[tc] * L[tc] + E / C * mpmath.fsum(wc * lc for wc, lc in zip(w, L, strict=False)))
            grads.append([a * p[j] - E / C * w[j] - (1 - E) * w[tc] * (j == tc) for j in range(C)])
            den += w[tc]
        scale = 1 / den if reduction == "mean" else mpmath.mpf(1)
        if reduction == "none":
            loss = losses
        else:
            loss = mpmath.fsum(losses) * scale
        grads = [[g * scale for g in row] for row in grads]
    return loss, grads


def close(got, want, bits=106):
    with mpmath.workprec(4000):
        return abs(got - want) <= abs(want) * TWO**-bits


def rounded(v, dtype):
    return R.rounded(np.array([v], dtype=object), dtype)[0]


# -- A: every step at the working precision ------------------------------------------------------


def test_float32_tiny_loss_has_106_bits_not_53():
    got = R.cross_entropy(np.array([[20.0, 0.0]], np.float32), np.array([0]), reduction="none")[0]
    with mpmath.workprec(400):
        truth = mpmath.log1p(mpmath.exp(-20))  # 2.06115362031438070324e-9
    assert close(got, truth)
    assert mpmath.nstr(got, 21) == "2.06115362031438070324e-9"


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float32])
def test_ordinary_narrow_inputs_agree_to_2_pow_106_unrounded(dtype):
    rng = np.random.default_rng(3)
    for _ in range(6):
        C = int(rng.integers(2, 7))
        x = rng.normal(0, 3, (3, C)).astype(dtype)
        t = rng.integers(0, C, 3)
        kw = {"weight": rng.uniform(0.1, 2, C).astype(dtype).astype(np.float64), "eps": float(rng.choice([0, 0.1]))}
        want_l, want_g = textbook(x.astype(np.float64), t.tolist(), **kw)
        got_l = R.cross_entropy(x, t, weight=kw["weight"].astype(dtype), label_smoothing=kw["eps"])
        got_g = R.cross_entropy_grad(x, t, weight=kw["weight"].astype(dtype), label_smoothing=kw["eps"])
        assert close(got_l[()], want_l)
        for gv, wv in zip(got_g.ravel(), [v for row in want_g for v in row], strict=False):
            assert close(gv, wv), (gv, wv)


def test_cancelling_smoothed_gradient_with_a_huge_weight():
    x = np.array([[float.fromhex("0x1.ap+4"), 0.0]], np.float32)
    w = np.array([2.0**40, 1.0], np.float32)
    g = R.cross_entropy_grad(x, np.array([1]), weight=w, label_smoothing=0.5, reduction="sum")
    _, want = textbook(x, [1], weight=w, eps=0.5, reduction="sum")
    assert close(g[0, 0], want[0][0]) and close(g[0, 1], want[0][1])
    assert float(g[0, 0]) == pytest.approx(-0.6543756984212587, rel=1e-15)


# -- B: exact weighted-mean denominators --------------------------------------------------------


def test_weighted_mean_denominator_is_exact():
    x, t = np.zeros((3, 2)), np.array([0, 0, 0])
    w = np.array([0.1, 0.7])
    with mpmath.workprec(300):
        assert close(R.cross_entropy(x, t, weight=w)[()], mpmath.log(2))
        assert close(R.cross_entropy_grad(x, t, weight=w)[0, 0], mpmath.mpf(-1) / 6)
    w = np.array([1e308, 1.0])
    x, t = np.zeros((2, 2)), np.array([0, 0])
    with mpmath.workprec(300):
        assert close(R.cross_entropy(x, t, weight=w)[()], mpmath.log(2))
    g = R.cross_entropy_grad(x, t, weight=w)
    assert [float(v) for v in g.ravel()] == [-0.25, 0.25, -0.25, 0.25]


# -- C: no false 'unresolved', no needless precision ---------------------------------------------


@pytest.mark.parametrize(
    ("x", "t", "kw"),
    [
        (np.array([[0.0, -720.0]]), [0], {}),  # a float64 subnormal gradient entry
        (np.array([[0.0, -720.0]]), [0], {"reduction": "sum"}),
        (np.array([[0.0, -647757824.0]], np.float32), [1], {}),  # a loss beyond float16's max
        (np.array([[0.0, -np.inf]], np.float32), [0], {"weight": np.array([-1.0, 2.0], np.float32)}),
    ],
)
def test_settles_at_the_first_precision(x, t, kw):
    ex = R.evaluate(Problem(x, np.array(t), **kw))
    assert ex.unresolved == 0
    assert ex.bits == R.START_BITS
    assert np.all(np.isfinite(ex.loss_bound)) and np.all(np.isfinite(ex.grad_bound))


def test_value_beyond_a_format_rounds_to_inf_there():
    ex = R.evaluate(Problem(np.array([[0.0, -647757824.0]], np.float32), np.array([1])))
    assert ex.rounded_loss(np.float16) == np.inf
    assert ex.rounded_loss(np.float32) == np.float32(647757824.0)


# -- D: a boundary plus a tail far below any working precision ----------------------------------


def test_float16_midpoint_plus_tiny_tail_rounds_up():
    # 1000.25 is the float16 midpoint between 1000 and 1000.5; the tail e^-1000.25 > 0 decides.
    x = np.array([[float.fromhex("0x1.f42p+9"), 0.0]], np.float32)
    ex = R.evaluate(Problem(x, np.array([1])))
    assert ex.unresolved == 0
    assert ex.rounded_loss(np.float16) == np.float16(1000.5)
    assert ex.rounded_loss(np.float32) == np.float32(1000.25)
    assert rounded(R.cross_entropy(x, np.array([1]))[()], "float16") == 1000.5


def test_bfloat16_midpoint_minus_tiny_tail_rounds_down():
    x = np.array([[1000.0, 0.0]], np.float16)
    t = np.array([[0.0, 1.01171875]], np.float16)  # Q = 1 + 1.5 * 2^-7: a bfloat16 midpoint
    ex = R.evaluate(Problem(x, t, reduction="sum"))
    assert ex.unresolved == 0
    assert float(ex.rounded_grad(BF16)[0, 0]) == 1.0078125  # Q (1 - tiny), not the even 1.015625
    assert float(ex.rounded_grad(BF16)[0, 1]) == -1.0078125


# -- E/F: torch's IEEE results -------------------------------------------------------------------


def test_infinite_probability_target_gives_inf_like_torch():
    ex = R.evaluate(Problem(np.zeros((1, 2), np.float32), np.array([[np.inf, 0.0]], np.float32), reduction="sum"))
    assert ex.loss_hi == np.inf
    assert np.isnan(ex.grad_hi[0, 0]) and ex.grad_hi[0, 1] == np.inf


def test_zero_weight_sum_with_nonzero_numerator_like_torch():
    x = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    p = Problem(x, np.array([0, 1]), weight=np.array([1.0, -1.0], np.float32))
    ex = R.evaluate(p)
    want = np.array([[np.nan, np.inf], [-np.inf, np.nan]])
    assert ex.loss_hi == np.inf
    np.testing.assert_array_equal(ex.grad_hi, want)
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor([0, 1]), weight=torch.tensor([1.0, -1.0], dtype=torch.float64))
    lt.backward()
    assert lt.item() == np.inf
    np.testing.assert_array_equal(xt.grad.numpy(), want)


def test_zero_weight_sum_with_smoothing_is_nan_like_torch():
    # torch divides the nll part by the zero weight sum separately: 0/0 = NaN whatever ε adds.
    x = np.array([[0.1, -0.07, -0.1]])
    p = Problem(x, np.array([0]), weight=np.array([0.0, 1.0, 2.0]), label_smoothing=1.0)
    assert np.isnan(R.evaluate(p).loss_hi)
    torch = pytest.importorskip("torch")
    lt = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor([0]), weight=torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), label_smoothing=1.0)
    assert math.isnan(lt.item())


# -- G/H/I: the whole range ----------------------------------------------------------------------


def test_gradient_below_float64_keeps_its_bits():
    g = R.cross_entropy_grad(np.array([[0.0, -700.0]]), np.array([0]))
    with mpmath.workprec(400):
        e = mpmath.exp(-700)
        assert close(g[0, 1], e / (1 + e)) and close(g[0, 0], -e / (1 + e))
    g = R.cross_entropy_grad(np.array([[0.0, -800.0]]), np.array([0]))
    with mpmath.workprec(400):
        e = mpmath.exp(-800)  # below float64's range: the double-double view would be 0
        assert close(g[0, 1], e / (1 + e))
        assert rounded(g[0, 0], "float64") == 0 and math.copysign(1, rounded(g[0, 0], "float64")) == -1


def test_losses_below_mpfr_range_keep_value_and_sign():
    got = R.cross_entropy(np.array([[0.0, -2e9]], np.float32), np.array([0]))[()]
    with mpmath.workprec(400):
        assert close(got, mpmath.exp(-2e9))  # log1p(s) = s to 2^-(10^9) here
    x = np.array([[1e30, np.nextafter(1e30, np.inf)]])
    delta = float(np.nextafter(1e30, np.inf) - 1e30)
    got = R.cross_entropy(x, np.array([1]))[()]
    with mpmath.workprec(400):
        assert close(got, mpmath.exp(-delta))
        assert mpmath.nstr(got, 4) == "7.746e-61121514589643"
    g = R.cross_entropy_grad(x, np.array([1]))
    assert g[0, 1] < 0 and g[0, 0] > 0
    assert math.copysign(1, rounded(g[0, 1], "float32")) == -1  # -tiny rounds to -0


def test_exact_zero_is_plus_zero():
    ex = R.evaluate(Problem(np.array([[0.0, -np.inf]], np.float32), np.array([0]), weight=np.array([-1.0, 2.0], np.float32)))
    assert ex.loss_hi == 0 and math.copysign(1, float(ex.loss_hi)) == 1


def test_rounded_keeps_the_sign():
    # mpmath's mpf.man is unsigned: rounding once returned +3 for -3.
    vals = np.array([mpmath.mpf(-3), mpmath.mpf("-1e-400"), mpmath.mpf("-1.5")], dtype=object)
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        out = R.rounded(vals, dtype).astype(np.float64)
        assert out[0] == -3 and out[2] == -1.5
        assert out[1] == 0 and math.copysign(1, out[1]) == -1


def test_tiny_values_are_signed_zeros_everywhere_by_the_shortcut_and_by_rounding():
    """_stable_mpfr's shortcut for |v| < 2^-1077 (huge-gap rows have thousands of such gradient
    entries) agrees with rounding both ends of [v - b, v + b] in every format."""
    import math
    import random

    import gmpy2

    from harness.formats import FORMATS
    from harness.reference import stability

    rng = random.Random(5)
    with gmpy2.context(gmpy2.get_context(), precision=200, emin=-(2**30), emax=2**30):
        for _ in range(300):
            v = gmpy2.mul_2exp(gmpy2.mpfr(rng.random() + 0.5), -rng.randint(1076, 1400)) * rng.choice((-1, 1))
            b = abs(v) * gmpy2.mpfr(rng.choice((0.0, 1e-40, 0.5, 0.999, 1.0, 3.0)))
            ends = [stability._round_fmt(v - b, f) for f in FORMATS.values()] + [stability._round_fmt(v + b, f) for f in FORMATS.values()]
            one_zero = all(e == 0 for e in ends) and len({math.copysign(1, e) for e in ends}) == 1
            assert stability._stable_mpfr(v, b) == one_zero, (v, b)
