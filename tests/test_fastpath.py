"""harness.fastpath against gmpy2/MPFR at 300 bits (independent of the kernel's own arithmetic)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpfr

fp = pytest.importorskip("harness.fastpath")
from harness.fastpath import exponential as fp_exp  # noqa: E402  (the reduction and polynomial constants)

PREC = 300
CTX = gmpy2.context(precision=PREC, emin=-(2**30), emax=2**30)
LN2 = None


def _ulp(v: float) -> float:
    if v == 0.0:
        return 2.0**-1074
    _, e = math.frexp(abs(v))
    return max(2.0 ** (e - 53), 2.0**-1074)


def _true_d(x, lo, i, j, k):
    d = mpfr(float(x[i, j])) - mpfr(float(x[i, k]))
    if lo is not None:
        d = d + (mpfr(float(lo[i, j])) - mpfr(float(lo[i, k])))
    return d


def _check_exp(x, k, lo=None):
    """Run exp_rows and check every entry; returns (max log2 rel err, count checked, e arrays)."""
    e1, e2, e3, s, fl, smin = fp.exp_rows(x, k, lo)
    assert smin.shape == (x.shape[0],) and not smin.any()
    worst = -math.inf
    n_checked = 0
    n_rn = 0
    lim_flag = mpfr(fp.FLAG_E)
    lim_1000 = mpfr(2) ** -1000
    rel_lim = mpfr(fp.EXP_REL)
    eps_mid = mpfr(2) ** -100
    with gmpy2.context(CTX):
        for i in range(x.shape[0]):
            kk = int(k[i])
            assert (e1[i, kk], e2[i, kk], e3[i, kk], fl[i, kk]) == (1.0, 0.0, 0.0, 0)
            for j in range(x.shape[1]):
                if j == kk:
                    continue
                a1, a2, a3, f = float(e1[i, j]), float(e2[i, j]), float(e3[i, j]), int(fl[i, j])
                if x[i, j] == -np.inf:
                    assert (a1, a2, a3, f) == (0.0, 0.0, 0.0, 0)
                    continue
                d = _true_d(x, lo, i, j, kk)
                tv = gmpy2.exp(d)
                if tv < lim_1000:
                    assert f == 2 or (f == 3 and float(d) < fp.FLAG3_D + 2.0**-40), (i, j, float(d))
                if f == 2:
                    assert tv < lim_flag, (i, j, float(d))
                    assert (a1, a2, a3) == (0.0, 0.0, 0.0)
                    continue
                if f == 3:  # the tighter bound of flag 3
                    assert tv < mpfr(2) ** fp.FLAG3_LOG2, (i, j, float(d))
                    assert (a1, a2, a3) == (0.0, 0.0, 0.0)
                    continue
                got = mpfr(a1) + mpfr(a2) + mpfr(a3)
                err = abs(got - tv)
                rel = err / tv
                if f == 1:
                    assert lim_1000 <= tv < mpfr(fp.FLAG1_E), (i, j, float(d))
                    assert err <= rel_lim * tv + mpfr(fp.FLAG1_ABS), (i, j, float(d))
                else:
                    assert f == 0
                    assert tv >= mpfr(2) ** mpfr("-949.3"), (i, j, float(d))
                    assert rel <= rel_lim, (i, j, float(d), float(gmpy2.log2(rel)))
                    if err:
                        worst = max(worst, float(gmpy2.log2(rel)))
                # non-overlap
                assert abs(a2) <= _ulp(a1) / 2, (i, j, a1, a2)
                if a2 == 0.0:
                    assert a3 == 0.0
                else:
                    assert abs(a3) <= _ulp(a2) / 2, (i, j, a2, a3)
                # e1 = RN(e_true) unless e_true is within 2^-100 of a midpoint
                up = float(tv * (1 + eps_mid))
                dn = float(tv * (1 - eps_mid))
                if up == dn:
                    assert a1 == up, (i, j, float(d))
                    n_rn += 1
                n_checked += 1
    return worst, n_checked, n_rn, (e1, e2, e3, s, fl)


def _rows(vals, C, m=0.0):
    """Pack 1-D candidate values d into rows [m, m + d, ...] with the max first."""
    vals = np.asarray(vals, dtype=np.float64)
    per = C - 1
    n = -(-vals.size // per)
    pad = np.full(n * per, -1.0)
    pad[: vals.size] = vals
    x = np.empty((n, C))
    x[:, 0] = m
    x[:, 1:] = m + pad.reshape(n, per)
    x[:, 1:] = np.minimum(x[:, 1:], m)
    return x, np.zeros(n, dtype=np.int64)


def _special_d(rng):
    L = math.log(2) / 1024
    ks = rng.integers(0, 1_100_000, size=6000)
    mids = -(ks + 0.5) * L
    grid = -ks * L
    near0 = -np.concatenate([rng.uniform(0, 1e-3, 3000), 10.0 ** rng.uniform(-300, -3, 3000)])
    fixed = np.array(
        [
            0.0,
            -0.0,
            -1e-20,
            -5e-324,
            -(2.0**-1074),
            -1e-300,
            -1.0,
            -0.5,
            -math.log(2),
            -658.0,
            -657.9999999999999,
            -658.0000000000001,
            -693.1471805599453,
            -693.15,
            -693.14,
            -708.39,
            -745.0,
            -745.1332,
            -745.5,
            -745.4999999999999,
            -745.5000000000001,
            -746.0,
            -800.0,
            -1e6,
            -1e300,
        ]
    )
    thr = np.concatenate([np.nextafter(fixed, -np.inf), np.nextafter(fixed, 0.0)])
    return np.concatenate(
        [
            mids,
            np.nextafter(mids, 0.0),
            np.nextafter(mids, -np.inf),
            grid,
            np.nextafter(grid, -np.inf),
            near0,
            fixed,
            thr,
        ]
    )


def test_constants_and_table():
    with gmpy2.context(CTX):
        ln2 = gmpy2.log(mpfr(2))
        L = ln2 / 1024
        assert fp_exp._INV_L == float(1024 / ln2)
        assert mpfr(fp_exp._L1) * 2**42 == int(mpfr(fp_exp._L1) * 2**42)
        assert abs(mpfr(fp_exp._L1) + fp_exp._L2 + fp_exp._L3 - L) < mpfr(2) ** -154
        for c, (h, lw) in {
            3: (fp_exp._C3H, fp_exp._C3L),
            4: (fp_exp._C4H, fp_exp._C4L),
            5: (fp_exp._C5H, fp_exp._C5L),
        }.items():
            assert abs(mpfr(h) + lw - mpfr(1) / math.factorial(c)) < mpfr(
                2
            ) ** -106 / math.factorial(c)
        for c, v in {6: fp_exp._C6, 7: fp_exp._C7, 8: fp_exp._C8}.items():
            assert v == float(mpfr(1) / math.factorial(c))
        T = fp.exp_table()
        for i in range(1024):
            tv = gmpy2.exp2(mpfr(i) / 1024)
            t1, t2, t3 = (float(v) for v in T[i])
            assert abs(mpfr(t1) + t2 + t3 - tv) <= tv * mpfr(2) ** -158
            assert t1 == float(tv) and abs(t2) <= _ulp(t1) / 2 and abs(t3) <= _ulp(t2) / 2


def test_exp_accuracy_random(rng):
    d = np.concatenate([rng.uniform(-745, 0, 150_000), _special_d(rng)])
    rng.shuffle(d)
    x, k = _rows(d, 1001)
    worst, n, n_rn, _ = _check_exp(x, k)
    print(
        f"\nexp_rows m=0: {n} entries checked, {n_rn} RN checks, max rel err 2^{worst:.2f} "
        f"(EXP_REL = 2^{math.log2(fp.EXP_REL):.0f})"
    )
    assert n > 150_000


def test_exp_accuracy_shifted_max(rng):
    # x_j - m is inexact in double: the TwoSum error term carries the argument
    d = rng.uniform(-700, 0, 20_000)
    x, k = _rows(d, 501, m=12.345678901234567)
    x2, k2 = _rows(rng.uniform(-60, 0, 10_000), 501, m=-1234.5678)
    worst, n, _, _ = _check_exp(np.vstack([x, x2]), np.concatenate([k, k2]))
    print(f"\nexp_rows shifted max: {n} entries, max rel err 2^{worst:.2f}")


def test_exp_accuracy_double_double(rng):
    M, C = 40, 501
    x = rng.uniform(-700, 30, (M, C))
    lo = rng.uniform(-0.5, 0.5, (M, C)) * np.spacing(np.abs(x))
    lo[:, 7] = 0.0
    tot = x + lo  # argmax on the double-double value (ties are broken by lo)
    k = np.argmax(x, axis=1).astype(np.int64)
    for i in range(M):
        kk = k[i]
        lo[i, kk] = -abs(lo[i, kk])  # keep (x_k, lo_k) the maximum of x + lo
    # a few exact ties of x with the max, with lo below the max's lo
    for i in range(0, M, 5):
        kk = k[i]
        j = (kk + 1) % C
        x[i, j] = x[i, kk]
        lo[i, j] = lo[i, kk] - abs(lo[i, kk]) - 1e-30
    del tot
    worst, n, _, _ = _check_exp(x, k, lo)
    print(f"\nexp_rows double-double input: {n} entries, max rel err 2^{worst:.2f}")


def _check_sum(x, k, lo=None):
    s = fp.exp_rows(x, k, lo)[3]
    worst = -math.inf
    with gmpy2.context(CTX):
        for i in range(x.shape[0]):
            terms = [
                gmpy2.exp(_true_d(x, lo, i, j, int(k[i])))
                for j in range(x.shape[1])
                if j != k[i] and x[i, j] != -np.inf
            ]
            st = gmpy2.fsum(terms) if terms else mpfr(0)
            got = mpfr(float(s[i, 0])) + float(s[i, 1]) + float(s[i, 2])
            err = abs(got - st)
            assert err <= fp.SUM_REL * st + mpfr(fp.SUM_ABS) * x.shape[1], (i, float(st))
            if err and st > mpfr(2) ** -900:
                worst = max(worst, float(gmpy2.log2(err / st)))
            assert abs(float(s[i, 1])) <= _ulp(float(s[i, 0]))
    return worst


def test_sum(rng):
    rows = []
    # C = 1: s = 0
    rows.append((np.array([[3.0]]), None))
    # C = 2
    rows.append(
        (np.array([[0.0, -1.0], [-0.25, 0.0], [5.0, 5.0], [0.0, -np.inf], [0.0, -700.0]]), None)
    )
    # C = 1000: random, with -inf entries, ties, all-equal rows, tiny sums
    x = rng.normal(0, 4, (6, 1000))
    x[0, rng.integers(0, 1000, 100)] = -np.inf
    x[1, :] = 2.5
    x[2, :500] = x[2].max()
    x[3, :] = -800.0
    x[3, 10] = 0.0
    x[3, 11] = -650.0
    x[4, :] = rng.uniform(-745, -600, 1000)
    x[4, 3] = 0.0
    x[5, :] = rng.uniform(-40, 0, 1000)
    rows.append((x, None))
    lo = rng.uniform(-0.5, 0.5, x.shape) * np.spacing(np.abs(x))
    lo[~np.isfinite(x)] = 0.0
    rows.append((x.copy(), lo))
    # C = 100000
    xb = rng.normal(0, 4, (1, 100_000))
    xb[0, ::7] = -np.inf
    rows.append((xb, None))
    worst = -math.inf
    for xx, ll in rows:
        xx = np.ascontiguousarray(xx)
        if ll is not None:
            # argmax of the double-double value
            k = np.zeros(xx.shape[0], dtype=np.int64)
            for i in range(xx.shape[0]):
                best = None
                for j in range(xx.shape[1]):
                    v = (
                        mpfr(float(xx[i, j])) + float(ll[i, j])
                        if np.isfinite(xx[i, j])
                        else mpfr("-inf")
                    )
                    if best is None or v > best:
                        best, k[i] = v, j
        else:
            k = np.argmax(xx, axis=1).astype(np.int64)
        worst = max(worst, _check_sum(xx, k, ll))
    print(
        f"\nsum (rows with s > 2^-900): max rel err 2^{worst:.2f} (SUM_REL = 2^{math.log2(fp.SUM_REL):.3f})"
    )


def test_sum_exact_cases():
    x = np.zeros((1, 4097))
    e1, e2, e3, s, fl, _ = fp.exp_rows(x, np.zeros(1, dtype=np.int64))
    assert tuple(s[0]) == (4096.0, 0.0, 0.0)
    assert np.all(e1 == 1.0) and not e2.any() and not e3.any() and not fl.any()


def test_scale_rows(rng):
    M, C = 30, 400
    x = rng.normal(0, 6, (M, C))
    x[:, 4] = -670.0  # flag 1 entries
    x[:, 5] = -700.0  # flag 2 entries
    x[:, 6] = -np.inf
    k = np.argmax(x, axis=1).astype(np.int64)
    e1, e2, e3, _, fl, _ = fp.exp_rows(x, k)
    f = np.empty((M, 3))
    with gmpy2.context(CTX):
        fv = []
        for i in range(M):
            v = mpfr(rng.uniform(0.5, 2)) * mpfr(2) ** int(rng.integers(-900, 900)) / 3
            f1 = float(v)
            f2 = float(v - f1)
            f3 = float(v - f1 - f2)
            f[i] = (f1, f2, f3)
            fv.append(mpfr(f1) + f2 + f3)
        for use_flag in (False, True):
            hi, lo, bound = fp.scale_rows(f, e1, e2, e3, flag=fl if use_flag else None)
            worst = -math.inf
            n_rn = 0
            for i in range(M):
                for j in range(C):
                    tv = fv[i] * gmpy2.exp(_true_d(x, None, i, j, int(k[i])))
                    if x[i, j] == -np.inf:
                        assert hi[i, j] == 0.0 and lo[i, j] == 0.0
                        continue
                    if fl[i, j] == 2:
                        if use_flag:
                            assert hi[i, j] == 0.0 and abs(tv) <= bound[i, j]
                        continue
                    err = abs(mpfr(float(hi[i, j])) + float(lo[i, j]) - tv)
                    # bound covers the value of record; the view's rounding of lo comes on top
                    assert err <= bound[i, j] + abs(float(lo[i, j])) * 2.0**-53, (i, j)
                    # and the record itself has >= 112 bits (was 2^-104.4 with an fma product)
                    if fl[i, j] == 0 and abs(tv) > mpfr(2) ** -900:
                        assert bound[i, j] <= abs(float(hi[i, j])) * 2.0**-112
                    if err and fl[i, j] == 0 and abs(tv) > mpfr(2) ** -900:
                        worst = max(worst, float(gmpy2.log2(err / abs(tv))))
                    up = float(tv * (1 + mpfr(2) ** -100))
                    dn = float(tv * (1 - mpfr(2) ** -100))
                    if up == dn:
                        assert hi[i, j] == up
                        n_rn += 1
                    assert abs(float(lo[i, j])) <= _ulp(float(hi[i, j])) / 2 * (1 + 2.0**-40)
            assert n_rn > M * C * 0.9
    print(f"\nscale_rows: max rel err of hi+lo 2^{worst:.2f}")


def test_out_arrays_and_validation():
    x = np.array([[0.0, -1.0, -2.0]])
    k = np.zeros(1, dtype=np.int64)
    e1, e2, e3, *_ = fp.exp_rows(x, k)
    oh = np.empty_like(e1)
    ol = np.empty_like(e1)
    hi, lo, _ = fp.scale_rows(np.array([[1.0, 0.0, 0.0]]), e1, e2, e3, out_hi=oh, out_lo=ol)
    assert hi is oh and lo is ol and np.array_equal(hi, e1)
    with pytest.raises(ValueError):
        fp.exp_rows(x.astype(np.float32), k)
    with pytest.raises(ValueError):
        fp.exp_rows(x, np.array([5]))


def test_import_harness_does_not_import_numba():
    code = "import sys, harness; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stable_rows_agrees_with_the_numpy_specification():
    """stable_rows (compiled, with an integer screen) decides exactly like
    reference.stability._round_stable (the specification) on values crowding every format's
    boundaries."""
    from harness.formats import FORMATS
    from harness.reference import stability

    rng = np.random.default_rng(11)
    vals = [10.0 ** rng.uniform(-300, 300, 4000), 10.0 ** rng.uniform(-50, 6, 4000)]
    for fmt in FORMATS.values():  # midpoints, binade starts, subnormal midpoints, max + ulp/2
        p, emin, emax = fmt.precision, fmt.emin, fmt.emax
        for e in list(range(emin - p, emin + 3)) + list(rng.integers(emin, emax, 30)) + [emax]:
            ulp = 2.0 ** (max(e, emin) - p + 1)
            n = rng.integers(2 ** (p - 1), 2**p, 5).astype(np.float64) if e >= emin else rng.integers(0, 2 ** (p - 1), 5).astype(np.float64)
            for base in [*((n + 0.5) * ulp), 2.0**e, (2 - 2.0 ** (1 - p)) * 2.0**emax + 2.0 ** (emax - p)]:
                if 0 < base < 1.7e308:
                    vals.append(np.array([np.nextafter(base, 0), base, np.nextafter(base, np.inf),
                                          base * (1 + 2.0**-51), base * (1 - 2.0**-51)]))
    hi = np.concatenate(vals)
    hi = hi[np.isfinite(hi) & (hi > 2.0**-960) & (hi < 2.0**1020)]
    hi = np.where(rng.random(hi.size) < 0.5, -hi, hi)
    ulp = np.spacing(np.abs(hi))
    lo = rng.uniform(-0.5, 0.5, hi.size) * ulp
    lo[rng.random(hi.size) < 0.2] = 0.0
    near = rng.random(hi.size) < 0.1  # |lo| at the float64 midpoint distance
    lo[near] = np.copysign(ulp[near] * 0.5 * (1 - 2.0**-20), lo[near])
    bound = np.abs(hi) * 2.0 ** rng.uniform(-120, -104, hi.size)
    spec = stability._round_stable(hi, lo, bound)
    M = hi.size
    H = np.stack([hi, np.ones(M)], axis=1)
    L = np.stack([lo, np.zeros(M)], axis=1)
    B = np.stack([bound, np.zeros(M)], axis=1)
    got = fp.stable_rows(H.copy(), L.copy(), B.copy(), np.ones((M, 2)), np.zeros((M, 2), np.uint8),
                         np.ones(M), np.ones(M, np.int64), lo_lim=2.0**-960, hi_lim=2.0**1020,
                         good_bits=106)
    assert 0.05 < spec.mean() < 0.95  # the data crowd the boundaries: both outcomes occur
    np.testing.assert_array_equal(got, spec)


@pytest.mark.slow
def test_warm_compiles_what_the_reference_runs(tmp_path):
    """fastpath.warm() (the install step) leaves numba's cache holding every kernel signature a
    run uses: a later process evaluating ordinary problems compiles nothing (no cache miss)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "from harness import fastpath; fastpath.warm()"], env=env, check=True,
                   timeout=600)
    code = """
import json, numba
from harness import reference as R, scenarios as S
from harness.fastpath import exponential, scaling, stability
for name, dtype in (("scale-1", "float32"), ("scale-1", "bfloat16"), ("weight-random-mean", "float64")):
    p = S.get(name).problem(dtype)
    R.evaluate(p, workers=1)
    for _ in R.blocks(p, workers=1, reuse=True):
        pass
k = [exponential._exp_rows_kernel, scaling._scale_rows_kernel, stability._stable_rows_kernel]
print(json.dumps({"hits": sum(sum(d.stats.cache_hits.values()) for d in k),
                  "misses": sum(sum(d.stats.cache_misses.values()) for d in k)}))
"""
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["hits"] >= 3 and stats["misses"] == 0, stats
