"""The scenario catalogue: named, seeded, documented cross-entropy problems.

The data lives in ``scenarios.toml`` next to this module (PyTorch OpInfo style: adding a case is
one table there); this module loads it, expands the templates, and turns each scenario into a
:class:`~harness.problem.Problem` per dtype with the generator named by its ``kind``.

A scenario is deterministic: its problem for a dtype depends only on its name (through the seed),
its parameters and the dtype. Logits are drawn in float64 with ``numpy.random.default_rng(seed)``
and rounded once to the dtype (the bit-pattern scenarios draw the dtype's bits directly; the
language-model ones, ``llm``, draw float32 in row blocks so that 1e9 logits never exist in
float64); nothing on the way calls a vectorised transcendental function, whose last bit may
differ between CPUs.

TOML schema (see the header of ``scenarios.toml`` for the full story)::

    [[scenario]]
    name = "scale-{scale:g}"      # a str.format pattern over the parameters
    family = "scale"              # grouping in reports
    kind = "normal"               # the generator (see KINDS)
    why = "one line"              # also a pattern
    params = { shape = [32, 128] }
    expand = { scale = [1e-6, 1e-5] }            # cartesian product -> several scenarios
    cases = [ { name = "x", scale = 2.0 } ]      # or an explicit list of overrides
    dtypes = ["float32", "float64"]              # default: all four
    tags = ["special"]                           # quick, special, large, bits
    axis = "scale"                               # a parameter name, or ["C", 32768]
    quick = ["scale-1e-06"]                      # expanded names also tagged quick
    overrides = { "scale-100000" = { dtypes = ["float32"] } }
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
import tomllib
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from functools import cache
from importlib import resources
from types import MappingProxyType

import numpy as np

from harness.formats import DTYPE_NAMES, FORMATS, Format, format_of
from harness.problem import REDUCTIONS, Problem

TOML_RESOURCE = "scenarios.toml"
KNOWN_TAGS = frozenset({"quick", "special", "large", "bits"})
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")

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
# The scenario


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    why: str
    kind: str
    params: Mapping = field(hash=False)
    dtypes: tuple[str, ...]
    seed: int
    axis: tuple[str, float] | None = None
    tags: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """The logits' shape (the same for every dtype)."""
        return tuple(int(n) for n in self.params["shape"])

    @property
    def size(self) -> int:
        """Logits per problem (per dtype)."""
        return math.prod(self.shape)

    @property
    def quick(self) -> bool:
        return "quick" in self.tags

    def problem(self, dtype) -> Problem:
        """The problem of this scenario in ``dtype`` (a name, NumPy dtype or Format)."""
        fmt = format_of(dtype)
        if fmt.name not in self.dtypes:
            raise ValueError(
                f"scenario {self.name!r} does not apply to {fmt.name}; its dtypes are "
                f"{', '.join(self.dtypes)}"
            )
        return _generate(self, fmt)


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


def _generate(s: Scenario, fmt: Format) -> Problem:
    p = s.params
    shape = s.shape
    m, c = _rows_of(shape)
    rng = np.random.default_rng(s.seed)
    x, t = KINDS[s.kind](rng, fmt, p, m, c)
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


# ----------------------------------------------------------------------------------------------
# Loading and expanding the TOML

_META = ("name", "why", "dtypes", "tags", "axis", "seed")


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    return v


def _thaw(v):
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan
    return v


def _fmt(pattern: str, params: Mapping, where: str) -> str:
    try:
        return pattern.format(**params)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{where}: cannot format {pattern!r}: {e!r}") from None


def _check_params(kind: str, params: Mapping, where: str) -> None:
    allowed = COMMON_PARAMS | KIND_PARAMS[kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(unknown)} for kind {kind!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    shape = params.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise ValueError(
            f"{where}: shape must be a non-empty list of positive integers, got {shape!r}"
        )
    if params.get("reduction", "mean") not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {', '.join(REDUCTIONS)}")
    if params.get("target", "index") not in TARGET_MODES:
        raise ValueError(f"{where}: target must be one of {', '.join(TARGET_MODES)}")
    if params.get("weight") not in (None, *WEIGHT_MODES):
        raise ValueError(f"{where}: weight must be one of {', '.join(WEIGHT_MODES)}")
    ignore_index = params.get("ignore_index", -100)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"{where}: ignore_index must be an integer, got {ignore_index!r}")
    if params.get("target", "index") != "index" and ignore_index >= 0:
        raise ValueError(
            f"{where}: ignore_index must be negative with probability targets (PyTorch rejects "
            f"ignore_index >= 0 for them), got {ignore_index}"
        )


def _expand(entry: dict, defaults: dict, index: int) -> Iterable[Scenario]:
    where = f"scenario #{index} ({entry.get('name', '?')!r})"
    known = {
        "name", "family", "kind", "why", "params", "dtypes", "tags", "axis", "seed",
        "expand", "cases", "quick", "overrides",
    }  # fmt: skip
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("name", "family", "kind", "why"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ValueError(f"{where}: {key} is required (a non-empty string)")
    kind = entry["kind"]
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; use one of {', '.join(sorted(KINDS))}")
    base = {"shape": defaults.get("shape", [16, 128]), **entry.get("params", {})}

    variants: list[dict] = []
    expand = entry.get("expand", {})
    if expand:
        keys = list(expand)
        for combo in itertools.product(*(expand[k] for k in keys)):
            variants.append(dict(zip(keys, combo, strict=True)))
    variants.extend(dict(case) for case in entry.get("cases", []))
    if not variants:
        variants = [{}]

    overrides = entry.get("overrides", {})
    quick = set(entry.get("quick", []))
    seen = set()
    for var in variants:
        meta = {k: var.pop(k) for k in _META if k in var}
        params = {**base, **var}
        name = _fmt(meta.get("name", entry["name"]), params, where)
        extra = overrides.get(name, {})
        seen.add(name)
        here = f"scenario {name!r}"
        _check_params(kind, params, here)
        dtypes = tuple(extra.get("dtypes", meta.get("dtypes", entry.get("dtypes", DTYPE_NAMES))))
        bad = [d for d in dtypes if d not in FORMATS]
        if bad or not dtypes:
            raise ValueError(
                f"{here}: dtypes must be a non-empty subset of {', '.join(DTYPE_NAMES)}"
            )
        dtypes = tuple(d for d in DTYPE_NAMES if d in dtypes)
        tags = set(entry.get("tags", [])) | set(meta.get("tags", [])) | set(extra.get("tags", []))
        if name in quick:
            tags.add("quick")
        if tags - KNOWN_TAGS:
            raise ValueError(f"{here}: unknown tag(s) {', '.join(sorted(tags - KNOWN_TAGS))}")
        axis = meta.get("axis", entry.get("axis"))
        if isinstance(axis, str):
            if axis not in params:
                raise ValueError(f"{here}: axis {axis!r} is not one of its parameters")
            axis = (axis, float(params[axis]))
        elif axis is not None:
            axis = (str(axis[0]), float(axis[1]))
        why = _fmt(extra.get("why", meta.get("why", entry["why"])), params, here)
        seed = meta.get("seed", entry.get("seed") if len(variants) == 1 else None)
        yield Scenario(
            name=name,
            family=entry["family"],
            why=why,
            kind=kind,
            params=_freeze(params),
            dtypes=dtypes,
            seed=int(seed) if seed is not None else zlib.crc32(name.encode()),
            axis=axis,
            tags=tuple(sorted(tags)),
        )
    missing = (quick | set(overrides)) - seen
    if missing:
        raise ValueError(f"{where}: quick/overrides name no expanded scenario: {sorted(missing)}")


def parse(data: Mapping) -> tuple[Scenario, ...]:
    """Scenarios from the parsed TOML (a dict with ``defaults`` and a ``scenario`` list)."""
    defaults = dict(data.get("defaults", {}))
    out: list[Scenario] = []
    names: set[str] = set()
    for i, entry in enumerate(data.get("scenario", [])):
        for s in _expand(entry, defaults, i):
            if not NAME_RE.match(s.name):
                raise ValueError(f"scenario {s.name!r}: names must match {NAME_RE.pattern}")
            if s.name in names:
                raise ValueError(f"scenario {s.name!r}: duplicate name")
            names.add(s.name)
            out.append(s)
    return tuple(out)


def loads(text: str) -> tuple[Scenario, ...]:
    return parse(tomllib.loads(text))


@cache
def _catalogue() -> tuple[Scenario, ...]:
    text = resources.files("harness").joinpath(TOML_RESOURCE).read_text(encoding="utf-8")
    return loads(text)


def catalogue() -> list[Scenario]:
    """Every scenario, in the catalogue's order (a fresh list; the scenarios are immutable)."""
    return list(_catalogue())


def families() -> list[str]:
    return list(dict.fromkeys(s.family for s in _catalogue()))


def get(name: str) -> Scenario:
    for s in _catalogue():
        if s.name == name:
            return s
    raise KeyError(f"no scenario named {name!r}; see `xent-harness list --scenarios`")


def _matches(pattern: str, s: Scenario) -> bool:
    if pattern.startswith("tag:"):
        return any(fnmatch.fnmatchcase(t, pattern[4:]) for t in s.tags)
    return fnmatch.fnmatchcase(s.name, pattern) or fnmatch.fnmatchcase(s.family, pattern)


def select(
    patterns: Iterable[str] | None = None, *, quick: bool = False, dtypes: Iterable | None = None
) -> list[Scenario]:
    """Scenarios whose name or family matches any glob in ``patterns`` (all if None or empty;
    commas split a pattern; ``tag:large`` matches a tag), optionally only the quick ones, and
    narrowed to ``dtypes`` (scenarios with none of them are dropped).

    A pattern that matches no scenario at all raises ValueError."""
    cat = _catalogue()
    pats = [q.strip() for p in (patterns or []) for q in p.split(",") if q.strip()]
    chosen = list(cat)
    if pats:
        for pat in pats:
            if not any(_matches(pat, s) for s in cat):
                raise ValueError(
                    f"--scenario: no scenario matches {pat!r}; see `xent-harness list --scenarios`"
                )
        chosen = [s for s in cat if any(_matches(pat, s) for pat in pats)]
    if quick:
        chosen = [s for s in chosen if s.quick]
    if dtypes is not None:
        wanted = {format_of(d).name for d in dtypes}
        narrowed = []
        for s in chosen:
            keep = tuple(d for d in s.dtypes if d in wanted)
            if keep:
                narrowed.append(s if keep == s.dtypes else replace(s, dtypes=keep))
        chosen = narrowed
    return chosen


def total_logits(scenarios: Iterable[Scenario]) -> int:
    """Logits over every (scenario, dtype) pair: the reference's cost is proportional to it."""
    return sum(s.size * len(s.dtypes) for s in scenarios)


def options(s: Scenario) -> dict:
    """The cross_entropy options a scenario's problems use (without generating them)."""
    p = s.params
    return {
        "reduction": p.get("reduction", "mean"),
        "ignore_index": int(p.get("ignore_index", -100)),
        "ignore_fraction": float(p.get("ignore_fraction", 0.0)),
        "label_smoothing": float(p.get("label_smoothing", 0.0)),
        "weight": p.get("weight"),
        "target": p.get("target", "index"),
    }


def describe(s: Scenario) -> dict:
    """A JSON-ready row for listings and reports."""
    return {
        "name": s.name,
        "family": s.family,
        "why": s.why,
        "kind": s.kind,
        "dtypes": list(s.dtypes),
        "tags": list(s.tags),
        "axis": None if s.axis is None else [s.axis[0], s.axis[1]],
        "seed": s.seed,
        "shape": list(s.shape),
        "logits": s.size,
        "options": options(s),
        "params": {k: _thaw(v) for k, v in s.params.items() if k not in COMMON_PARAMS},
    }


__all__ = [
    "KINDS",
    "Scenario",
    "catalogue",
    "describe",
    "families",
    "get",
    "loads",
    "options",
    "select",
    "total_logits",
]
