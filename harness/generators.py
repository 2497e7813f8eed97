"""The generators of scenario logits, one per ``kind``, and the common step that turns their
rows into a :class:`~harness.problem.Problem` (targets, ignored samples, class weights).

:mod:`harness.scenarios` names a generator by its ``kind`` and passes it a scenario's
parameters and seed. Logits are drawn in float64 with ``numpy.random.default_rng(seed)`` and
rounded once to the dtype (``bits`` draws the dtype's bit patterns directly; ``llm`` draws
float32 in row blocks so that 1e9 logits never exist in float64); nothing on the way calls a
vectorised transcendental function, whose last bit may differ between CPUs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, localcontext

import numpy as np

from harness.formats import FORMATS, Format
from harness.problem import Problem

#: Parameters every kind accepts; they shape the problem and set the cross_entropy options.
COMMON_PARAMS = frozenset(
    {
        "shape",  # logits shape: [C], [N, C] or [N, C, d1, ...]
        "reduction",  # "mean" | "sum" | "none"
        "label_smoothing",
        "ignore_index",
        "ignore_fraction",  # exactly round(fraction * samples) targets set to ignore_index
        "weight",  # None | "random" (uniform in [0.5, 2)) | "zeros" (random, a quarter zero)
        "target",  # "index" | "prob" (normalised, peaked) | "prob-raw" | "prob-onehot"
    }
)
TARGET_MODES = ("index", "prob", "prob-raw", "prob-onehot")
WEIGHT_MODES = ("random", "zeros")

# ----------------------------------------------------------------------------------------------
# Per-dtype symbolic values: "max", "-max/2", "max/4096", "tiny", "min_subnormal*3", ...

_SYMBOL = re.compile(
    r"^([+-]?)(max|tiny|min_subnormal|exp_overflow)(?:([*/])([0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?))?$"
)


def resolve(value, fmt: Format):
    """A parameter's value for ``fmt``: numbers pass through, symbols become the dtype's constant."""
    if isinstance(value, str):
        m = _SYMBOL.match(value)
        if not m:
            raise ValueError(f"unknown symbolic value {value!r}")
        sign, sym, op, num = m.groups()
        out = float(getattr(fmt, sym))
        if op == "*":
            out *= float(num)
        elif op == "/":
            out /= float(num)
        return -out if sign == "-" else out
    if isinstance(value, (list, tuple)):
        return [resolve(v, fmt) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Generators. Each works in "row space": it returns logits as an (M, C) array (float64, or the
# dtype itself) and the (M,) class-index targets, or None to let the common step draw them.

Kind = Callable[
    [np.random.Generator, Format, Mapping, int, int], tuple[np.ndarray, np.ndarray | None]
]
KINDS: dict[str, Kind] = {}
KIND_PARAMS: dict[str, frozenset[str]] = {}


def _kind(name: str, *params: str):
    def register(fn: Kind) -> Kind:
        KINDS[name] = fn
        KIND_PARAMS[name] = frozenset(params)
        return fn

    return register


def _per_row(value, m: int) -> np.ndarray | float:
    if isinstance(value, list):
        return np.resize(np.asarray(value, dtype=np.float64), m)[:, None]
    return float(value)


def _others_index(rng, t, c):
    """One random column per row, different from the target."""
    return (t + 1 + rng.integers(0, c - 1, t.shape[0])) % c


@_kind("normal", "loc", "scale")
def _normal(rng, fmt, p, m, c):
    """loc + scale * N(0, 1); loc and scale may be lists, cycled over the rows."""
    loc = _per_row(resolve(p.get("loc", 0.0), fmt), m)
    scale = _per_row(resolve(p.get("scale", 1.0), fmt), m)
    return loc + scale * rng.standard_normal((m, c)), None


@_kind("equal", "value")
def _equal(rng, fmt, p, m, c):
    return np.full((m, c), float(resolve(p.get("value", 0.0), fmt))), None


@_kind("ties", "ties", "value", "scale")
def _ties(rng, fmt, p, m, c):
    """``ties`` equal maxima per row (value ``value``, exact in every dtype), the target on one."""
    k, value = int(p["ties"]), float(p.get("value", 4.0))
    x = np.minimum(float(p.get("scale", 1.0)) * rng.standard_normal((m, c)), value - 0.5)
    t = rng.integers(0, c, m)
    keys = rng.random((m, c))
    keys[np.arange(m), t] = -1.0  # the target sorts first, so it is one of the k maxima
    cols = np.argsort(keys, axis=1, kind="stable")[:, :k]
    np.put_along_axis(x, cols, value, axis=1)
    return x, t


def _exactly(value: float, fmt: Format) -> bool:
    with np.errstate(over="ignore"):
        return float(np.asarray(value, np.float64).astype(fmt.dtype)) == value


@_kind("dominant", "gap", "scale")
def _dominant(rng, fmt, p, m, c):
    """Target logit = max(others) + gap exactly in the dtype (negative gap: target far below).

    The target's value is gap rounded to the dtype, the others' max is that minus gap, which is
    representable for the gaps used (checked), and the others spread below it."""
    gap = float(p["gap"])
    with np.errstate(over="ignore"):
        t_val = float(np.asarray(gap, np.float64).astype(fmt.dtype))
    top = t_val - gap
    if not (_exactly(top, fmt) and t_val - top == gap):
        raise ValueError(f"gap {gap!r} cannot be made exact in {fmt.name}")
    z = float(p.get("scale", 1.0)) * rng.standard_normal((m, c))
    t = rng.integers(0, c, m)
    rows = np.arange(m)
    z[rows, t] = -np.inf
    x = top + (z - z.max(axis=1, keepdims=True))  # the others' argmax is exactly `top`
    x[rows, t] = t_val
    return x, t


def log_max(fmt: Format) -> Decimal:
    """log(max) of ``fmt`` to 40 digits (Decimal arithmetic is the same on every machine)."""
    with localcontext() as ctx:
        ctx.prec = 40
        return Decimal(fmt.max).ln()


def neighbours(value: Decimal, fmt: Format) -> tuple[float, float]:
    """The largest ``fmt`` value below and the smallest above a positive irrational ``value``."""
    uint = np.dtype(f"u{fmt.itemsize}")
    c = np.array([float(value)], np.float64).astype(fmt.dtype)
    bits = c.view(uint)
    if Decimal(float(c[0])) < value:
        below, above = c, (bits + 1).view(fmt.dtype)
    else:
        below, above = (bits - 1).view(fmt.dtype), c
    return float(below[0]), float(above[0])


@_kind("threshold", "fmt", "side", "spread")
def _threshold(rng, fmt, p, m, c):
    """Row max = the dtype's neighbour below/above log(max of ``fmt``), others up to spread below."""
    below, above = neighbours(log_max(FORMATS[p["fmt"]]), fmt)
    top = {"below": below, "above": above}[p["side"]]
    x = top - float(p.get("spread", 30.0)) * rng.random((m, c))
    x[np.arange(m), rng.integers(0, c, m)] = top
    return x, None


_WHERE = ("one", "next", "target", "most", "rows", "every-third", "all")


@_kind("special", "fill", "where", "fraction", "every", "scale")
def _special(rng, fmt, p, m, c):
    """N(0, scale) logits with ``fill`` (inf, nan, "max", ...) placed per ``where``."""
    fill = float(resolve(p["fill"], fmt))
    x = float(p.get("scale", 1.0)) * rng.standard_normal((m, c))
    t = rng.integers(0, c, m)
    rows = np.arange(m)
    where = p["where"]
    if where == "one":
        x[rows, _others_index(rng, t, c)] = fill
    elif where == "next":
        x[rows, (t + 1) % c] = fill
    elif where == "target":
        x[rows, t] = fill
    elif where == "most":
        mask = rng.random((m, c)) < float(p.get("fraction", 0.9))
        mask[rows, t] = False
        x[mask] = fill
    elif where == "rows":
        x[rows % int(p.get("every", 4)) == 0] = fill
    elif where == "every-third":
        x[:, ::3] = fill
    elif where == "all":
        x[:] = fill
    else:
        raise ValueError(f"where: unknown placement {where!r}; use one of {', '.join(_WHERE)}")
    return x, t


@_kind("subnormal")
def _subnormal(rng, fmt, p, m, c):
    """Every logit a random subnormal of the dtype (k * min_subnormal, random sign)."""
    k = rng.integers(1, 2 ** (fmt.precision - 1), (m, c)).astype(np.float64)
    sign = np.where(rng.integers(0, 2, (m, c)) == 1, -1.0, 1.0)
    return sign * k * fmt.min_subnormal, None


@_kind("bits", "bound")
def _bits(rng, fmt, p, m, c):
    """Uniform over the dtype's finite bit patterns (with |x| <= bound if given), both signs."""
    width = 8 * fmt.itemsize
    uint = np.dtype(f"u{fmt.itemsize}")
    bound = min(float(resolve(p.get("bound", "max"), fmt)), fmt.max)
    b = np.array([bound], np.float64).astype(fmt.dtype)
    if float(b[0]) > bound:
        b = (b.view(uint) - 1).view(fmt.dtype)
    top = int(b.view(uint)[0])
    mag = rng.integers(0, top, (m, c), dtype=uint, endpoint=True)
    sign = rng.integers(0, 2, (m, c), dtype=uint) << uint.type(width - 1)
    return (mag | sign).view(fmt.dtype), None


#: Logits per block when the llm generator draws (16 MB of float32).
_LLM_BLOCK = 1 << 22


@_kind("llm", "scale", "spikes", "lift", "top_target")
def _llm(rng, fmt, p, m, c):
    """A trained language model's next-token logits: a N(0, scale²) body over the vocabulary and
    ``spikes`` tokens per row (random columns, a repeat overwrites) at lift[0]..lift[1] above it,
    which take most of the probability (C e^{scale²/2} against e^{lift}); the target is one of
    the spikes with probability ``top_target``, else any token (the long tail: losses of ~20).

    Memory-frugal: the body is drawn in float32 blocks of rows straight into the dtype's array
    (no float64 array of the problem's size exists); it has its own stream, so the blocking does
    not change the values."""
    scale = float(p.get("scale", 2.0))
    k = int(p.get("spikes", 5))
    lift = p.get("lift", (10.0, 20.0))
    top = float(p.get("top_target", 0.75))
    body = np.random.default_rng(int(rng.integers(0, 2**63)))
    x = np.empty((m, c), fmt.dtype)
    step = max(1, _LLM_BLOCK // max(c, 1))
    for a in range(0, m, step):
        blk = body.standard_normal((min(m, a + step) - a, c), dtype=np.float32)
        blk *= np.float32(scale)
        x[a:a + step] = blk  # float32 -> dtype: one rounding (numpy, ml_dtypes)
    rows = np.arange(m)
    cols = rng.integers(0, c, (m, k))
    peaks = rng.uniform(float(lift[0]), float(lift[1]), (m, k)).astype(np.float32)
    x[rows[:, None], cols] = peaks
    pick = cols[rows, rng.integers(0, k, m)]
    t = np.where(rng.random(m) < top, pick, rng.integers(0, c, m))
    return x, t


# ----------------------------------------------------------------------------------------------
# From row space to a Problem


def _rows_of(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0] * math.prod(shape[2:]), shape[1]


def _layout(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(M, C) or (M,) row-space array -> the logits' (or targets') layout."""
    per_class = rows.ndim == 2
    if len(shape) == 1:
        return rows[0]
    if len(shape) == 2:
        return rows
    lead = (shape[0], *shape[2:])
    if not per_class:
        return rows.reshape(lead)
    return np.moveaxis(rows.reshape(*lead, shape[1]), -1, 1)


def _row_sums(a: np.ndarray) -> np.ndarray:
    # math.fsum is correctly rounded, so the sums do not depend on the CPU or NumPy's loops
    return np.array([math.fsum(r) for r in a.tolist()], dtype=np.float64)


def generate(kind: str, p: Mapping, seed: int, fmt: Format) -> Problem:
    """The problem that generator ``kind`` draws from ``seed`` for parameters ``p`` in ``fmt``;
    the common step after it draws the targets, the ignored samples and the class weights."""
    shape = tuple(int(n) for n in p["shape"])
    m, c = _rows_of(shape)
    rng = np.random.default_rng(seed)
    x, t = KINDS[kind](rng, fmt, p, m, c)
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(x).astype(fmt.dtype, copy=False)  # no copy when the kind drew the dtype
    if t is None:
        t = rng.integers(0, c, m)
    ignore_index = int(p.get("ignore_index", -100))
    fraction = float(p.get("ignore_fraction", 0.0))
    if fraction:
        t = t.copy()
        t[rng.permutation(m)[: round(fraction * m)]] = ignore_index
    mode = p.get("target", "index")
    if mode == "index":
        target = t.astype(np.int64)
    elif mode == "prob":
        u = rng.random((m, c))
        u = u * u * u * u  # peaked, like a softmax of spread-out logits
        target = u / _row_sums(u)[:, None]
    elif mode == "prob-raw":
        target = 2.0 * rng.random((m, c))  # positive, rows do not sum to 1
    elif mode == "prob-onehot":
        target = np.zeros((m, c))
        target[np.arange(m), t] = 1.0
    else:
        raise ValueError(f"target: unknown mode {mode!r}; use one of {', '.join(TARGET_MODES)}")
    weight = None
    if p.get("weight") is not None:
        weight = 0.5 + 1.5 * rng.random(c)
        if p["weight"] == "zeros":
            weight[rng.permutation(c)[: max(1, c // 4)]] = 0.0
    return Problem(
        logits=_layout(x, shape),
        target=_layout(target, shape),
        weight=weight,
        ignore_index=ignore_index,
        reduction=p.get("reduction", "mean"),
        label_smoothing=float(p.get("label_smoothing", 0.0)),
    )


__all__ = [
    "COMMON_PARAMS",
    "KINDS",
    "KIND_PARAMS",
    "TARGET_MODES",
    "WEIGHT_MODES",
    "generate",
    "log_max",
    "neighbours",
    "resolve",
]
