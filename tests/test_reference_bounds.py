"""The reference's error bounds are promises too: on the fuzz corpus the true value (an arb
ball, harness.certify) lies within Exact.loss_bound / grad_bound of the value of record, and
within bound + the view's own rounding of the double-double view hi + lo."""

from __future__ import annotations

import numpy as np
import pytest

from harness import reference as R
from tests.certify_corpus import corpus

flint = pytest.importorskip("flint")
from harness import certify as K  # noqa: E402


def _check(view_hi, view_lo, bounds, balls) -> int:
    n = 0
    for h, lo, b, ball in zip(view_hi, view_lo, bounds, balls, strict=True):
        if not isinstance(ball, flint.arb) or not np.isfinite(h):
            continue  # special values are checked by the certify fuzz
        if abs(h) < 2.0**-960:
            continue  # the view holds the rounded float64 there (certified elsewhere)
        v = flint.arb(float(h)) + flint.arb(float(lo))
        slack = flint.arb(abs(float(lo))) * flint.arb(2) ** -53 + flint.arb(2) ** -1074
        # a violation is certain when every point of the 400-bit ball is farther than the bound
        # (the ball's radius, ~2^-400 relative, is far below every bound but exact zeros')
        assert not (abs(v - ball) > flint.arb(float(b)) + slack), (h, lo, b, ball)
        n += 1
    return n


@pytest.fixture
def arb_precision():
    old = flint.ctx.prec
    flint.ctx.prec = 1200  # the comparisons below must not round at arb's default 53 bits
    yield
    flint.ctx.prec = old


def test_true_error_never_exceeds_the_bound(arb_precision):
    checked = 0
    for _name, p in corpus(120, seed=21, fixed=True):
        ex = R.evaluate(p)
        if ex.loss_bound is None:
            continue
        lb = K.loss_balls(p, 400)
        checked += _check(np.ravel(ex.loss_hi), np.ravel(ex.loss_lo), np.ravel(ex.loss_bound), lb)
        if p.logits.size and p.logits.size < 20000:
            gb = K.grad_balls(p, 400).reshape(-1)
            mv = lambda a, p=p: np.moveaxis(a, p.class_axis, -1).reshape(-1)  # noqa: E731
            checked += _check(mv(ex.grad_hi), mv(ex.grad_lo), mv(ex.grad_bound), gb)
    assert checked > 2000
