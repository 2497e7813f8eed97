"""Unit tests of the runner (calls, isolation, the fused call) and the reference cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import reference, registry
from harness.cache import ReferenceCache
from harness.problem import Problem
from harness.runner import CallFailed, Runner

FAULTY = str(Path(__file__).resolve().parent / "plugins" / "faulty.py")


def _problem():
    return Problem(np.array([[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]]), np.array([0, 2]))


class _Raises(registry.Implementation):
    name = "raises"

    def loss(self, problem):
        raise RuntimeError("boom\nsecond line")


def test_in_process_failures_are_one_line():
    runner = Runner(registry.Entry("raises", "test", _Raises()))
    with pytest.raises(CallFailed, match=r"^RuntimeError: boom$"):
        runner.call("loss", _problem())


@pytest.mark.parametrize("isolate", [False, True])
def test_the_fused_call_returns_a_pair_in_process_and_isolated(isolate):
    entry = registry.select([f"{FAULTY}:Correct"], isolate=isolate)[0][0]
    runner = Runner(entry, isolate=isolate, timeout=60)
    try:
        loss, grad = runner.call("loss_and_grad", _problem())
        assert np.array_equal(loss, runner.call("loss", _problem()))
        assert np.array_equal(grad, runner.call("grad", _problem()))
    finally:
        runner.close()
    assert loss.shape == () and grad.shape == (2, 3)


def test_an_isolated_call_past_its_timeout_is_killed():
    entry = registry.select([f"{FAULTY}:Hangs"])[0][0]
    runner = Runner(entry, isolate=True, timeout=2)
    try:
        with pytest.raises(CallFailed, match="timed out after 2 s"):
            runner.call("loss", _problem())
        assert runner._proc is None  # the child is gone; the next call starts a fresh one
    finally:
        runner.close()


def test_cache_round_trip_and_unreadable_files(tmp_path):
    cache = ReferenceCache(tmp_path)
    p = _problem()
    assert cache.load(p) is None
    ex = reference.evaluate(p, workers=1)
    cache.store(p, ex)
    back = cache.load(p)
    for a, b in ((back.loss_hi, ex.loss_hi), (back.loss_lo, ex.loss_lo), (back.grad_hi, ex.grad_hi), (back.grad_lo, ex.grad_lo)):
        assert np.array_equal(a, b)
    # the key is the problem: another option is another entry
    q = Problem(p.logits, p.target, reduction="sum")
    assert cache.load(q) is None
    # a file cut by a kill is recomputed, not trusted
    path = cache._path(p)
    path.write_bytes(path.read_bytes()[:50])
    assert cache.load(p) is None
    # entries live under the reference's VERSION: an algorithm change never reuses old ones
    assert cache.directory.name == f"reference-v{reference.VERSION}"


def test_get_many_computes_only_what_is_missing(tmp_path, monkeypatch):
    cache = ReferenceCache(tmp_path)
    ps = [_problem(), Problem(np.array([[0.0, 1.0]]), np.array([1]))]
    cache.store(ps[0], reference.evaluate(ps[0], workers=1))
    seen = []
    real = reference.evaluate_many
    monkeypatch.setattr(reference, "evaluate_many", lambda probs, **kw: seen.extend(probs) or real(probs, **kw))
    out = cache.get_many(ps, workers=1)
    assert [p.digest for p in seen] == [ps[1].digest] and all(o is not None for o in out)
    seen.clear()
    cache.get_many(ps, workers=1)
    assert seen == []


def test_the_timeout_covers_starting_the_child():
    """Two calls to a plugin that takes 30 s to load, with a 2 s timeout, take seconds, not the
    minute a fixed start-up wait took."""
    import time

    entry = registry.Entry("slow", FAULTY + ":SlowToLoad", impl=None, extra={"spec": f"{FAULTY}:SlowToLoad"})
    runner = Runner(entry, isolate=True, timeout=2)
    t0 = time.monotonic()
    try:
        for _ in range(2):
            with pytest.raises(CallFailed, match=r"timed out after 2 s .*while loading"):
                runner.call("loss", _problem())
    finally:
        runner.close()
    assert time.monotonic() - t0 < 20
