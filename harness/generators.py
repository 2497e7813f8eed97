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
        "weight",  # None | "random" | "zeros" | "kept-zero" | "negative" (see WEIGHT_MODES)
        "target",  # "index" | "prob" (normalised, peaked) | "prob-raw" | "prob-zeros" | "prob-onehot"
        "target_dtype",  # class indices as "int64" (default) or "uint8"
        "target_classes",  # "any" (default) | "inexact-16-bit" (see TARGET_CLASSES)
        "poison",  # a value (inf, nan, "max", ...) put at one non-target logit of some rows ...
        "poison_rows",  # ... of every "kept" row or of every "ignored" row
        "memory",  # the layout the implementation receives: see harness.memory_layout
    }
)
TARGET_MODES = ("index", "prob", "prob-raw", "prob-zeros", "prob-onehot")
#: random: uniform in [0.5, 2); zeros: random, a quarter of the classes 0; kept-zero: random, 0
#: for every class a kept index target names (every class with probability targets); negative:
#: random, a third of the classes negated (PyTorch accepts any real weight).
WEIGHT_MODES = ("random", "zeros", "kept-zero", "negative")
TARGET_DTYPES = ("int64", "uint8")
#: Where index targets lie: anywhere, or on classes a 16-bit float cannot hold exactly (odd
#: indices above 2048, float16's last exact integer, when C allows; else above 256, bfloat16's),
#: where an implementation that carries indices in the logits' dtype picks the wrong class.
TARGET_CLASSES = ("any", "inexact-16-bit")
POISON_ROWS = ("kept", "ignored")

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


_CLASS_SYMBOL = re.compile(r"^C([+-][0-9]+)?$")


def resolve_ignore_index(value, classes: int) -> int:
    """``ignore_index`` for a problem with ``classes`` classes: an integer, or "C" / "C-1" /
    "C+k" relative to the class count (a value inside [0, C) or at or beyond C whatever C is)."""
    if isinstance(value, str):
        m = _CLASS_SYMBOL.match(value)
        if not m:
            raise ValueError(
                f"ignore_index: {value!r} is neither an integer nor C, C-k or C+k (k an integer)"
            )
        return classes + int(m.group(1) or 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ignore_index: must be an integer or C, C-k, C+k; got {value!r}")
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


def _per_row(value, m: int, period: int | None = None) -> np.ndarray | float:
    """A scalar, or a list cycled over the rows (``period`` None) or over the rows' positions
    in a K-dim input (row r is position r mod ``period``: rows are (n, d1, ..., dk) in C order)."""
    if isinstance(value, list):
        values = np.asarray(value, dtype=np.float64)
        if period is None:
            return np.resize(values, m)[:, None]
        return values[np.arange(m) % period % values.size][:, None]
    return float(value)


def _positions(p: Mapping) -> int:
    """Positions d1·…·dk of a K-dim input (1 for (C,) and (N, C))."""
    return math.prod(int(n) for n in p["shape"][2:])


def _others_index(rng, t, c):
    """One random column per row, different from the target."""
    return (t + 1 + rng.integers(0, c - 1, t.shape[0])) % c


_VARY = ("rows", "positions")


@_kind("normal", "loc", "scale", "vary")
def _normal(rng, fmt, p, m, c):
    """loc + scale * N(0, 1); loc and scale may be lists, cycled over the rows (``vary`` "rows",
    the default) or over the positions of a K-dim input ("positions": every sample's row at
    position (i, j, ...) has the same range, and neighbouring positions differ)."""
    vary = p.get("vary", "rows")
    if vary not in _VARY:
        raise ValueError(f"vary: unknown value {vary!r}; use one of {', '.join(_VARY)}")
    period = _positions(p) if vary == "positions" else None
    loc = _per_row(resolve(p.get("loc", 0.0), fmt), m, period)
    scale = _per_row(resolve(p.get("scale", 1.0), fmt), m, period)
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


_WHERE = ("one", "next", "target", "most", "rows", "every-third", "all", "tail")


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
        if c > 1:  # with few classes the draw can miss every other class: then take the next
            bare = ~mask.any(axis=1)
            mask[bare, (t[bare] + 1) % c] = True
        x[mask] = fill
    elif where == "rows":
        x[rows % int(p.get("every", 4)) == 0] = fill
    elif where == "every-third":
        x[:, ::3] = fill
    elif where == "all":
        x[:] = fill
    elif where == "tail":  # a padded vocabulary: the last quarter of the classes, never a target
        tail = max(1, c // 4)
        x[:, c - tail :] = fill
        t = rng.integers(0, max(1, c - tail), m)
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


def _inexact_16_bit_classes(c: int) -> np.ndarray:
    """Class indices no 16-bit float holds exactly: the odd ones above 2048 (float16's last
    exact integer run ends there) when C has any, else the odd ones above 256 (bfloat16's)."""
    for last_exact in (2048, 256):
        if c > last_exact + 1:
            return np.arange(last_exact + 1, c, 2)
    raise ValueError(
        f"target_classes: inexact-16-bit needs C > 257 (indices above bfloat16's exact 256), got C = {c}"
    )


def _swap_targets(rng, x: np.ndarray, t: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Move every row's target to a class drawn from ``classes`` by swapping the two logits: the
    row is the same multiset of values (softmax is permutation-equivariant), so whatever the kind
    built around the target (a gap, a mask, a tie) stays around it."""
    rows = np.arange(t.shape[0])
    new = classes[rng.integers(0, classes.size, t.shape[0])]
    old_values, new_values = x[rows, t].copy(), x[rows, new].copy()
    x[rows, t] = new_values
    x[rows, new] = old_values
    return new


def _poison(rng, x, fmt, p, drawn, kept) -> None:
    """``poison`` at one logit other than the drawn target in every kept (or every ignored) row."""
    which = p["poison_rows"]
    if which not in POISON_ROWS:
        raise ValueError(f"poison_rows: unknown value {which!r}; use one of {', '.join(POISON_ROWS)}")
    rows = np.flatnonzero(kept if which == "kept" else ~kept)
    if rows.size == 0:
        raise ValueError(f"poison_rows: there is no {which} row to put {p['poison']!r} in")
    c = x.shape[1]
    if c < 2:
        raise ValueError("poison: needs C >= 2 (a logit other than the target)")
    x[rows, _others_index(rng, drawn[rows], c)] = float(resolve(p["poison"], fmt))


def generate(kind: str, p: Mapping, seed: int, fmt: Format) -> Problem:
    """The problem that generator ``kind`` draws from ``seed`` for parameters ``p`` in ``fmt``;
    the common step after it draws the targets, the ignored samples and the class weights.

    Every option adds draws only when it is set, so a scenario's problem does not change when
    options it does not use are added here."""
    shape = tuple(int(n) for n in p["shape"])
    m, c = _rows_of(shape)
    rng = np.random.default_rng(seed)
    x, t = KINDS[kind](rng, fmt, p, m, c)
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(x).astype(fmt.dtype, copy=False)  # no copy when the kind drew the dtype
    if t is None:
        t = rng.integers(0, c, m)
    placement = p.get("target_classes", "any")
    if placement not in TARGET_CLASSES:
        raise ValueError(
            f"target_classes: unknown value {placement!r}; use one of {', '.join(TARGET_CLASSES)}"
        )
    if placement == "inexact-16-bit":
        x = np.array(x, copy=True)  # writable, whatever the kind returned
        t = _swap_targets(rng, x, t, _inexact_16_bit_classes(c))
    drawn = t  # the targets before any is replaced by ignore_index
    ignore_index = resolve_ignore_index(p.get("ignore_index", -100), c)
    fraction = float(p.get("ignore_fraction", 0.0))
    mode = p.get("target", "index")
    if fraction:
        if mode != "index":
            raise ValueError("ignore_fraction: probability targets have no ignored samples")
        t = t.copy()
        t[rng.permutation(m)[: round(fraction * m)]] = ignore_index
    if p.get("poison") is not None:
        kept = t != ignore_index if mode == "index" else np.ones(m, dtype=bool)
        x = np.array(x, copy=True)
        with np.errstate(over="ignore"):
            _poison(rng, x, fmt, p, drawn, kept)
    target_dtype = p.get("target_dtype", "int64")
    if target_dtype not in TARGET_DTYPES:
        raise ValueError(
            f"target_dtype: unknown value {target_dtype!r}; use one of {', '.join(TARGET_DTYPES)}"
        )
    if mode == "index":
        target = t.astype(np.int64)
        if target_dtype == "uint8":
            if target.size and not (0 <= target.min() and target.max() <= 255):
                raise ValueError(
                    f"target_dtype: uint8 holds class indices 0..255, but the targets span "
                    f"{target.min()}..{target.max()} (ignore_index {ignore_index})"
                )
            target = target.astype(np.uint8)
    elif target_dtype != "int64":
        raise ValueError(f"target_dtype: {target_dtype} applies to class-index targets only")
    elif mode == "prob":
        u = rng.random((m, c))
        u = u * u * u * u  # peaked, like a softmax of spread-out logits
        target = u / _row_sums(u)[:, None]
    elif mode == "prob-raw":
        target = 2.0 * rng.random((m, c))  # positive, rows do not sum to 1
    elif mode == "prob-zeros":
        u = rng.random((m, c))
        u[rng.random((m, c)) < 0.75] = 0.0  # three quarters of the classes get no mass ...
        u[np.arange(m), t] += 1.0  # ... but the drawn class always some, so no row is all zero
        target = u / _row_sums(u)[:, None]
    elif mode == "prob-onehot":
        target = np.zeros((m, c))
        target[np.arange(m), t] = 1.0
    else:
        raise ValueError(f"target: unknown mode {mode!r}; use one of {', '.join(TARGET_MODES)}")
    weight = None
    mode_w = p.get("weight")
    if mode_w is not None:
        if mode_w not in WEIGHT_MODES:
            raise ValueError(f"weight: unknown mode {mode_w!r}; use one of {', '.join(WEIGHT_MODES)}")
        weight = 0.5 + 1.5 * rng.random(c)
        if mode_w == "zeros":
            weight[rng.permutation(c)[: max(1, c // 4)]] = 0.0
        elif mode_w == "kept-zero":
            if mode == "index":
                weight[t[(t != ignore_index) & (t >= 0) & (t < c)]] = 0.0
            else:
                weight[:] = 0.0  # every class carries target probability
        elif mode_w == "negative":
            weight[rng.permutation(c)[: max(1, c // 3)]] *= -1.0
    return Problem(
        logits=_layout(x, shape),
        target=_layout(target, shape),
        weight=weight,
        ignore_index=ignore_index,
        reduction=p.get("reduction", "mean"),
        label_smoothing=float(p.get("label_smoothing", 0.0)),
        memory=p.get("memory", "contiguous"),  # no draws: the values do not depend on it
    )


__all__ = [
    "COMMON_PARAMS",
    "KINDS",
    "KIND_PARAMS",
    "POISON_ROWS",
    "TARGET_CLASSES",
    "TARGET_DTYPES",
    "TARGET_MODES",
    "WEIGHT_MODES",
    "generate",
    "log_max",
    "neighbours",
    "resolve",
    "resolve_ignore_index",
]
