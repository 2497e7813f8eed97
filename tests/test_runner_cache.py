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


def _tampered_copy(cache, p, q):
    """q's entry replaced by p's file: a valid archive with a valid-looking, wrong reference."""
    cache.store(p, reference.evaluate(p, workers=1))
    cache._path(q).parent.mkdir(parents=True, exist_ok=True)
    cache._path(q).write_bytes(cache._path(p).read_bytes())


def test_a_tampered_or_foreign_entry_fails_its_checksum_and_is_recomputed(tmp_path):
    cache = ReferenceCache(tmp_path)
    p = _problem()
    q = Problem(p.logits * 2, p.target)
    _tampered_copy(cache, p, q)  # another problem's reference under q's name
    assert cache.load(q) is None and "checksum mismatch" in cache.rejected[-1]
    # an edited value (the archive rewritten with a changed loss, the old checksum kept)
    with np.load(cache._path(p)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["loss_hi"] = arrays["loss_hi"] + 1e-3
    with open(cache._path(p), "wb") as fh:
        np.savez_compressed(fh, **arrays)
    assert cache.load(p) is None and "checksum mismatch" in cache.rejected[-1]
    # recomputed by get_many, reported once, and stored again with a good checksum
    logs = []
    out = cache.get_many([p, q], workers=1, log=logs.append)
    assert np.array_equal(out[1].loss_hi, reference.evaluate(q, workers=1).loss_hi)
    assert sum("failed their check" in m for m in logs) == 1
    assert cache.load(p) is not None and cache.load(q) is not None


@pytest.mark.parametrize("make", ["read-only", "a file"])
def test_an_unwritable_cache_computes_without_caching_with_one_warning(tmp_path, make):
    import os

    if make == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes through a read-only mode; the 'a file' case covers the fallback")
        tmp_path.chmod(0o500)
        cache = ReferenceCache(tmp_path)
    else:
        (tmp_path / "cache").write_text("not a directory")
        cache = ReferenceCache(tmp_path / "cache")
    logs = []
    ps = [_problem(), Problem(np.array([[0.0, 1.0]]), np.array([1]))]
    out = cache.get_many(ps, workers=1, log=logs.append)
    assert all(o is not None for o in out)
    assert sum("not writable" in m for m in logs) == 1 and cache.unwritable
    assert not list(tmp_path.rglob("*.tmp"))
