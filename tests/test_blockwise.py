"""The blockwise judge (harness.blockwise) gives the whole-array judge's cell (harness.verdicts),
bit for bit, for any row blocking; its quantile sketch is within its documented error; the
sweeps' large-problem path gives the cells of the ordinary path and caches the loss only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness import blockwise, budgets, metrics, reference, registry, scenarios, sweeps, verdicts
from harness import cache as cache_mod
from harness.problem import Problem
from harness.results import Results
from harness.segment_sums import ExactSum

BUDGETS = budgets.load()[0]
ROOT = Path(__file__).resolve().parents[1]
FAULTY = str(ROOT / "tests" / "plugins" / "faulty.py")

def _same(a, b) -> bool:
    """Equal cells, NaN equal to NaN, and the same key order (JSON as the results file has it)."""
    return json.dumps(a) == json.dumps(b)


def _blocks(problem: Problem, hi, lo, rows: int):
    """The reference gradient (logits' layout) as GradBlocks of ``rows`` rows of problem.rows()."""
    M, C = problem.num_samples if problem.logits.ndim > 1 else 1, problem.num_classes

    def rowspace(a):
        return np.moveaxis(a, problem.class_axis, -1).reshape(M, C)

    h, lo_ = rowspace(hi), rowspace(lo)
    for a in range(0, M, rows):
        yield reference.GradBlock(slice(a, min(M, a + rows)), h[a:a + rows], lo_[a:a + rows], None)


#: Catalogue scenarios whose references are computed here (the golden cases have theirs):
#: special values, extremes, bit patterns, fully ignored batches.
COMPUTED = [("nan-one", "float16"), ("nan-one", "float32"), ("posinf-target", "bfloat16"),
            ("at-max-one", "float64"), ("bits-finite", "float32"), ("subnormal-all", "float32"),
            ("masked-rows", "float32"), ("ignore-all-mean", "float32"), ("scale-100", "float32"),
            ("single-class", "float64"), ("unbatched-prob", "bfloat16")]


@pytest.fixture(scope="module")
def cases():
    """(problem, reference, loss, gradient) of numpy and the numpy-naive canary on the 44 golden
    problems (every option in every dtype, K-dim, unbatched, probability targets, C = 4096 ...)
    and on catalogue scenarios with special values."""
    from harness import golden

    refs = []
    for name in golden.names():
        g = golden.load(name)
        refs.append((g.problem, reference.Exact(g.loss_hi, g.loss_lo, g.grad_hi, g.grad_lo)))
    chosen = [scenarios.get(n).problem(d) for n, d in COMPUTED]
    refs += [(p, reference.evaluate(p, workers=1)) for p in chosen]
    impls = [registry.get("numpy"), registry.get("numpy-naive")]
    out = []
    for p, ex in refs:
        for impl in impls:
            if impl.supports(p):
                continue
            with np.errstate(all="ignore"):
                out.append((p, ex, np.asarray(impl.loss(p)), np.asarray(impl.grad(p))))
    return out


def test_blockwise_equals_whole_array_for_any_blocking(cases):
    statuses = set()
    for p, ex, yl, yg in cases:
        budget = BUDGETS[p.format.name]
        whole = verdicts.judge(p, "grad", yg, ex.grad_hi, ex.grad_lo, budget)
        statuses.add(whole[0])
        M = p.num_samples if p.logits.ndim > 1 else 1
        for rows in (1, 3, M):
            got = blockwise.judge_grad(p, yg, _blocks(p, ex.grad_hi, ex.grad_lo, rows), budget)
            assert _same(got, whole), (p, rows, got, whole)
        # tiny chunks (several pieces per block; rows are never cut below a segment), on one
        # thread and on three (each its own accumulators, merged at the end)
        for threads in (1, 3):
            got = blockwise.judge_grad(p, yg, _blocks(p, ex.grad_hi, ex.grad_lo, 5), budget, chunk=7,
                                       threads=threads)
            assert _same(got, whole), (p, "chunk 7", threads)
        assert _same(blockwise.judge_loss(p, yl, ex.loss_hi, ex.loss_lo, budget),
                     verdicts.judge(p, "loss", yl, ex.loss_hi, ex.loss_lo, budget)), p
    assert statuses == {"pass", "fail"}  # the canary fails somewhere, so failing cells are compared


def test_special_cells_agree(cases):
    n = 0
    for p, ex, yl, yg in cases:
        whole = verdicts.judge_special(p, {"loss": yl, "grad": yg}, ex)
        j = blockwise.GradJudge(p, yg, BUDGETS[p.format.name])
        for b in _blocks(p, ex.grad_hi, ex.grad_lo, 2):
            j.add(b)
        got = blockwise.judge_special(p, {"loss": yl, "grad": yg}, ex.loss_hi, ex.loss_lo, j)
        assert _same(got, whole), p
        n += whole is not None
    assert n >= 10


def test_ties_nonfinite_and_kdim_layouts():
    """Adversarial arrays: many equal errors (the worst and the signed maximum must be the
    first in the logits' C order, whatever the row order of the blocks), NaN/inf outputs and
    references, K-dim and long rows (C > SEGMENT: rows judged in segments)."""
    rng = np.random.default_rng(7)
    for shape, dtype in [((3, 5, 4, 2), np.float32), ((6, 9), np.float16), ((2, 70000), np.float32),
                         ((2, 3, 70001), np.float32), ((11,), np.float64)]:
        x = rng.standard_normal(shape).astype(dtype)
        t = rng.integers(0, shape[1] if len(shape) > 1 else shape[0], shape[:1] + shape[2:] if len(shape) > 1 else ())
        if t.ndim:
            t.reshape(-1)[::3] = -100  # ignored rows: scale 0, where 0 / 0 must count as 0
        p = Problem(x, t)
        hi = np.round(rng.standard_normal(shape) * 4) / 4  # few distinct values: ties
        lo = np.where(rng.random(shape) < 0.3, 2.0**-60, 0.0) * np.sign(hi)
        y = (hi + np.round(rng.standard_normal(shape)) * 2.0**-20).astype(dtype)
        for where, v in [(0.02, np.nan), (0.02, np.inf), (0.01, -np.inf)]:
            y[rng.random(shape) < where] = v
            hi = np.where(rng.random(shape) < where / 2, v, hi)
        lo = np.where(np.isfinite(hi), lo, 0.0)
        M = p.num_samples if p.logits.ndim > 1 else 1
        for budget in (BUDGETS[p.format.name], {"grad_ulp": 0, "grad_scaled": 0, "loss_ulp": 0, "loss_scaled": 0}):
            with np.errstate(all="ignore"):
                whole = verdicts.judge(p, "grad", y, hi, lo, budget)
            for rows in ((1, 2, M) if M < 100 else (999, M)):
                got = blockwise.judge_grad(p, y, _blocks(p, hi, lo, rows), budget, chunk=4096)
                assert _same(got, whole), (shape, rows)
            ex = reference.Exact(np.array(1.0), np.array(0.0), hi, lo)
            j = blockwise.GradJudge(p, y, budget)
            for b in _blocks(p, hi, lo, 3 if M < 100 else 5000):
                j.add(b)
            assert _same(blockwise.judge_special(p, {"loss": np.float64(1.0).astype(dtype), "grad": y}, ex.loss_hi,
                                                 ex.loss_lo, j),
                         verdicts.judge_special(p, {"loss": np.float64(1.0).astype(dtype), "grad": y}, ex))


def test_quantile_sketch_error():
    """Past exact_quantiles the median and p99 come from the sketch: within 2**-9 of the larger
    order statistic they interpolate, flagged by quantiles_approx; the rest stays exact."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 500)).astype(np.float32)
    p = Problem(x, rng.integers(0, 500, 64))
    hi = rng.standard_normal(x.shape) * 0.01
    lo = np.zeros_like(hi)
    bound = 2.0 ** -(blockwise.SKETCH_BITS + 1)
    for spread in (2.0**-30, 1.0, 1e6):  # errors of ~1e-9 ulp to ~1e6 ulp, some exactly 0
        y = (hi * (1 + spread * 2.0**-24 * rng.standard_normal(x.shape) ** 3)).astype(np.float32)
        y[:, ::17] = hi[:, ::17].astype(np.float32)
        budget = BUDGETS["float32"]
        exact = blockwise.judge_grad(p, y, _blocks(p, hi, lo, 8), budget)[2]
        sk = blockwise.judge_grad(p, y, _blocks(p, hi, lo, 8), budget, exact_quantiles=0)[2]
        # the allowance is shared by the threads: past it, all of them go over to the sketch
        mixed = blockwise.judge_grad(p, y, _blocks(p, hi, lo, 8), budget, exact_quantiles=10_000,
                                     chunk=1000, threads=3)[2]
        assert _same(mixed, sk)
        assert "quantiles_approx" not in exact and sk.pop("quantiles_approx") == bound
        e = np.sort(metrics.ulp_error(y, hi, lo, "float32").ravel())
        for key, q in (("ulp_median", 0.5), ("ulp_p99", 0.99)):
            pos = q * (e.size - 1)
            top = max(e[math.floor(pos)], e[min(math.floor(pos) + 1, e.size - 1)])
            assert abs(sk[key] - exact[key]) <= bound * top, (spread, key, sk[key], exact[key])
            sk[key] = exact[key]
        assert _same(sk, exact)


def _tiny_catalogue():
    return scenarios.loads('''
[[scenario]]
name = "tiny-llm"
family = "llm"
kind = "llm"
why = "an llm problem, small"
params = { shape = [24, 300], ignore_fraction = 0.1 }
dtypes = ["bfloat16", "float32"]

[[scenario]]
name = "tiny-nan"
family = "x"
kind = "special"
why = "NaN rows: special cells"
params = { fill = nan, where = "rows", every = 3, shape = [12, 50] }
dtypes = ["float32", "float64"]

[[scenario]]
name = "tiny-kdim"
family = "x"
kind = "normal"
why = "K-dim, weights, ignored positions, logits large enough to break the canary"
params = { shape = [3, 7, 4, 5], weight = "random", scale = 100.0, ignore_fraction = 0.2 }
dtypes = ["float16", "float32"]
''')


def test_sweeps_large_path_equals_the_ordinary_one(tmp_path, monkeypatch):
    """With every problem 'large', the sweeps judge blockwise and cache the loss only; the cells
    (error, unsupported and special ones included) are those of the ordinary path."""
    entries, _ = registry.select(["numpy", "numpy-naive", f"{FAULTY}:bare_loss", f"{FAULTY}:Raises"])
    cat = _tiny_catalogue()

    def run(where):
        # workers=1: no process pool (forking after the fast pass's OpenMP threads started in
        # this process would kill the workers; see reference.pool._pool)
        plan = sweeps.Plan(entries, cat, ["float16", "bfloat16", "float32", "float64"], BUDGETS, isolate=False,
                           workers=1, cache=cache_mod.ReferenceCache(tmp_path / where / "cache"))
        res = Results.open(tmp_path / where / "out", {"id": where}, resume=False)
        logs: list[str] = []
        sweeps.run(plan, res, log=logs.append)
        res.close()
        return {(c["kind"], c["impl"], c["dtype"], c["scenario"]): {**c, "seconds": None} for c in res.cells}, logs

    ordinary, _ = run("ordinary")
    monkeypatch.setattr(cache_mod, "BLOCKWISE_LOGITS", 1)
    large, logs = run("large")
    assert ordinary.keys() == large.keys() and len(ordinary) > 40
    assert {c["status"] for c in ordinary.values()} == {"pass", "fail", "error", "unsupported"}
    assert {c["kind"] for c in ordinary.values()} == {"accuracy", "gradient", "special"}
    for k in ordinary:
        assert _same(large[k], ordinary[k]), k
    # one reference pass per problem judged every implementation's gradient
    passes = [m for m in logs if "judged" in m]
    assert len(passes) == 6 and all("judged 2 gradients" in m or "judged 3 gradients" in m for m in passes)
    files = sorted(q.name for q in (tmp_path / "large" / "cache").rglob("*.npz"))
    assert len(files) == 6 and all(f.endswith(".loss.npz") for f in files)  # no gradient stored
    # a second run takes the loss from the cache (no loss-only pass) and still needs the blocks
    again, logs = run("large")
    assert not any("loss (blockwise" in m for m in logs)
    assert all(_same(again[k], ordinary[k]) for k in ordinary)


def test_cached_loss_serves_a_loss_only_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "BLOCKWISE_LOGITS", 1)
    entries, _ = registry.select(["numpy"])
    cat = [s for s in _tiny_catalogue() if s.name == "tiny-llm"]
    store = cache_mod.ReferenceCache(tmp_path / "cache")
    plan = sweeps.Plan(entries, cat, ["float32"], BUDGETS, kinds=("accuracy",), isolate=False, workers=1,
                       cache=store)
    res = Results.open(tmp_path / "out", {"id": "x"}, resume=False)
    logs: list[str] = []
    sweeps.run(plan, res, log=logs.append)
    res.close()
    assert [c["status"] for c in res.cells] == ["pass"]
    assert any("loss (blockwise" in m for m in logs) and not any("judged" in m for m in logs)
    p = cat[0].problem("float32")
    ex, flag = store.load_loss(p)
    assert flag is None  # the gradient was never seen
    whole = reference.evaluate(p, workers=1)
    assert ex.loss_hi == whole.loss_hi and ex.loss_lo == whole.loss_lo
    assert store.load(p) is None and store.get_many([p])[0].grad_hi is None


def test_streamed_digest_is_the_sha256_of_the_bytes(monkeypatch):
    """Problem.digest feeds 64 MB pieces (no full-size copy); it must be the sha256 of the
    arrays' whole C-order bytes, so cache keys did not change."""
    import hashlib

    from harness import problem as problem_mod

    rng = np.random.default_rng(0)
    p = Problem(rng.standard_normal((40, 3000)).astype(np.float32), rng.integers(0, 3000, 40),
                weight=rng.random(3000).astype(np.float32), reduction="sum", label_smoothing=0.1)
    h = hashlib.sha256()
    for arr in (p.logits, p.target, p.weight):
        h.update(f"{arr.dtype.name}{arr.shape};".encode() + arr.tobytes())
    h.update(b"-100;sum;0.1")
    monkeypatch.setattr(problem_mod, "_DIGEST_PIECE", 1 << 12)  # many pieces
    assert p.digest == h.hexdigest()


def test_row_scales_match_scales():
    p = scenarios.get("combo-kdim-weight-mean").problem("float32")
    full = budgets.scales(p, "grad")
    per = budgets.grad_row_scales(p)
    rows = np.moveaxis(full, 1, -1).reshape(-1, p.num_classes)
    assert np.array_equal(rows, np.broadcast_to(per[:, None], rows.shape))


def test_exact_sum_is_exact_and_order_free():
    from fractions import Fraction

    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal(3000)) * 2.0 ** rng.integers(-1100, 1000, 3000)
    x[::7] = 5e-324 * rng.integers(1, 100, x[::7].size)
    k = rng.integers(-3000, 3000, 3000)
    want = sum(Fraction(float(v)) * Fraction(2) ** int(e) for v, e in zip(x, k, strict=True))
    for parts in (1, 7, 3000):
        acc = ExactSum()
        for idx in np.array_split(rng.permutation(x.size), parts):
            acc.add(x[idx], k[idx])
        n, e = acc.fraction()
        assert Fraction(n) * Fraction(2) ** e == want
    acc = ExactSum()
    acc.add(x)
    assert acc.value(3) == float(sum(Fraction(float(v)) for v in x) / 3)  # correctly rounded
    acc.add(np.array([np.inf]))
    assert acc.value() == math.inf
