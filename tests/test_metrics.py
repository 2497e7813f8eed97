"""Tests of harness.metrics against exact hand / Fraction / MPFR references."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np
import pytest

from harness.formats import FORMATS, Format
from harness.metrics import (
    HIST_EDGES,
    abs_error,
    bits_error,
    compare,
    nonfinite_mismatch,
    normwise_rel_error,
    rel_error,
    round_to_format,
    summarize,
    ulp,
    ulp_error,
)

FMT_NAMES = list(FORMATS)
INF = math.inf
NAN = math.nan


# ---------------------------------------------------------------- exact references


def rn_exact(v: Fraction, fmt: Format) -> float:
    """Textbook RN-even of an exact rational into fmt, returned as a float (exact)."""
    if v == 0:
        return 0.0
    s = -1 if v < 0 else 1
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    assert Fraction(2) ** e <= a < Fraction(2) ** (e + 1)
    q = max(e, fmt.emin) - fmt.precision + 1
    n = a / Fraction(2) ** q
    k = math.floor(n)
    rem = n - k
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and k % 2 == 1):
        k += 1
    r = k * Fraction(2) ** q
    if r > Fraction(fmt.max):
        return s * INF
    if k == 0:
        return math.copysign(0.0, s)
    return s * float(r)


def ulp_exact(x: float, fmt: Format) -> Fraction:
    """2^(max(e, emin) - p + 1) with e = floor(log2|x|), by exact integer arithmetic."""
    a = abs(Fraction(x))
    if a == 0:
        return P2(fmt.emin - fmt.precision + 1)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if P2(e) > a:
        e -= 1
    return P2(max(e, fmt.emin) - fmt.precision + 1)


def rn_mpfr(v: Fraction, fmt: Format) -> float:
    """The same rounding done by MPFR (exponents in MPFR's [0.5, 1) convention)."""
    ctx = gmpy2.context(
        precision=fmt.precision,
        emin=fmt.emin - fmt.precision + 2,
        emax=fmt.emax + 1,
        subnormalize=True,
    )
    with gmpy2.context(ctx):
        return float(gmpy2.mpfr(gmpy2.mpq(v.numerator, v.denominator)))


def dd(v: Fraction) -> tuple[float, float]:
    """The double-double (hi, lo) of an exact rational, as the reference module produces it."""
    try:
        hi = float(v)  # CPython's int/int true division is correctly rounded
    except OverflowError:
        return (INF if v > 0 else -INF), 0.0
    if math.isinf(hi):
        return hi, 0.0
    return hi, float(v - Fraction(hi))


def F(*x) -> Fraction:
    return Fraction(*x)


def P2(k: int) -> Fraction:
    return Fraction(2) ** k


def special_values(fmt: Format, rnd: random.Random) -> list[Fraction]:
    """Rationals where rounding is delicate in fmt: midpoints ± tiny, subnormals, overflow."""
    p, emin, emax = fmt.precision, fmt.emin, fmt.emax
    vals: list[Fraction] = []
    q_sub = emin - p + 1
    for q, kmax in ((0 - p + 1, 2**p), (q_sub, 2 ** (p - 1)), (emax - p + 1, 2**p)):
        for _ in range(12):
            k = rnd.randrange(2 ** (p - 1) if q != q_sub else 0, kmax)
            base = k * P2(q)
            mid = (2 * k + 1) * P2(q - 1)
            # a perturbation far below fmt's ulp but still visible in a double-double
            tiny = P2(q - 1 - rnd.randrange(3, 40))
            vals += [base, mid, mid + tiny, mid - tiny, base + tiny, base - tiny]
    # below / at / above half the smallest subnormal, and the smallest subnormal itself
    vals += [P2(q_sub - 1), P2(q_sub - 1) + P2(q_sub - 30), P2(q_sub - 1) - P2(q_sub - 30)]
    vals += [P2(q_sub), P2(q_sub - 2), 3 * P2(q_sub - 1), 5 * P2(q_sub - 1)]
    # binade boundaries and powers of two
    for e in (emin - 1, emin, 0, 1, 7, emax):
        vals += [P2(e), P2(e) - P2(e - p - 1), P2(e) - P2(e - p - 1) - P2(e - p - 20)]
        vals += [P2(e) + P2(e - p), P2(e) + P2(e - p) + P2(e - p - 20)]
    # overflow threshold max + ulp/2 (IEEE: values >= it round to inf)
    mx, ut = Fraction(fmt.max), P2(emax - p + 1)
    vals += [mx, mx + ut / 2, mx + ut / 2 - P2(emax - p - 30), mx + ut / 2 + P2(emax - p - 30)]
    vals += [mx + ut, P2(emax + 1), P2(emax + 5)]
    if fmt.name != "float64":
        vals += [P2(1030)]  # beyond float64 too: hi = inf
    # random rationals across the whole range
    for _ in range(40):
        e = rnd.randrange(emin - p - 2, emax + 2)
        vals.append(Fraction(rnd.getrandbits(80) | 1, 2**80) * P2(e) + P2(e))
    return vals + [-v for v in vals]


# ---------------------------------------------------------------- round_to_format


@pytest.mark.parametrize("name", FMT_NAMES)
def test_fraction_oracle_agrees_with_mpfr(name):
    fmt = FORMATS[name]
    for v in special_values(fmt, random.Random(1)):
        a, b = rn_exact(v, fmt), rn_mpfr(v, fmt)
        assert a == b or (math.isnan(a) and math.isnan(b)), (v, a, b)


@pytest.mark.parametrize("name", FMT_NAMES)
def test_round_to_format_matches_exact(name):
    fmt = FORMATS[name]
    vals = special_values(fmt, random.Random(hash(name) & 0xFFFF))
    hl = [dd(v) for v in vals]
    hi = np.array([h for h, _ in hl])
    lo = np.array([w for _, w in hl])
    got = round_to_format(hi, lo, fmt)
    assert got.dtype == fmt.dtype
    got64 = got.astype(np.float64)
    for v, g in zip(vals, got64, strict=True):
        want = rn_exact(v, fmt)
        assert g == want, (name, v, float(v), g, want)
        if want == 0:
            assert math.copysign(1, g) == math.copysign(1, want)


@pytest.mark.parametrize("name", FMT_NAMES)
def test_round_to_format_midpoint_sign_of_lo(name):
    fmt = FORMATS[name]
    if name == "float64":
        # a float64 midpoint is not a float64: hi rounds to even, lo = ±ulp/2 carries the rest
        mid = 1 + P2(-53)
        hi, lo = dd(mid)
        assert (hi, lo) == (1.0, 2.0**-53)
        assert round_to_format([hi], [lo], fmt)[0] == 1.0
        hi, lo = dd(mid + P2(-80))
        assert round_to_format([hi], [lo], fmt)[0] == 1.0 + 2.0**-52
        return
    u = 2.0 ** (1 - fmt.precision)
    mid_even, mid_odd = 1.0 + u / 2, 1.0 + 1.5 * u  # ties go to 1.0 resp. 1 + 2u
    r = round_to_format([mid_even] * 3 + [mid_odd] * 3, [0.0, 1e-30, -1e-30] * 2, fmt)
    want = [1.0, 1.0 + u, 1.0, 1.0 + 2 * u, 1.0 + 2 * u, 1.0 + u]
    assert r.astype(np.float64).tolist() == want


def test_round_to_format_avoids_bfloat16_double_rounding():
    x = 1 + 2.0**-8 + 2.0**-30
    # ml_dtypes goes float64 -> float32 -> bfloat16 and lands on the tie
    assert float(np.array([x]).astype(ml_dtypes.bfloat16)[0]) == 1.0
    assert float(round_to_format([x], [0.0], "bfloat16")[0]) == 1.0078125
    # same story with the information only in lo
    assert float(round_to_format([1 + 2.0**-8], [2.0**-60], "bfloat16")[0]) == 1.0078125
    assert float(round_to_format([1 + 2.0**-8], [-(2.0**-60)], "bfloat16")[0]) == 1.0


@pytest.mark.parametrize("name", FMT_NAMES)
def test_round_to_format_nonfinite_passthrough(name):
    r = round_to_format([INF, -INF, NAN, 0.0, -0.0], [0.0, 0.0, 0.0, 0.0, 0.0], name)
    r = r.astype(np.float64)
    assert r[0] == INF and r[1] == -INF and math.isnan(r[2])
    assert r[3] == 0 and not np.signbit(r[3]) and np.signbit(r[4])


def test_round_to_format_overflow_threshold_float16():
    # float16: max 65504, top ulp 32; threshold 65520
    hi = np.array([65519.0, 65520.0, 65520.0, 65520.0, -65520.0, 70000.0])
    lo = np.array([0.0, 0.0, -1e-9, 1e-9, 1e-9, 0.0])
    r = round_to_format(hi, lo, "float16").astype(np.float64)
    assert r.tolist() == [65504.0, INF, 65504.0, INF, -65504.0, INF]


def test_round_to_format_large_array_vectorized():
    rng = np.random.default_rng(0)
    hi = rng.standard_normal(200_000) * 2.0 ** rng.integers(-30, 30, 200_000)
    lo = hi * 2.0**-60 * rng.standard_normal(200_000)
    lo = (hi + lo) - hi  # keep |lo| <= ulp(hi)/2
    for name in ("float16", "float32"):
        # for float16/float32 numpy's own float64 cast is correctly rounded when lo == 0
        with np.errstate(over="ignore"):
            want = hi.astype(name)
        np.testing.assert_array_equal(round_to_format(hi, np.zeros_like(hi), name), want)
    np.testing.assert_array_equal(round_to_format(hi, lo, "float64"), hi)


# ---------------------------------------------------------------- ulp


@pytest.mark.parametrize(
    "name,x,want",
    [
        ("float32", 1.0, 2.0**-23),
        ("float32", 2.0**-149, 2.0**-149),
        ("float32", 0.0, 2.0**-149),
        ("float32", 2.0**-126, 2.0**-149),
        ("float32", 1.5 * 2.0**-127, 2.0**-149),
        ("float32", 0.99999994, 2.0**-24),
        ("float32", float(np.finfo(np.float32).max), 2.0**104),
        ("float16", 65504.0, 32.0),
        ("float16", 1.0, 2.0**-10),
        ("float16", 2.0**-24, 2.0**-24),
        ("float16", -(2.0**-15), 2.0**-24),
        ("float16", 2.0**-14, 2.0**-24),
        ("float16", 1024.0, 1.0),
        ("bfloat16", 1.0, 2.0**-7),
        ("bfloat16", 2.0**-133, 2.0**-133),
        ("bfloat16", 0.0, 2.0**-133),
        ("bfloat16", 3.0, 2.0**-6),
        ("float64", 1.0, 2.0**-52),
        ("float64", 5e-324, 5e-324),
        ("float64", 0.0, 5e-324),
        ("float64", 2.0**-1022, 5e-324),
        ("float64", 1.7976931348623157e308, 2.0**971),
        ("float64", INF, 2.0**971),
        ("float16", -INF, 32.0),
        ("bfloat16", INF, 2.0**120),
    ],
)
def test_ulp(name, x, want):
    assert ulp(np.array([x]), name)[0] == want


def test_ulp_of_format_arrays():
    x = np.array([1.0, 2.0, 0.5], dtype=ml_dtypes.bfloat16)
    assert ulp(x, "bfloat16").tolist() == [2.0**-7, 2.0**-6, 2.0**-8]
    assert math.isnan(ulp(np.array([NAN]), "float32")[0])


# ---------------------------------------------------------------- ulp_error


@pytest.mark.parametrize("name", FMT_NAMES)
def test_ulp_error_hand_cases(name):
    fmt = FORMATS[name]
    u = 2.0 ** (1 - fmt.precision)  # ulp(1)
    # v = 1 + u/4: RN(v) = 1 (error -1/4 ulp); 1 + u is +3/4; 1 - u/2 (the spacing halves
    # below 1) is -3/4 ulp of RN(v)
    v = 1 + F(u) / 4
    hi, lo = dd(v)
    y = np.array([1.0, 1.0 + u, 1.0 - u / 2, 1.0 + 2 * u], dtype=fmt.dtype)
    s = ulp_error(y, hi, lo, fmt, signed=True)
    assert s.tolist() == [-0.25, 0.75, -0.75, 1.75]
    assert ulp_error(y, hi, lo, fmt).tolist() == [0.25, 0.75, 0.75, 1.75]
    # negative mirror
    s = ulp_error(-y, -hi, -lo, fmt, signed=True)
    assert s.tolist() == [0.25, -0.75, 0.75, -1.75]


@pytest.mark.parametrize("name", FMT_NAMES)
def test_ulp_error_correct_rounding_bounds(name):
    """RN(v) has |err| <= 1/2; the next float up (RN(v) + ulp) has 1/2 <= |err| <= 3/2."""
    fmt = FORMATS[name]
    vals = [v for v in special_values(fmt, random.Random(7)) if v != 0]
    hl = [dd(v) for v in vals]
    hi = np.array([h for h, _ in hl])
    lo = np.array([w for _, w in hl])
    ref = np.array([rn_exact(v, fmt) for v in vals])
    fin = np.isfinite(ref) & (np.abs(ref) < fmt.max)
    ref, hi, lo = ref[fin], hi[fin], lo[fin]
    y = ref.astype(fmt.dtype)
    assert np.all(ulp_error(y, hi, lo, fmt) <= 0.5)
    # the next float up in fmt: RN(v) + its ulp, which is exactly representable
    nxt = np.array([rn_exact(Fraction(r) + ulp_exact(r, fmt), fmt) for r in ref])
    assert np.all(nxt > ref)
    ok = np.isfinite(nxt)
    e = ulp_error(nxt[ok].astype(fmt.dtype), hi[ok], lo[ok], fmt)
    assert np.all((e >= 0.5) & (e <= 1.5)), e


def test_ulp_error_subnormals():
    # float32 subnormal ulp is 2^-149 everywhere below 2^-126
    s = 2.0**-149
    v = 3 * F(s) + F(s) / 4
    hi, lo = dd(v)
    y = np.array([3 * s, 4 * s, 2 * s, 0.0], dtype=np.float32)
    assert ulp_error(y, hi, lo, "float32", signed=True).tolist() == [-0.25, 0.75, -1.25, -3.25]
    # float16: v = 2^-25 (half the smallest subnormal) rounds to 0; ulp(0) = 2^-24
    y = np.array([0.0, 2.0**-24], dtype=np.float16)
    assert ulp_error(y, 2.0**-25, 0.0, "float16", signed=True).tolist() == [-0.5, 0.5]
    # bfloat16 near tiny: ulp stays 2^-133 across the subnormal/normal boundary
    y = np.array([2.0**-126 + 2.0**-133], dtype=ml_dtypes.bfloat16)
    assert ulp_error(y, 2.0**-126, 0.0, "bfloat16", signed=True).tolist() == [1.0]
    # float64: measured in units of 2^-1074
    y = np.array([3 * 5e-324])
    assert ulp_error(y, 5e-324, 0.0, "float64", signed=True).tolist() == [2.0]


def test_ulp_error_overflow_float16():
    # v = 65520 = max + ulp/2 rounds to inf: y = inf -> 0, y = max measured in top ulps (32)
    y = np.array([INF, 65504.0, 65472.0, -INF], dtype=np.float16)
    assert ulp_error(y, 65520.0, 0.0, "float16", signed=True).tolist() == [0.0, -0.5, -1.5, -INF]
    assert ulp_error(y, 65520.0, 0.0, "float16").tolist() == [0.0, 0.5, 1.5, INF]
    # v = 65519 rounds to max: y = inf is replaced by 65536 -> 17/32
    y = np.array([INF, 65504.0], dtype=np.float16)
    assert ulp_error(y, 65519.0, 0.0, "float16", signed=True).tolist() == [17 / 32, -15 / 32]
    # y = -inf for v = 1: -65536 - 1 in units of 2^-10
    assert ulp_error(np.array([-INF], np.float16), 1.0, 0.0, "float16", signed=True)[0] == (
        -65537 * 1024.0
    )
    # v far beyond float16 (and float64: hi = inf)
    y = np.array([INF, 65504.0], dtype=np.float16)
    assert ulp_error(y, INF, 0.0, "float16").tolist() == [0.0, INF]


def test_ulp_error_overflow_float64():
    mx = float(np.finfo(np.float64).max)
    # v = max, y = inf -> y' = 2^1024, one top ulp (computed without overflowing float64)
    assert ulp_error(np.array([INF]), mx, 0.0, "float64", signed=True)[0] == 1.0
    assert ulp_error(np.array([-INF]), -mx, 0.0, "float64", signed=True)[0] == -1.0
    # v = max + ulp/4 (hi = max, lo = 2^969) rounds to max; y = inf -> 3/4
    assert ulp_error(np.array([INF]), mx, 2.0**969, "float64")[0] == 0.75
    # 2^1024 - 1 over 2^-52 exceeds float64: saturates to inf (documented)
    assert ulp_error(np.array([INF]), 1.0, 0.0, "float64")[0] == INF
    # y = max against v = -max: y - hi overflows float64, yet the error 2 max / 2^971 is finite
    assert ulp_error(np.array([mx]), -mx, 0.0, "float64", signed=True)[0] == 2.0**54 - 2


@pytest.mark.parametrize("name", FMT_NAMES)
def test_ulp_error_nonfinite_rules(name):
    dt = FORMATS[name].dtype
    y = np.array([NAN, INF, -INF, NAN, 1.0, INF, -INF], dtype=dt)
    hi = np.array([NAN, INF, -INF, 1.0, NAN, -INF, INF])
    lo = np.zeros_like(hi)
    assert ulp_error(y, hi, lo, name).tolist() == [0.0, 0.0, 0.0, INF, INF, INF, INF]
    s = ulp_error(y, hi, lo, name, signed=True)
    assert s[:3].tolist() == [0.0, 0.0, 0.0]
    assert math.isnan(s[3]) and math.isnan(s[4])
    assert s[5:].tolist() == [INF, -INF]
    assert nonfinite_mismatch(y, hi, lo, name).tolist() == [False] * 3 + [True] * 4


def test_ulp_error_default_format_and_broadcast():
    y = np.array([1.0, 1.0 + 2.0**-7], dtype=ml_dtypes.bfloat16)
    assert ulp_error(y, 1.0, 0.0).tolist() == [0.0, 1.0]


# ---------------------------------------------------------------- bits / abs / rel


def test_bits_error():
    assert bits_error(np.array([0.0, 1.0, -3.0, 0.5, INF])).tolist() == [
        0.0,
        1.0,
        2.0,
        math.log2(1.5),
        INF,
    ]


def test_abs_rel_error():
    y = np.array([1.5, 0.0, 0.0, 2.0, INF, NAN, INF, 1.0], dtype=np.float32)
    # v[0] = 1 + 2^-30 + 2^-60 (hi, lo a valid double-double)
    hi = np.array([1.0 + 2.0**-30, 0.0, -0.0, 0.0, INF, NAN, 1.0, NAN])
    lo = np.array([2.0**-60, 0, 0, 0, 0, 0, 0, 0])
    a = abs_error(y, hi, lo)
    assert a.tolist() == [0.5 - 2.0**-30 - 2.0**-60, 0.0, 0.0, 2.0, 0.0, 0.0, INF, INF]
    r = rel_error(y, hi, lo)
    want = (F(1, 2) - P2(-30) - P2(-60)) / (1 + P2(-30) + P2(-60))
    assert r[0] == pytest.approx(float(want), rel=1e-15)
    assert r[1:].tolist() == [0.0, 0.0, INF, 0.0, 0.0, INF, INF]
    # with a format, an overflowed reference is matched by y = inf
    y16 = np.array([INF, 65504.0], dtype=np.float16)
    assert abs_error(y16, 70000.0, 0.0, "float16").tolist() == [0.0, 70000.0 - 65504.0]
    assert abs_error(y16, 70000.0, 0.0).tolist() == [INF, 70000.0 - 65504.0]


# ---------------------------------------------------------------- normwise


def test_normwise_rel_error():
    assert normwise_rel_error(np.array([3.0, 4.5]), np.array([3.0, 4.0]), np.zeros(2)) == (
        pytest.approx(0.1, rel=1e-15)
    )
    # huge: y - v would overflow without scaling
    big = 1e308
    r = normwise_rel_error(np.array([big, -big]), np.array([big, big]), np.zeros(2))
    assert r == pytest.approx(math.sqrt(2), rel=1e-15)
    # tiny (float64 subnormals): 3, 4 vs 3, 4.5 in units of 2^-1071
    t = 2.0**-1071
    r = normwise_rel_error(np.array([3 * t, 4.5 * t]), np.array([3 * t, 4 * t]), np.zeros(2))
    assert r == pytest.approx(0.1, rel=1e-15)
    # lo matters
    r = normwise_rel_error(np.array([1.0]), np.array([1.0]), np.array([2.0**-60]))
    assert r == pytest.approx(2.0**-60, rel=1e-15)
    # same non-finite pattern: ignored; different: inf
    hi = np.array([3.0, INF, 4.0, NAN])
    y = np.array([3.0, INF, 4.0, NAN])
    assert normwise_rel_error(y, hi, np.zeros(4)) == 0.0
    assert normwise_rel_error(np.array([3.0, 1.0, 4.0, NAN]), hi, np.zeros(4)) == INF
    assert normwise_rel_error(np.array([3.0, -INF, 4.0, NAN]), hi, np.zeros(4)) == INF
    # 0/0 and x/0
    assert normwise_rel_error(np.zeros(3), np.zeros(3), np.zeros(3)) == 0.0
    assert normwise_rel_error(np.array([0.0, 1e-300]), np.zeros(2), np.zeros(2)) == INF
    assert normwise_rel_error(np.array([]), np.array([]), np.array([])) == 0.0
    # with a format: y = inf matches an overflowed float16 reference and is left out
    y16 = np.array([INF, 3.0], dtype=np.float16)
    assert normwise_rel_error(y16, np.array([1e6, 3.0]), np.zeros(2), "float16") == 0.0


# ---------------------------------------------------------------- summarize / compare


def test_summarize():
    s = summarize(np.array([0.0, 0.5, 1.0, 3.0, -2.0]))
    assert s["count"] == 5 and s["count_nonfinite"] == 0
    assert s["max"] == 3.0 and s["median"] == 1.0 and s["mean"] == 1.3
    assert s["p99"] == pytest.approx(2.0 + 0.96 * 1.0)
    edges, counts = s["hist"]["edges"], s["hist"]["counts"]
    assert edges == list(HIST_EDGES) and len(counts) == len(edges) - 1
    assert edges[0] == 0.0 and edges[1] == 2.0**-10 and edges[-2] == 2.0**40 and edges[-1] == INF
    assert sum(counts) == 5
    assert counts[0] == 1  # 0
    assert counts[edges.index(0.25)] == 1  # 0.5 in [1/4, 1)
    assert counts[edges.index(1.0)] == 3  # 1, 2, 3 in [1, 4)
    json.dumps(s)  # plain Python types throughout


def test_summarize_nonfinite_and_empty():
    s = summarize(np.array([1.0, INF, NAN, 2.0**50]))
    assert s["count_nonfinite"] == 2 and s["max"] == INF and s["mean"] == INF
    assert s["median"] == INF  # between 2^50 and inf
    assert s["hist"]["counts"][-1] == 3
    s = summarize(np.array([INF, INF]))
    assert s["median"] == INF and s["p99"] == INF  # not NaN from inf - inf
    e = summarize(np.array([]))
    assert e["count"] == 0 and e["max"] is None and e["median"] is None and e["p99"] is None
    assert sum(e["hist"]["counts"]) == 0


def test_compare():
    # float16, v = 1 + ulp/4 at every position; y: RN, one up, two up, NaN
    u = 2.0**-10
    hi = np.full(4, 1.0 + u / 4)
    lo = np.zeros(4)
    y = np.array([1.0, 1.0 + u, 1.0 + 2 * u, NAN], dtype=np.float16)
    c = compare(y, hi, lo)
    assert c["count"] == 4
    assert c["ulp_max"] == INF and c["nonfinite_mismatch"] == 1
    assert math.isnan(c["ulp_signed_max"])
    assert c["normwise"] == INF
    c = compare(y[:3], hi[:3], lo[:3], "float16")
    assert c["ulp_max"] == 1.75 and c["ulp_median"] == 0.75 and c["ulp_signed_max"] == 1.75
    assert c["ulp_mean"] == pytest.approx((0.25 + 0.75 + 1.75) / 3)
    assert c["bits_max"] == pytest.approx(math.log2(2.75))
    assert c["abs_max"] == pytest.approx(1.75 * u, rel=1e-15)
    assert c["rel_max"] == pytest.approx(1.75 * u / (1 + u / 4), rel=1e-15)
    assert c["nonfinite_mismatch"] == 0 and 0 < c["normwise"] < 2 * u
    c = compare(np.array([1.0, 1.0 - u], np.float16), hi[:2], lo[:2])
    assert c["ulp_signed_max"] == -1.25  # the largest magnitude keeps its sign
    json.dumps(c)
    e = compare(np.array([], np.float32), np.array([]), np.array([]))
    assert e["ulp_max"] is None and e["ulp_signed_max"] is None and e["abs_max"] is None


def test_shapes_scalars_and_broadcasting():
    assert ulp_error(np.float32(1.0), 1.0, 0.0).shape == ()
    assert round_to_format(1.0, 0.0, "bfloat16").shape == ()
    assert ulp(np.float16(65504), "float16") == 32.0
    assert ulp_error(np.ones((2, 3), np.float32), np.ones(3), 0.0).shape == (2, 3)
    assert rel_error(np.float32(1.0), np.array([1.0, 0.5]), 0.0).tolist() == [0.0, 1.0]
    assert bool(nonfinite_mismatch(np.float16(1.0), INF, 0.0))
    assert normwise_rel_error(1.0, 2.0, 0.0) == 0.5
