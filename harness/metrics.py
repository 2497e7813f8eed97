"""Error metrics of a result ``y`` against an exact reference ``v`` given as a double-double.

The reference arrives as two float64 arrays ``hi = RN64(v)`` and ``lo = RN64(v - hi)``
(``hi`` is inf beyond float64 range and NaN for NaN; then ``lo`` is 0). ``y`` is an array in
one of the formats of :mod:`harness.formats`. Definitions:

* ``round_to_format``: RN_fmt(v), round-to-nearest-even in the format, subnormals included;
  |v| >= max + ulp_top/2 rounds to inf (IEEE 754 overflow threshold; the tie goes to "even" inf).
* ``ulp(x) = 2**(max(e, emin) - p + 1)`` for x in [2**e, 2**(e+1)); so ulp(0) and every
  subnormal ulp is ``2**(emin - p + 1)``; inf, and finite values beyond the format, get the top
  binade's ulp ``2**(emax - p + 1)``.
* ``ulp_error`` (Zimmermann, "Accuracy of mathematical functions"): (y - v) / ulp(RN_fmt(v)),
  measured against the unrounded v, so a correctly rounded y has |error| <= 0.5.
  Non-finite rules: y and RN_fmt(v) the same inf, or both NaN -> 0. RN_fmt(v) = inf from a finite
  v and y finite -> (y - v) / ulp_top. y = ±inf while RN_fmt(v) is finite -> y is replaced by
  ±(max + ulp_top) = ±2**(emax+1), the next number past max, a finite error. Any other mismatch
  (NaN against a number either way, inf of the other sign) -> +inf; the signed variant gives
  NaN when either side is NaN and inf with the sign of y for opposite infinities.
  An error whose value exceeds float64's range (only possible for float64 far from the
  reference, e.g. y = inf against v = 1) saturates to ±inf.
* ``bits_error`` (Herbie): log2(1 + |ulps|).
* ``abs_error`` |y - v|, ``rel_error`` |y - v| / |v| (inf when v = 0 != y, 0 when both are 0);
  non-finite positions: 0 when y matches the reference's pattern (RN_fmt(v) when a format is
  given, else hi), inf otherwise.
* ``normwise_rel_error`` ||y - v||_2 / ||v||_2 over the finite entries, inf when the non-finite
  patterns differ, 0/0 -> 0.

The cells compute the mean and the normwise error from exact partial sums instead
(:mod:`harness.segment_sums`), so that they do not depend on how the rows are split into blocks.

``summarize`` and ``compare`` return plain-Python dicts; infinities stay ``float('inf')`` and NaN
stays ``float('nan')``: the JSON writer is responsible for encoding them.
"""

from __future__ import annotations

import math

import numpy as np

from harness.formats import Format, format_of

__all__ = [
    "HIST_EDGES",
    "abs_error",
    "bits_error",
    "compare",
    "nonfinite_mismatch",
    "normwise_rel_error",
    "rel_error",
    "round_to_format",
    "summarize",
    "ulp",
    "ulp_error",
]

# Histogram edges in ULPs: [0, 2^-10, 2^-8, ..., 2^40, inf]; bin i is [edges[i], edges[i+1]),
# the last bin is [2^40, inf] and also receives NaN.
HIST_EDGES: tuple[float, ...] = (0.0, *(2.0**k for k in range(-10, 41, 2)), math.inf)


def _f64(x) -> np.ndarray:
    # Every supported format converts to float64 exactly (bfloat16 included). At least 1-d so
    # the in-place work below never meets NumPy scalars; public functions restore the shape.
    return np.atleast_1d(np.asarray(x).astype(np.float64, copy=False))


def _shape(*xs) -> tuple[int, ...]:
    return np.broadcast_shapes(*(np.shape(x) for x in xs))


def _inputs(y, hi, lo):
    yf, hi, lo = np.broadcast_arrays(_f64(y), _f64(hi), _f64(lo))
    return yf, hi, lo


def _fmt(fmt, y) -> Format:
    return format_of(fmt if fmt is not None else np.asarray(y).dtype)


def _ulp_exponent(x: np.ndarray, fmt: Format) -> np.ndarray:
    """max(floor(log2|x|), emin) - p + 1 for finite x (zero included; junk for inf/NaN)."""
    # The biased exponent field: floor(log2|x|) + 1023 for normal x; 0 for zero and float64
    # subnormals, whose -1023 every format's emin (>= -1022) then replaces. Integer operations:
    # frexp has no SIMD loop and is ten times slower.
    e = (x.view(np.uint64) >> np.uint64(52)).astype(np.int64)
    e &= 0x7FF
    e -= 1023
    np.maximum(e, fmt.emin, out=e)
    e -= fmt.precision - 1
    return e


def _pow2(q: np.ndarray) -> np.ndarray:
    """2.0**q for an integer array q, exactly: built from its bits where 2**q is a normal
    float64 (ldexp has no SIMD loop), else by ldexp."""
    if q.size == 0 or (int(q.min()) >= -1022 and int(q.max()) <= 1023):
        return ((q + 1023).astype(np.uint64) << np.uint64(52)).view(np.float64)
    return np.ldexp(1.0, q)


def round_to_format(hi, lo, fmt) -> np.ndarray:
    """RN_fmt(hi + lo), round to nearest even, as an array of fmt's dtype.

    Exact scaling, no double rounding: with q the ulp exponent of hi in fmt, n = hi * 2**-q is an
    exact float64; n is rounded to an integer, a tie (n exactly a half-integer, i.e. hi on a fmt
    midpoint) being broken by lo's sign and only for lo == 0 to even. RN64 is monotone and fmt
    midpoints are float64 numbers, so when hi is not a midpoint v lies on the same side as hi.
    """
    fmt = format_of(fmt)
    shape = _shape(hi, lo)
    hi, lo = np.broadcast_arrays(_f64(hi), _f64(lo))
    if fmt.precision == 53 and fmt.emax == 1023:
        return np.array(hi, dtype=np.float64).reshape(shape)  # hi is RN64(v) by contract
    finite = np.isfinite(hi)
    all_finite = bool(finite.all())
    h = hi if all_finite else np.where(finite, hi, 0.0)
    q = _ulp_exponent(h, fmt)
    # n = h * 2**-q is exact (|n| < 2**p, or a subnormal scaled up), and 2**-q is a normal
    # float64 for every format but float64 (returned above): the same as ldexp(h, -q)
    n = h * _pow2(-q)
    r = np.rint(n)  # ties to even
    # ties with lo != 0: lo's sign decides (copysign keeps -0 for e.g. -0.5 + tiny)
    fl = np.floor(n)
    n -= fl
    tie = np.flatnonzero((n == 0.5) & (lo != 0))
    if tie.size:
        rr, fr, lr = r.reshape(-1), fl.reshape(-1)[tie], lo.reshape(-1)[tie]
        rr[tie] = np.copysign(fr + (lr > 0), fr + 0.5)
    out = r * _pow2(q)  # exact, or inf exactly where ldexp(r, q) overflows
    # Only a carry into 2**(emax+1) or hi beyond emax can exceed max: round to inf (IEEE).
    over = np.abs(out) > fmt.max
    if over.any():
        out[over] = np.copysign(np.inf, out[over])
    if not all_finite:
        out[~finite] = hi[~finite]
    # out is exactly representable in fmt, so this cast (even ml_dtypes' via float32) is exact.
    return out.astype(fmt.dtype).reshape(shape)


def ulp(x, fmt) -> np.ndarray:
    """ULP of x in fmt as float64: 2**(clip(e, emin, emax) - p + 1); top-binade ulp for inf."""
    fmt = format_of(fmt)
    shape = np.shape(x)
    x = _f64(x)
    finite = np.isfinite(x)
    all_finite = bool(finite.all())
    q = _ulp_exponent(x if all_finite else np.where(finite, x, 0.0), fmt)
    top = fmt.emax - fmt.precision + 1
    np.minimum(q, top, out=q)  # finite x beyond the format: it would round to inf
    u = _pow2(q)
    if not all_finite:
        u[np.isinf(x)] = 2.0**top
        u[np.isnan(x)] = np.nan
    return u.reshape(shape)


def _special(yf: np.ndarray, rf: np.ndarray) -> np.ndarray:
    """Flat indices where y or the reference is inf or NaN: the only places needing rules."""
    return np.flatnonzero(~(np.isfinite(yf) & np.isfinite(rf)))


def _classify(ys: np.ndarray, rs: np.ndarray):
    """(same, mismatch) among special positions: same inf or both NaN; NaN against anything
    else or opposite infinities. (y = inf with a finite reference is neither: Zimmermann.)"""
    y_nan, r_nan = np.isnan(ys), np.isnan(rs)
    same = (y_nan & r_nan) | (np.isinf(ys) & (ys == rs))
    mismatch = (y_nan != r_nan) | (np.isinf(ys) & np.isinf(rs) & (ys != rs))
    return same, mismatch


def _mismatch_mask(yf: np.ndarray, rf: np.ndarray) -> np.ndarray:
    """Positions whose inf/NaN pattern differs (flat boolean)."""
    out = np.zeros(yf.size, dtype=bool)
    idx = _special(yf, rf)
    if idx.size:
        ys, rs = yf.reshape(-1)[idx], rf.reshape(-1)[idx]
        same = (np.isnan(ys) & np.isnan(rs)) | (np.isinf(ys) & (ys == rs))
        out[idx] = ~same
    return out


def _reference(hi, lo, fmt) -> np.ndarray:
    if fmt is None:
        return hi
    return round_to_format(hi, lo, fmt).astype(np.float64)


def nonfinite_mismatch(y, hi, lo, fmt=None) -> np.ndarray:
    """Boolean mask where the inf/NaN pattern of y differs from RN_fmt(v) (or from hi)."""
    shape = _shape(y, hi, lo)
    yf, hi, lo = _inputs(y, hi, lo)
    return _mismatch_mask(yf, _reference(hi, lo, fmt)).reshape(shape)


def _ulp_error(yf, hi, lo, rf, fmt: Format, signed: bool) -> np.ndarray:
    u = ulp(rf, fmt)  # inf -> top-binade ulp, which is what an overflowed v is measured in
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # y - hi is exact when the two are close (Sterbenz); far apart the error is huge anyway.
        err = yf - hi
        err -= lo
        err /= u
        err = err.reshape(-1)
        # Fix-ups: non-finite on either side, or y - hi overflowing (finite y, hi of opposite
        # signs near float64's max; halving is exact there).
        fix = ~np.isfinite(err)
        fix |= ~np.isfinite(rf.reshape(-1))
        idx = np.flatnonzero(fix)
        if idx.size:
            ys, hs, ls = yf.reshape(-1)[idx], hi.reshape(-1)[idx], lo.reshape(-1)[idx]
            rs, us = rf.reshape(-1)[idx], u.reshape(-1)[idx]
            same, mismatch = _classify(ys, rs)
            # y = ±inf, RN(v) finite: Zimmermann's y -> ±(max + ulp_top) = ±2**(emax+1), used
            # halved so it fits float64 when fmt is float64 itself.
            y_inf = np.isinf(ys) & np.isfinite(rs)
            yh = np.where(y_inf, np.copysign(2.0**fmt.emax, ys), 0.5 * ys)
            e = (((yh - 0.5 * hs) - 0.5 * ls) / us) * 2.0
            e[same] = 0.0
            if signed:
                bad = np.where(np.isnan(ys) | np.isnan(rs), np.nan, np.copysign(np.inf, ys))
                e[mismatch] = bad[mismatch]
            else:
                e[mismatch] = np.inf
            err[idx] = e
    if not signed:
        np.abs(err, out=err)
    return err.reshape(yf.shape)


def ulp_error(y, hi, lo, fmt=None, signed: bool = False) -> np.ndarray:
    """Zimmermann error (y - v) / ulp(RN_fmt(v)) as float64; |.| unless ``signed``.

    ``fmt`` defaults to y's format. See the module docstring for the non-finite rules.
    """
    fmt = _fmt(fmt, y)
    shape = _shape(y, hi, lo)
    yf, hi, lo = _inputs(y, hi, lo)
    return _ulp_error(yf, hi, lo, _reference(hi, lo, fmt), fmt, signed).reshape(shape)


def bits_error(ulps) -> np.ndarray:
    """Herbie's bits of error: log2(1 + |ulps|)."""
    return np.log2(1.0 + np.abs(_f64(ulps))).reshape(np.shape(ulps))


def _abs_rel(yf, hi, lo, rf, rel: bool) -> np.ndarray:
    """|y - v| or |y - v| / |v|; at inf/NaN positions 0 when y matches rf's pattern, else inf."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = yf - hi
        d -= lo
        d = np.abs(d, out=d).reshape(-1)
        if rel:
            av = np.abs(hi + lo).reshape(-1)  # hi == 0 only when v == 0
            zero = np.flatnonzero(av == 0)
            dz = d[zero] == 0  # before the division turns 0/0 into NaN
            d /= av
            d[zero] = np.where(dz, 0.0, np.inf)  # NaN d (from y NaN) is handled below
    idx = np.flatnonzero(~(np.isfinite(yf) & np.isfinite(rf) & np.isfinite(hi)).reshape(-1))
    if idx.size:
        ys, rs = yf.reshape(-1)[idx], rf.reshape(-1)[idx]
        same = (np.isnan(ys) & np.isnan(rs)) | (np.isinf(ys) & (ys == rs))
        fin = np.isfinite(ys) & np.isfinite(hi.reshape(-1)[idx])  # v finite, RN_fmt(v) = inf
        d[idx] = np.where(same, 0.0, np.where(fin, d[idx], np.inf))
    return d.reshape(yf.shape)


def abs_error(y, hi, lo, fmt=None) -> np.ndarray:
    """|y - v|; non-finite positions 0 when matching the reference pattern, else inf."""
    shape = _shape(y, hi, lo)
    yf, hi, lo = _inputs(y, hi, lo)
    rf = hi if fmt is None else _reference(hi, lo, format_of(fmt))
    return _abs_rel(yf, hi, lo, rf, rel=False).reshape(shape)


def rel_error(y, hi, lo, fmt=None) -> np.ndarray:
    """|y - v| / |v|; inf when v == 0 != y, 0 when both are 0; non-finite as abs_error."""
    shape = _shape(y, hi, lo)
    yf, hi, lo = _inputs(y, hi, lo)
    rf = hi if fmt is None else _reference(hi, lo, format_of(fmt))
    return _abs_rel(yf, hi, lo, rf, rel=True).reshape(shape)


def _norm2(x: np.ndarray) -> float:
    """||x||_2 without overflow or harmful underflow: scale by a power of two near max|x|."""
    if x.size == 0:
        return 0.0
    m = float(np.max(np.abs(x)))
    if m == 0.0:
        return 0.0
    k = int(np.frexp(m)[1])
    xs = np.ldexp(x, -k)  # now max|xs| in [0.5, 1): no overflow in the sum of squares
    return math.ldexp(math.sqrt(float(np.dot(xs, xs))), k)


def _normwise(yf, hi, lo, rf) -> float:
    if _mismatch_mask(yf, rf).any():
        return math.inf
    keep = (np.isfinite(yf) & np.isfinite(hi)).reshape(-1)
    all_kept = bool(keep.all())
    yk, hk, lk = (a.reshape(-1) if all_kept else a.reshape(-1)[keep] for a in (yf, hi, lo))
    if yk.size == 0:
        return 0.0
    m = float(max(np.max(np.abs(yk)), np.max(np.abs(hk))))
    if m == 0.0:
        return 0.0
    # Scale by a power of two first so y - v cannot overflow (y = max, v = -max).
    k = int(np.frexp(m)[1])
    hs, ls = np.ldexp(hk, -k), np.ldexp(lk, -k)
    d = np.ldexp(yk, -k)
    d -= hs
    d -= ls
    num = _norm2(d)
    hs += ls
    den = _norm2(hs)
    if num == 0.0:
        return 0.0
    if den == 0.0:
        return math.inf
    return num / den


def normwise_rel_error(y, hi, lo, fmt=None) -> float:
    """||y - v||_2 / ||v||_2 over the entries finite in both; inf if the non-finite patterns
    of y and the reference (RN_fmt(v) when fmt is given, else hi) differ; 0/0 -> 0."""
    yf, hi, lo = _inputs(y, hi, lo)
    rf = hi if fmt is None else _reference(hi, lo, format_of(fmt))
    return _normwise(yf, hi, lo, rf)


def _quantile(x: np.ndarray, qs: list[float]) -> list[float]:
    """Linear-interpolated quantiles that are inf (not NaN) when both neighbours are inf."""
    n = x.size
    pos = [q * (n - 1) for q in qs]
    ks = sorted({k for p in pos for k in (math.floor(p), min(math.floor(p) + 1, n - 1))})
    part = np.partition(x, ks)
    out = []
    for p in pos:
        i = math.floor(p)
        j = min(i + 1, n - 1)
        t = p - i
        a, b = float(part[i]), float(part[j])
        out.append(a if (t == 0.0 or a == b) else a + (b - a) * t)
    return out


def summarize(errors) -> dict:
    """Summary of error magnitudes (|errors|; NaN counts as inf) as a JSON-ready dict.

    Keys: count, count_nonfinite, max, median, p99, mean (None when empty; inf stays
    float('inf')), and hist = {"edges": HIST_EDGES as a list, "counts": per-bin counts}.
    """
    e = np.abs(_f64(errors)).ravel()
    nan = np.isnan(e)
    if nan.any():
        e[nan] = np.inf
    nbins = len(HIST_EDGES) - 1
    out: dict = {
        "count": int(e.size),
        "count_nonfinite": int(np.count_nonzero(np.isinf(e))),
        "max": None,
        "median": None,
        "p99": None,
        "mean": None,
        "hist": {"edges": [float(v) for v in HIST_EDGES], "counts": [0] * nbins},
    }
    if e.size == 0:
        return out
    idx = np.searchsorted(np.asarray(HIST_EDGES), e, side="right")
    idx -= 1
    np.clip(idx, 0, nbins - 1, out=idx)  # inf (and NaN) land in the last bin
    out["hist"]["counts"] = [int(c) for c in np.bincount(idx, minlength=nbins)]
    out["max"] = float(np.max(e))
    out["median"], out["p99"] = _quantile(e, [0.5, 0.99])
    with np.errstate(over="ignore", invalid="ignore"):
        out["mean"] = float(np.mean(e))
    return out


def compare(y, hi, lo, fmt: Format | str | None = None) -> dict:
    """Every accuracy number a sweep records, in one call, as a JSON-ready dict.

    Keys: count; ulp_max, ulp_median, ulp_p99, ulp_mean (Zimmermann ulps); ulp_signed_max (the
    signed ulp error of largest magnitude, NaN ranking highest); bits_max (Herbie); abs_max,
    rel_max (non-finite positions judged against RN_fmt(v)); normwise; nonfinite_mismatch
    (count of positions whose inf/NaN pattern differs from RN_fmt(v)). Maxima are None for empty
    input. ``fmt`` defaults to y's format.
    """
    fmt = _fmt(fmt, y)
    yf, hi, lo = _inputs(y, hi, lo)
    rf = _reference(hi, lo, fmt)  # rounded once, shared by every metric
    signed = _ulp_error(yf, hi, lo, rf, fmt, signed=True).reshape(-1)
    # |signed| is the unsigned error except NaN (signed mismatch) where unsigned has inf, which
    # summarize already maps.
    ulps = np.abs(signed)
    s = summarize(ulps)
    signed_max = None
    if signed.size:
        key = np.where(np.isnan(signed), np.inf, ulps)
        signed_max = float(signed[int(np.argmax(key))])

    def _max(a: np.ndarray):
        return float(np.max(a)) if a.size else None

    return {
        "count": s["count"],
        "ulp_max": s["max"],
        "ulp_median": s["median"],
        "ulp_p99": s["p99"],
        "ulp_mean": s["mean"],
        "ulp_signed_max": signed_max,
        "bits_max": None if s["max"] is None else math.log2(1.0 + s["max"]),
        "abs_max": _max(_abs_rel(yf, hi, lo, rf, rel=False)),
        "rel_max": _max(_abs_rel(yf, hi, lo, rf, rel=True)),
        "normwise": _normwise(yf, hi, lo, rf),
        "nonfinite_mismatch": int(np.count_nonzero(_mismatch_mask(yf, rf))),
    }
