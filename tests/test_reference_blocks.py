"""Row-block evaluation (reference.Blocks) gives exactly what one whole evaluation gives."""

import numpy as np
import pytest

from harness import reference as R
from harness.problem import Problem


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_blocks_equal_the_whole(reduction, smoothing):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 4, (37, 11)).astype(np.float32)
    t = rng.integers(0, 11, 37)
    t[::5] = -100
    p = Problem(x, t, weight=rng.uniform(0.5, 2, 11).astype(np.float32), reduction=reduction,
                label_smoothing=smoothing)
    whole = R.evaluate(p, workers=1)
    ev = R.blocks(p, workers=1, block_logits=11 * 4)  # 4 rows a block: 10 blocks
    parts = list(ev)
    assert len(parts) == 10 and parts[0].rows == slice(0, 4) and parts[-1].rows == slice(36, 37)
    np.testing.assert_array_equal(np.concatenate([b.hi for b in parts]), whole.grad_hi)
    np.testing.assert_array_equal(np.concatenate([b.lo for b in parts]), whole.grad_lo)
    loss = ev.loss()
    np.testing.assert_array_equal(loss.loss_hi, whole.loss_hi)
    np.testing.assert_array_equal(loss.loss_lo, whole.loss_lo)


def test_reused_buffers_give_the_same_blocks():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 4, (24, 64)).astype(np.float32)
    p = Problem(x, rng.integers(0, 64, 24))
    fresh = [(b.hi.copy(), b.lo.copy(), b.bound.copy()) for b in R.blocks(p, workers=1, block_logits=64 * 8)]
    reused = [(b.hi.copy(), b.lo.copy(), b.bound.copy())
              for b in R.blocks(p, workers=1, block_logits=64 * 8, reuse=True)]
    assert len(fresh) == 3
    for f, r in zip(fresh, reused, strict=True):
        for a, b in zip(f, r, strict=True):
            np.testing.assert_array_equal(a, b)


def test_process_pool_after_the_fast_pass():
    # numba's threads make fork unsafe: once the fast pass has run, workers come from a
    # forkserver (a forked pool died with BrokenProcessPool)
    rng = np.random.default_rng(8)
    R.evaluate(Problem(rng.normal(0, 1, (4, 32)).astype(np.float32), np.zeros(4, np.int64)), workers=1)
    ps = [Problem(rng.normal(0, 1, (3, 8)).astype(np.float32), np.zeros(3, np.int64)) for _ in range(3)]
    got = R.evaluate_many(ps, workers=2)
    for p, ex in zip(ps, got, strict=True):
        np.testing.assert_array_equal(ex.loss_hi, R.evaluate(p, workers=1).loss_hi)
