"""The hunt's input space: a candidate is one row of logits described by a few parameters
(body, C, scale, offset, gap, target, label smoothing, seed, nudges), so strategies can sample,
bisect and perturb the parameters while the row itself stays reproducible from them.

Continuous axes are sampled and bisected over their float64 **bit patterns** (the ordered
integer image of the doubles, Herbie's uniform-over-bits sampling): an interval's halves hold
the same number of doubles, so every binade of [1e-6, 1e5] is equally likely.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from harness.formats import Format

#: How a row's logits are drawn before the gap and the nudges (see :func:`row`).
BODIES = ("normal", "ties", "mix", "bits")
MAX_C = 4096
#: The class counts sampled C snaps to (2^(k/2), rounded): rows of one C share a batched call, so
#: a round of proposals costs a few dozen implementation and reference calls, not one per row.
#: Refinement moves C off the grid (C +- 1).
C_GRID = tuple(sorted({round(2 ** (k / 2)) for k in range(25)}))


def ordinal(x: float) -> int:
    """The position of a double among the ordered doubles (monotone, -0 and +0 both 0)."""
    b = int(np.array([x], np.float64).view(np.int64)[0])
    return b if b >= 0 else -(b & 0x7FFF_FFFF_FFFF_FFFF)


def from_ordinal(k: int) -> float:
    b = k if k >= 0 else (-k) | -0x8000_0000_0000_0000
    return float(np.array([b], np.int64).view(np.float64)[0])


@dataclass(frozen=True)
class Axis:
    """A continuous parameter over [lo, hi], sampled uniformly over its bit patterns."""

    name: str
    lo: float
    hi: float

    def span(self) -> tuple[int, int]:
        return ordinal(self.lo), ordinal(self.hi)

    def sample(self, rng: np.random.Generator, span: tuple[int, int] | None = None) -> float:
        a, b = span or self.span()
        return from_ordinal(int(rng.integers(a, b, endpoint=True)))


@dataclass(frozen=True)
class Candidate:
    """One row to evaluate. ``gap`` None: no dominant logit; else the target is set to the
    others' max + gap. ``nudges``: (class, k) moves of single logits by k ULPs of the dtype."""

    body: str
    C: int
    scale: float
    offset: float
    gap: float | None
    target: float  # in [0, 1): the target class is floor(target * C)
    eps: float
    seed: int
    nudges: tuple[tuple[int, int], ...] = field(default=())

    def to_json(self) -> dict:
        d = asdict(self)
        d["nudges"] = [list(n) for n in self.nudges]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Candidate:
        return cls(**{**d, "nudges": tuple(tuple(n) for n in d.get("nudges", ()))})

    def with_(self, **kw) -> Candidate:
        return replace(self, **kw)

    @property
    def group(self) -> tuple[int, float]:
        """Candidates of one group go into one batched problem (same C and options)."""
        return self.C, self.eps


class Space:
    """The axes for one output format, and whether label smoothing is an option axis."""

    def __init__(self, fmt: Format, *, smoothing: bool = True):
        self.fmt = fmt
        self.smoothing = smoothing
        big = float(fmt.max)
        self.axes = {
            "C": Axis("C", 1.0, float(MAX_C)),
            "scale": Axis("scale", 1e-6, 1e5),
            "offset": Axis("offset", -big, big),
            "gap": Axis("gap", -1e4, 1e4),
            "eps": Axis("eps", 0.0, 1.0),
        }

    def value(self, name: str, rng, span=None) -> float:
        return self.axes[name].sample(rng, span)

    def finish(self, rng, body: str, C: float, scale: float, offset: float, gap: float | None,
               eps: float | None = None) -> Candidate:
        """A candidate from sampled axis values; target, smoothing and seed drawn here."""
        if eps is None:
            eps = self.value("eps", rng) if self.smoothing and rng.random() < 0.25 else 0.0
        C = min(C_GRID, key=lambda g: (abs(math.log(g) - math.log(max(1.0, C))), g))
        return Candidate(body=body, C=int(C), scale=float(scale),
                         offset=float(offset), gap=None if gap is None else float(gap),
                         target=float(rng.random()), eps=float(eps) if self.smoothing else 0.0,
                         seed=int(rng.integers(0, 2**31)))

    def uniform(self, rng: np.random.Generator) -> Candidate:
        """Uniform over bit patterns within each axis; body and 'has a gap' uniform too."""
        body = BODIES[int(rng.integers(len(BODIES)))]
        gap = self.value("gap", rng) if rng.random() < 0.5 else None
        return self.finish(rng, body, self.value("C", rng), self.value("scale", rng), self.value("offset", rng), gap)


def _ulp_step(x: np.ndarray, k: np.ndarray, fmt: Format) -> np.ndarray:
    """x moved by k ULPs of ``fmt`` (through its ordered bit patterns; stays finite)."""
    x = np.asarray(x, fmt.dtype)
    k = np.broadcast_to(np.asarray(k, np.int64), x.shape)
    if fmt.itemsize == 8:  # int64 would overflow on the sign bit: step with nextafter
        out = x.copy()
        for _ in range(int(np.abs(k).max(initial=0))):
            move = k != 0
            with np.errstate(over="ignore"):
                out = np.where(move, np.nextafter(out, np.where(k > 0, np.inf, -np.inf)), out)
            k = k - np.sign(k)
        return np.clip(out, -fmt.max, fmt.max)
    bits = 8 * fmt.itemsize
    uint = np.dtype(f"u{fmt.itemsize}")
    u = x.view(uint).astype(np.int64)
    mag = u & ((1 << (bits - 1)) - 1)
    o = np.where(u >> (bits - 1) == 1, -mag, mag) + k
    top = int(np.array([fmt.max], np.float64).astype(fmt.dtype).view(uint)[0])
    o = np.clip(o, -top, top)
    return np.where(o < 0, (-o) | (1 << (bits - 1)), o).astype(uint).view(fmt.dtype)


def row(c: Candidate, fmt: Format) -> tuple[np.ndarray, int]:
    """The candidate's logits (C values in the format, always finite) and target index."""
    rng = np.random.default_rng([c.seed, c.C])
    C = c.C
    big = float(fmt.max)
    with np.errstate(over="ignore", invalid="ignore"):
        if c.body == "normal":
            x = c.offset + c.scale * rng.standard_normal(C)
        elif c.body == "ties":  # near-ties: the offset plus a few of its ULPs (scale picks how many)
            off = np.asarray([c.offset], fmt.dtype)
            k = rng.integers(-1, 2, C) * max(1, min(8, int(c.scale)))
            x = _ulp_step(np.repeat(off, C), k, fmt).astype(np.float64)
        elif c.body == "mix":  # huge and tiny logits in one row
            huge = c.offset + c.scale * rng.standard_normal(C)
            tiny = rng.integers(-(2 ** (fmt.precision - 1)), 2 ** (fmt.precision - 1), C) * fmt.min_subnormal
            x = np.where(rng.random(C) < 0.5, huge, tiny)
        elif c.body == "bits":  # uniform over the format's finite bit patterns
            uint = np.dtype(f"u{fmt.itemsize}")
            top = int(np.array([big], np.float64).astype(fmt.dtype).view(uint)[0])
            mag = rng.integers(0, top, C, dtype=uint, endpoint=True)
            sign = rng.integers(0, 2, C, dtype=uint) << uint.type(8 * fmt.itemsize - 1)
            x = (mag | sign).view(fmt.dtype).astype(np.float64)
        else:
            raise ValueError(f"hunt: unknown body {c.body!r}; use {', '.join(BODIES)}")
        x = np.nan_to_num(np.clip(x, -big, big), nan=0.0)
        t = min(C - 1, max(0, int(c.target * C)))
        if c.gap is not None and C > 1:
            x[t] = float(np.clip(np.delete(x, t).max() + c.gap, -big, big))
        xf = x.astype(fmt.dtype)
    if c.nudges:
        j = np.array([n[0] % C for n in c.nudges])
        k = np.array([n[1] for n in c.nudges])
        for jj, kk in zip(j, k, strict=True):
            xf[jj] = _ulp_step(xf[jj:jj + 1], np.array([kk]), fmt)[0]
    return xf, t


def features(x: np.ndarray, t: int) -> dict:
    """What a row is, in numbers the report puts in words: the realized gap (target minus the
    others' max), the top-two gap, the largest magnitude and the offset (the row's max)."""
    xf = x.astype(np.float64)
    C = xf.size
    others = np.delete(xf, t)
    srt = np.sort(xf)
    return {"C": int(C), "target": int(t), "max": float(srt[-1]), "min": float(srt[0]),
            "gap": float(xf[t] - others.max()) if C > 1 else None,
            "top2_gap": float(srt[-1] - srt[-2]) if C > 1 else None,
            "max_abs": float(np.abs(xf).max())}
