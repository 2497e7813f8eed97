"""A seeded fuzz corpus of cross-entropy problems for certifying the reference with the arb oracle.

``corpus(n, seed)`` yields the fixed regression cases (:data:`REGRESSIONS`, always first, verbatim)
and then ``n`` random problems that together span every option of the contract (weights none /
positive / with zeros / negative / rarely NaN or ±inf; ignore_index default, used, inside [0, C),
all ignored; label smoothing 0 … 1; every reduction; index and probability targets, normalized or
not, with zeros, negative or infinite entries; rarely C = 0),
every layout (2-D, unbatched, K-dim), every input dtype, and the extremes where floating point is
hardest (scales 1e-30 … 1e30, dominant gaps up to 1e30, -inf masks, ±inf/NaN, subnormals, ties,
random bit patterns, C up to 10^4). Most problems are small so that the corpus stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from harness.formats import FORMATS
from harness.problem import Problem

inf, nan = math.inf, math.nan
DTYPES = tuple(FORMATS)


def _p(logits, target, dtype="float64", **kw) -> Problem:
    dt = FORMATS[dtype].dtype
    with np.errstate(over="ignore"):
        x = np.asarray(logits, dtype=np.float64).astype(dt)
    t = np.asarray(target)
    if t.dtype.kind == "f":
        with np.errstate(over="ignore"):
            t = t.astype(np.float64).astype(dt)
    if kw.get("weight") is not None:
        kw["weight"] = np.asarray(kw["weight"], dtype=np.float64).astype(dt)
    return Problem(x, t, **kw)


#: Regression cases: (name, what the true answer is / why it is here, builder).
REGRESSIONS: list[tuple[str, str, Callable[[], Problem]]] = [
    ("tiny-loss-20-f32", "true loss 2.06115362031438070324e-9; lse - x_t gives 0",
     lambda: _p([[20.0, 0.0]], [0], "float32", reduction="none")),
    ("weight-2^40-smoothing", "true grad[0] = -0.6543756984212587 (cancellation between weighted terms)",
     lambda: _p([[float.fromhex("0x1.ap+4"), 0.0]], [1], "float32", weight=[2.0**40, 1.0],
                label_smoothing=0.5, reduction="sum")),
    ("weighted-mean-zeros", "loss ln 2, grad -1/6 at the target",
     lambda: _p(np.zeros((3, 2)), [0, 0, 0], weight=[0.1, 0.7])),
    ("weight-1e308-mean", "loss ln 2, grad ±0.25 (Σw overflows float64, the contract is exact)",
     lambda: _p(np.zeros((2, 2)), [0, 0], weight=[1e308, 1.0])),
    ("f16-midpoint-1000.25", "loss 1000.25 + e^-1000.25: float16 rounds it up to 1000.5",
     lambda: _p([float.fromhex("0x1.f42p+9"), 0.0], 1, "float32")),
    ("f16-prob-target-1000", "float16 logits [1000, 0], probability target [0, 1.01171875]",
     lambda: _p([1000.0, 0.0], [0.0, 1.01171875], "float16", reduction="sum")),
    ("prob-target-inf", "probability target +inf: torch float64 gives +inf",
     lambda: _p([0.0, 0.0], [inf, 0.0], "float32", reduction="sum")),
    ("weights-sum-to-zero", "weighted mean whose target weights sum to 0 (+inf, as torch)",
     lambda: _p([[1.0, 0.0], [0.0, 2.0]], [0, 1], "float32", weight=[1.0, -1.0])),
    ("tiny-loss-720-f64", "loss e^-720, a float64 subnormal",
     lambda: _p([[0.0, -720.0]], [0], reduction="none")),
    ("tiny-loss-2e9-f32", "loss e^-2e9, far below float64's range",
     lambda: _p([[0.0, -2e9]], [0], "float32", reduction="none")),
    ("tiny-loss-1e30-ulp", "logits 1e30 and its successor: loss log1p(e^-ulp) ~ e^-1.4e14",
     lambda: _p([[1e30, np.nextafter(1e30, inf)]], [1], reduction="none")),
    ("gap-1e4", "gap 1e4 between the top logit and the rest, every reduction of the gradient",
     lambda: _p([[1e4, 0.0, -1.0], [0.0, 1e4, 5.0]], [0, 0], reduction="sum")),
    ("large-C-10000", "C = 10^4 classes, one row",
     lambda: _p(np.random.default_rng(99).normal(0, 3, (1, 10_000)), [1234], "float32")),
    # Minimal reproducers of what the fuzz found (docs/semantics.md decides each; torch agrees
    # where it is exact).
    ("prob-target-inf-gap-7.4e8", "+inf: inf · L_0 with L_0 = log1p(e^-744261120) > 0 (beyond 2^-(2^30))",
     lambda: _p([[744261120.0, 0.0]], [[inf, 0.0]], reduction="sum")),
    ("neg-inf-target-weight", "-inf, gradient [-inf, NaN]: G_y = +inf, g = G - p·ΣG",
     lambda: _p([[1.0, 2.0]], [1], "float32", weight=[1.0, -inf], reduction="none")),
    ("nan-weight-ignored-smoothing", "losses [0, NaN]; every gradient row NaN (G = 0·NaN on the ignored row)",
     lambda: _p([[1.0, 0.0], [0.0, 2.0]], [-100, 1], "float32", weight=[nan, 1.0], label_smoothing=0.1,
                reduction="none")),
    ("inf-weight-smoothing", "+inf, gradient [[NaN, NaN], [NaN, +inf]]",
     lambda: _p([[1.0, 0.0], [0.0, 2.0]], [-100, 1], "float32", weight=[inf, 1.0], label_smoothing=0.1,
                reduction="sum")),
    ("nan-target-weight", "NaN (w_y·L with w_y = NaN), NaN gradient",
     lambda: _p([[-0.79, 0.5]], [0], "float32", weight=[nan, 1.0], reduction="sum")),
    ("no-classes-smoothing", "C = 0, all ignored, ε > 0: NaN per sample (ε/C = +inf times 0)",
     lambda: _p(np.zeros((2, 0)), [-100, -100], "float32", label_smoothing=0.1, reduction="none")),
    ("f32-gradient-at-a-midpoint", "grad[0, 2] = a float32 midpoint minus ~1e-8688899: rounds down",
     lambda: _p([[-42843008.0, 20114372.0, 40121300.0, -19426796.0, -3902905.5, -10832883.0]], [0], "float32",
                weight=[-0.6816572546958923, -0.36922478675842285, 1.7196300029754639, 1.0762760639190674,
                        0.5758925080299377, -0.09950130432844162], label_smoothing=1.0, reduction="none")),
]


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(10 ** rng.uniform(math.log10(lo), math.log10(hi)))


def _logits(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    """Logits of one of several styles in float64, class axis LAST (``shape[-1]`` = C); the
    caller moves it into place and casts to ``dtype``."""
    fmt = FORMATS[dtype]
    C = shape[-1]
    if 0 in shape:  # no logits at all (an empty batch or C = 0)
        return np.zeros(shape)
    cap = fmt.max / 4  # keep finite after the cast (inf entries come from the 'special' style)
    style = rng.choice(["normal", "scale", "dominant", "ties", "mask", "special", "subnormal", "bits", "equal"],
                       p=[0.28, 0.15, 0.15, 0.08, 0.08, 0.07, 0.06, 0.07, 0.06])
    if style == "normal":
        x = rng.normal(0, rng.choice([0.1, 1.0, 3.0]), shape)
    elif style == "scale":
        x = rng.normal(0, min(_log_uniform(rng, 1e-30, 1e30), cap / 8), shape)
    elif style == "dominant":
        gap = float(rng.choice([5.0, 20.0, 30.0, 100.0, 750.0, 1e3, 1e4, 1e5, 1e30]))
        x = rng.normal(0, 1, shape)
        rows = x.reshape(-1, C)
        rows[np.arange(rows.shape[0]), rng.integers(0, C, rows.shape[0])] = min(gap, cap)
        if rng.random() < 0.3:
            x = x + float(rng.choice([-1e4, 1e3, 0.5]))  # offsets: the exact shift matters
    elif style == "ties":
        x = rng.integers(-2, 3, shape).astype(np.float64) * float(rng.choice([1.0, 0.5, 1e-3]))
    elif style == "mask":
        x = rng.normal(0, 2, shape)
        x[rng.random(shape) < 0.35] = -inf
    elif style == "special":
        x = rng.normal(0, 2, shape)
        mask = rng.random(shape) < 0.2
        x[mask] = rng.choice([inf, -inf, nan], int(mask.sum()))
    elif style == "subnormal":
        x = rng.choice([0.0, fmt.min_subnormal, -fmt.min_subnormal, fmt.tiny / 3, fmt.tiny], shape)
        x = x * rng.integers(1, 4, shape)
    elif style == "bits":
        # Uniform over float64 bit patterns (both signs), clipped to the format's range.
        raw = rng.integers(0, 2**63, shape, dtype=np.int64).view(np.float64)
        raw = np.where(np.isfinite(raw), raw, 1.0)
        x = np.clip(raw * rng.choice([-1.0, 1.0], shape), -cap, cap)
    else:  # equal
        x = np.full(shape, float(rng.normal(0, 10)))
    return x


def _weight(rng: np.random.Generator, C: int):
    kind = rng.choice(["none", "positive", "zeros", "negative", "wide", "nonfinite"],
                      p=[0.4, 0.2, 0.14, 0.1, 0.13, 0.03])
    if kind == "none" or C == 0:
        return None
    if kind == "nonfinite":  # PyTorch accepts NaN/±inf weights; see docs/semantics.md
        w = rng.uniform(0.1, 2.0, C)
        w[rng.integers(0, C)] = float(rng.choice([nan, inf, -inf]))
        return w
    if kind == "positive":
        return rng.uniform(0.1, 3.0, C)
    if kind == "zeros":
        w = rng.uniform(0.1, 2.0, C)
        w[rng.random(C) < 0.4] = 0.0
        return w
    if kind == "negative":
        return rng.uniform(-1.0, 2.0, C)
    return 10 ** rng.uniform(-3, 3, C)


def _random_problem(rng: np.random.Generator) -> Problem:
    dtype = str(rng.choice(DTYPES))
    r = rng.random()
    C = (0 if r < 0.01 else int(rng.integers(1, 9)) if r < 0.8 else int(rng.integers(9, 65)) if r < 0.97
         else int(rng.choice([300, 1000])))
    layout = rng.choice(["2d", "unbatched", "kdim"], p=[0.6, 0.15, 0.25])
    big = C > 64
    if layout == "unbatched":
        other = ()
    elif layout == "2d":
        other = (1 if big else int(rng.integers(0, 6)),)
    else:
        dims = (1,) if big else tuple(int(v) for v in rng.integers(1, 3, rng.integers(1, 3)))
        other = (1 if big else int(rng.integers(1, 3)), *dims)
    axis = 0 if layout == "unbatched" else 1

    def placed(a):  # class axis last -> PyTorch's layout
        return np.moveaxis(a, -1, axis)

    x = placed(_logits(rng, (*other, C), dtype))
    weight = _weight(rng, C)
    eps = float(rng.choice([0.0, 0.0, 0.0, 0.1, 0.5, 0.995, 1.0, rng.uniform(0, 1)]))
    reduction = str(rng.choice(["mean", "sum", "none"]))
    if rng.random() < 0.3:
        kind = rng.choice(["normalized", "unnormalized", "onehot", "negative", "inf"], p=[0.3, 0.3, 0.2, 0.15, 0.05])
        t = rng.uniform(0, 1, (*other, C))
        if kind == "normalized":
            t[rng.random(t.shape) < 0.3] = 0.0
            t = t / np.maximum(t.sum(axis=-1, keepdims=True), 1e-300)
        elif kind == "unnormalized":
            t = t * 2
        elif kind == "onehot" and C:
            t = (t == t.max(axis=-1, keepdims=True)).astype(np.float64)
        elif kind == "negative":
            t = t - 0.3
        else:
            t[rng.random(t.shape) < 0.2] = inf
        return _p(x, placed(t), dtype, weight=weight, reduction=reduction, label_smoothing=eps)
    ignore = int(rng.choice([-100, -100, int(rng.integers(0, max(C, 1)))]))
    t = rng.integers(0, C, other) if C else np.full(other, ignore)  # no class: every target ignored
    u = rng.random()
    if u < 0.3:
        t = np.where(rng.random(other) < 0.4, ignore, t)  # some ignored
    elif u < 0.36:
        t = np.full(other, ignore)  # all ignored
    return _p(x, np.asarray(t, dtype=np.int64), dtype, weight=weight, ignore_index=ignore, reduction=reduction,
              label_smoothing=eps)


def regressions() -> list[tuple[str, Problem]]:
    return [(name, build()) for name, _why, build in REGRESSIONS]


def corpus(n: int, seed: int, *, fixed: bool = True) -> Iterator[tuple[str, Problem]]:
    """The regression cases (unless ``fixed`` is False), then ``n`` random problems from ``seed``,
    as (name, problem) pairs; the same arguments always give the same problems."""
    if fixed:
        yield from regressions()
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield f"random-{seed}-{i}", _random_problem(rng)


def source(problem: Problem) -> str:
    """One line of Python that rebuilds ``problem`` exactly (a reproducer for reports); needs
    ``import numpy as np, ml_dtypes`` and ``from harness.problem import Problem``."""
    def arr(a):  # float64 repr round-trips every value of every format exactly
        return repr(np.asarray(a, dtype=np.float64).tolist()).replace("inf", "np.inf").replace("nan", "np.nan")

    dt = problem.dtype.name
    dtexpr = "ml_dtypes.bfloat16" if dt == "bfloat16" else f"np.{dt}"
    t = (f"np.array({arr(problem.target)}).astype({dtexpr})" if problem.probability_target
         else f"np.array({problem.target.tolist()!r})")
    w = "None" if problem.weight is None else f"np.array({arr(problem.weight)}).astype({dtexpr})"
    return (f"Problem(np.array({arr(problem.logits)}).astype({dtexpr}), {t}, weight={w}, "
            f"ignore_index={problem.ignore_index}, reduction={problem.reduction!r}, "
            f"label_smoothing={problem.label_smoothing!r})")
