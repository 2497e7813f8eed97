"""Property-based differential search: draw problems from the whole contract, judge an
implementation on each exactly as a sweep cell is judged, shrink a failing problem to a
minimal one with hypothesis, and save it as a case that ``check`` replays from then on.

Three parts, usable separately:

* :func:`problems` — a hypothesis strategy of :class:`~harness.problem.Problem` over the whole
  ``cross_entropy`` contract (below), narrowed to the dtypes and features an implementation
  declares. Users' own tests can draw from it::

      from hypothesis import given
      from harness.fuzz import conforms, problems

      @given(problems(dtypes=["float32"]))
      def test_my_ce(problem):
          conforms("mypkg.losses:my_ce", problem)   # AssertionError naming the failing cells

* :class:`Judge` — one implementation called through :class:`harness.runner.Runner` (isolated
  for plugins), the reference from :class:`harness.cache.ReferenceCache`, the cells made by the
  sweeps' own code (:func:`harness.sweeps._compute` / ``_record``: accuracy, gradient, special)
  with the run's budgets and known failures;
* :func:`run` — ``xent-harness fuzz``: for each implementation, rounds of hypothesis ``find``
  (derandomised from ``--seed``, no database, no deadline) whose condition is "a cell fails in
  a way not found yet" (:func:`signature`: dtype, kind, and error / wrong inf-NaN / inf-NaN
  where the contract is finite / outside the budget), until the implementation's share of
  ``--seconds`` (or ``--examples`` problems) is spent; each failure found is shrunk (for at most ``--shrink-seconds``) and saved with its
  exact reference in the golden-file format (:mod:`harness.golden`: one ``.npz`` per case and a
  ``manifest.json`` with sha256) in ``references/found/`` (``--save-to``, ``$XENT_FOUND``),
  named ``found-<first 12 hex digits of the problem's digest>`` and recording the
  implementation, the cells' kinds and messages and the seed (:mod:`harness.found_cases`, whose names
  this module re-exports). :func:`found_scenarios` turns
  the saved cases into scenarios of family ``found`` whose problem is read from the file
  (:class:`FoundScenario`); :func:`harness.scenarios.catalogue` appends them, so ``check``
  replays every saved case.

What the strategy draws (each choice shrinks towards the simplest):

* dtype: float32, float64, float16, bfloat16 (those allowed);
* layout: (N, C) with N in 0..16, unbatched (C,), K-dim (a, C, b[, 1]) with 1..64 samples;
  C in 1..300, one draw in eight 301..4096; at most ``max_logits`` logits (default 8192). Each
  sample (row) is drawn from its own seed, so the shrinker deletes rows and keeps the others;
* logits: rows cycling over one to three components, each normal (scale 1e-6..1e5, offset 0,
  ±20, ±1e3 or ±max/4), all equal, uniform over the dtype's finite bit patterns, or random
  subnormals; then optionally a dominant target (gap −1e3..1e4 above the others' max), a −inf
  mask (a half, nine tenths or all of the non-target logits, or the target too), and up to
  four single values (±inf, NaN, ±max, ±tiny, ±subnormals, ±log(max), ±0, any float, any raw
  bit pattern);
* memory layout: contiguous, transposed class axis, strided or row-offset views
  (:mod:`harness.memory_layout`; an unbatched input is never transposed);
* targets: class indices (int64, or uint8 where ``Problem`` and PyTorch take them and they fit)
  or, where allowed, probabilities (normalised, unnormalised, all zero, one-hot);
* ignore_index: −100 unused or used, −1, inside [0, C), ≥ C (each sample ignored or not), or
  every sample ignored;
* weight: none, positive, some or all zero, signed; label smoothing 0, 0.1, 1 or any in
  [0, 1]; reduction mean, sum, none.

Hypothesis is imported only by the functions that draw (``import harness.fuzz`` is light:
:func:`harness.scenarios.catalogue` imports it).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from harness import golden, vocabulary
from harness import problem as problem_module
from harness.formats import DTYPE_NAMES, FORMATS, Format
from harness.found_cases import (  # noqa: F401  (re-exported: fuzz is where users look)
    FAMILY,
    FoundScenario,
    _atomic_write,
    case_name,
    found_dir,
    found_scenarios,
    save_case,
)
from harness.memory_layout import MEMORY_LAYOUTS
from harness.problem import REDUCTIONS, Problem

#: Dtypes in the order the strategy prefers them (a shrunk case lands on the first that fails).
DTYPE_ORDER = ("float32", "float64", "float16", "bfloat16")
MAX_CLASSES = 300
BIG_CLASSES = 4096
MAX_BATCH = 16
MAX_LOGITS = 8192
SCHEMA = "xent-harness/fuzz"
SCHEMA_VERSION = 1
SUMMARY = "fuzz.json"

#: Whether Problem takes uint8 class indices besides int64 (PyTorch's Byte besides Long), and
#: where PyTorch refuses them.
_UINT8_TARGETS = np.dtype(np.uint8) in getattr(problem_module, "INDEX_DTYPES", ())
_uint8_refused = getattr(problem_module, "uint8_refused", lambda *a: "not accepted")


class FuzzError(ValueError):
    """Bad input to the fuzz command: one line naming the flag."""


# -- the strategy ----------------------------------------------------------------------------------

_SCALES = (1.0, 1e-6, 1e-3, 0.1, 10.0, 100.0, 1e3, 1e4, 1e5)
_LOCS = ("0", "20", "-20", "1e3", "-1e3", "max/4", "-max/4")
_BODIES = ("normal", "equal", "bits", "subnormal")
_GAPS = (0.0, 1.0, 10.0, 30.0, 100.0, 1e3, 1e4, -10.0, -1e3)
_SYMBOLS = ("inf", "-inf", "nan", "max", "-max", "tiny", "-tiny", "min_subnormal", "-min_subnormal",
            "exp_overflow", "-exp_overflow", "0", "-0")
_IGNORE = ("unused", "default", "minus-one", "inside", "beyond", "all")
_PROB = ("normalised", "unnormalised", "zeros", "one-hot")
_WEIGHTS = ("none", "positive", "zeros", "signed")


def _value(symbol: str, fmt: Format) -> float:
    sign = -1.0 if symbol.startswith("-") else 1.0
    s = symbol.lstrip("-")
    if s in ("inf", "nan"):
        return sign * float(s)
    if s.startswith("max"):
        return sign * fmt.max / (4.0 if s == "max/4" else 1.0)
    if s in ("tiny", "min_subnormal", "exp_overflow"):
        return sign * float(getattr(fmt, s))
    return sign * float(s)


def _layout(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(M, C) or (M,) row-space array -> the logits' (or index targets') layout."""
    if len(shape) == 1:
        return rows[0]
    if len(shape) == 2:
        return rows
    lead = (shape[0], *shape[2:])
    if rows.ndim == 1:
        return rows.reshape(lead)
    return np.moveaxis(rows.reshape(*lead, shape[1]), -1, 1)


def _body(rng: np.random.Generator, fmt: Format, kind: str, scale: float, loc: float, m: int, c: int):
    if kind == "normal":
        return loc + scale * rng.standard_normal((m, c))
    if kind == "equal":
        return np.full((m, c), loc)
    uint = np.dtype(f"u{fmt.itemsize}")
    if kind == "bits":  # uniform over the finite bit patterns, both signs
        top = int(np.array([fmt.max], np.float64).astype(fmt.dtype).view(uint)[0])
        mag = rng.integers(0, top, (m, c), dtype=uint, endpoint=True)
        sign = rng.integers(0, 2, (m, c), dtype=uint) << uint.type(8 * fmt.itemsize - 1)
        return (mag | sign).view(fmt.dtype)
    k = rng.integers(1, 2 ** (fmt.precision - 1), (m, c)).astype(np.float64)  # subnormals
    return np.where(rng.integers(0, 2, (m, c)) == 1, -1.0, 1.0) * k * fmt.min_subnormal


def _allowed(features) -> frozenset[str]:
    from harness.registry import FEATURES

    if features is None:
        return FEATURES
    features = frozenset(features)
    unknown = sorted(features - FEATURES)
    if unknown:
        raise ValueError(f"problems: unknown feature(s) {', '.join(unknown)}; use {', '.join(sorted(FEATURES))}")
    return features


def _dtypes(dtypes) -> list[str]:
    if dtypes is None:
        return list(DTYPE_ORDER)
    names = [getattr(d, "name", None) if not isinstance(d, str) else d for d in dtypes]
    bad = [d for d in names if d not in FORMATS]
    if bad:
        raise ValueError(f"problems: unknown dtype {bad[0]!r}; use {', '.join(DTYPE_NAMES)}")
    return [d for d in DTYPE_ORDER if d in names]


def problems(dtypes: Iterable | None = None, features: Iterable[str] | None = None, *,
             max_classes: int = MAX_CLASSES, big_classes: int = BIG_CLASSES, max_batch: int = MAX_BATCH,
             max_logits: int = MAX_LOGITS):
    """A hypothesis strategy of valid :class:`Problem` over the whole contract (see the module
    docstring), in ``dtypes`` (default all four) and exercising only ``features`` (names of
    :data:`harness.registry.FEATURES`; default all). Array contents come from a NumPy generator
    seeded by a drawn integer; the structure (shape, options, special values, masks) is drawn
    by hypothesis, so shrinking simplifies it."""
    from hypothesis import strategies as st

    dts = _dtypes(dtypes)
    allowed = _allowed(features)
    if not dts:
        raise ValueError("problems: no dtype to draw")
    layouts = ["batch"] + [name for name, feat in (("unbatched", "unbatched"), ("kdim", "kdim")) if feat in allowed]
    reductions = [r for r in REDUCTIONS if f"reduction:{r}" in allowed]
    if not reductions:
        raise ValueError("problems: the features allow no reduction (add reduction:mean, :sum or :none)")
    ignore_modes = list(_IGNORE) if "ignore_index" in allowed else ["unused"]
    weight_modes = list(_WEIGHTS) if "weight" in allowed else ["none"]
    target_kinds = ["index", "prob"] if "probability_target" in allowed else ["index"]
    smoothing = st.sampled_from([0.0, 0.1, 1.0, None]) if "label_smoothing" in allowed else st.just(0.0)
    max_classes = max(1, min(max_classes, max_logits))
    big_classes = max(max_classes, min(big_classes, max_logits))

    # the strategies that do not depend on earlier draws, built once (building them per draw
    # costs more than drawing)
    components = st.lists(st.tuples(st.sampled_from(_BODIES), st.sampled_from(_SCALES), st.sampled_from(_LOCS)),
                          min_size=1, max_size=3)
    rows = {k: st.tuples(st.integers(0, k - 1), st.integers(0, 2**32 - 1), st.booleans()) for k in (1, 2, 3)}
    gaps = st.none() | st.sampled_from(_GAPS)
    masks = st.none() | st.tuples(st.sampled_from((0.5, 0.9, 1.0)), st.booleans())
    singles = {}
    for d in dts:
        bits = 8 * FORMATS[d].itemsize
        single = st.one_of(st.sampled_from(_SYMBOLS).map(lambda s: ("symbol", s)),
                           st.floats(width={16: 16, 32: 32}.get(bits, 64) if d != "bfloat16" else 32)
                           .map(lambda v: ("float", v)),
                           st.integers(0, 2**bits - 1).map(lambda b: ("bits", b)))
        singles[d] = st.lists(st.tuples(st.integers(0, 2**16), single), max_size=4)
    seeds = st.integers(0, 2**32 - 1)
    S = SimpleNamespace(dtype=st.sampled_from(dts), layout=st.sampled_from(layouts), big=st.integers(0, 7),
                        small_c=st.integers(1, max_classes), big_c=st.integers(max_classes + 1, big_classes),
                        flag=st.booleans(), target=st.sampled_from(target_kinds), prob=st.sampled_from(_PROB),
                        prob_ignore=st.sampled_from((-100, -1)), ignore=st.sampled_from(ignore_modes),
                        beyond=st.integers(0, 3), weight=st.sampled_from(weight_modes), share=st.sampled_from((0.25, 1.0)),
                        reduction=st.sampled_from(reductions), eps=st.floats(0.0, 1.0),
                        index_dtype=st.sampled_from(("int64", "uint8")), memory=st.sampled_from(MEMORY_LAYOUTS))

    @st.composite
    def draw_problem(draw) -> Problem:
        dtype = draw(S.dtype)
        fmt = FORMATS[dtype]
        layout = draw(S.layout)
        big = big_classes > max_classes and draw(S.big) == 7
        c = draw(S.big_c if big else S.small_c)
        room = max(1, max_logits // c)  # samples that fit
        comps = draw(components)
        # one spec per sample (row): its component, its seed, whether it is ignored. Each row is
        # drawn from its own seed, so the shrinker can delete rows and keep the others as they
        # were (and a row's first classes do not change when C shrinks).
        row = rows[len(comps)]
        if layout == "unbatched":
            shape = (c,)
            specs = [draw(row)]
        elif layout == "batch":
            specs = draw(st.lists(row, max_size=min(max_batch, room)))
            shape = (len(specs), c)
        else:  # K-dim: the samples (deletable, like the rows of a batch) folded into (a, C, b[, 1])
            specs = draw(st.lists(row, min_size=1, max_size=min(4 * max_batch, room)))
            m = len(specs)
            a = draw(st.sampled_from([1] + [f for f in range(2, m + 1) if m % f == 0]))
            shape = (a, c, m // a, *((1,) if draw(S.flag) else ()))
        m = len(specs)
        gap = draw(gaps)  # a dominant target
        mask = draw(masks)  # a -inf mask: (fraction, the target too?)
        x = np.empty((m, c), np.float64)
        t = np.empty(m, np.int64)
        with np.errstate(over="ignore", invalid="ignore"):
            for r, (k, rseed, _) in enumerate(specs):
                kind, scale, loc = comps[k]
                x[r] = np.asarray(_body(np.random.default_rng([rseed, 0]), fmt, kind, scale, _value(loc, fmt), 1, c),
                                  ).astype(np.float64)[0]
                t[r] = np.random.default_rng([rseed, 1]).integers(0, c)
                if gap is not None and c > 1:
                    others = np.delete(x[r], t[r])
                    x[r, t[r]] = others.max() + gap
                if mask is not None:
                    masked = np.random.default_rng([rseed, 2]).random(c) < mask[0]
                    masked[t[r]] &= mask[1]
                    x[r, masked] = -np.inf
            x = x.astype(fmt.dtype)
        for where, (how, v) in draw(singles[dtype]):
            if x.size == 0:
                break
            i, j = divmod(where % x.size, c)
            if how == "bits":
                x[i, j] = np.array([v], np.dtype(f"u{fmt.itemsize}")).view(fmt.dtype)[0]
            else:
                with np.errstate(over="ignore"):
                    x[i, j] = np.array([_value(v, fmt) if how == "symbol" else v]).astype(fmt.dtype)[0]

        # targets, ignore_index
        if draw(S.target) == "prob":
            mode = draw(S.prob)
            target = np.zeros((m, c))
            for r, (_, rseed, _) in enumerate(specs):
                g = np.random.default_rng([rseed, 3])
                if mode == "normalised":
                    u = g.random(c) ** 4
                    target[r] = u / math.fsum(u.tolist())
                elif mode == "unnormalised":
                    target[r] = 2.0 * g.random(c)
                elif mode == "one-hot":
                    target[r, t[r]] = 1.0
            ignore_index = draw(S.prob_ignore)
        else:
            mode = draw(S.ignore)
            ignore_index = -100
            if mode == "minus-one":
                ignore_index = -1
            elif mode == "inside":
                ignore_index = draw(st.integers(0, c - 1))
            elif mode == "beyond":
                ignore_index = c + draw(S.beyond)
            if mode != "unused":
                ignored = np.array([mode == "all" or spec[2] for spec in specs], bool)
                t[ignored] = ignore_index
            target = t
        wmode = draw(S.weight)
        weight = None
        if wmode != "none":
            rng_w = np.random.default_rng([draw(seeds), 4])
            weight = 0.5 + 1.5 * rng_w.random(c)
            if wmode == "zeros":
                share = draw(S.share)
                weight[rng_w.permutation(c)[: max(1, round(share * c))]] = 0.0
            elif wmode == "signed":
                weight *= np.where(rng_w.random(c) < 0.5, -1.0, 1.0)
        eps = draw(smoothing)
        if eps is None:
            eps = draw(S.eps)
        reduction = draw(S.reduction)
        if target is t and _UINT8_TARGETS and draw(S.index_dtype) == "uint8":
            # Byte class indices, where they can hold every target and PyTorch takes them
            if ((t >= 0) & (t <= 255)).all() and _uint8_refused(len(shape), weight is not None, reduction, eps) is None:
                target = t.astype(np.uint8)
        # the layout the implementation receives the arrays in (contiguous first: it shrinks there);
        # one axis has no transposed class axis
        memory = draw(S.memory)
        if memory == "transposed-class" and len(shape) == 1:
            memory = "contiguous"
        return Problem(logits=_layout(x, shape), target=_layout(np.asarray(target), shape), weight=weight,
                       ignore_index=ignore_index, reduction=reduction, label_smoothing=eps, memory=memory)

    return draw_problem()


def traits(problem: Problem) -> set[str]:
    """What a problem exercises, read off the problem itself (the run's coverage figures)."""
    C = problem.num_classes
    out = {problem.dtype.name, "unbatched" if problem.logits.ndim == 1 else ("kdim" if problem.kdim else "2-D"),
           f"memory:{problem.memory}",
           f"reduction:{problem.reduction}", "C>300" if C > MAX_CLASSES else "C=1" if C == 1 else "C<=300"}
    x = problem.logits.astype(np.float64)
    fmt = problem.format
    with np.errstate(invalid="ignore"):
        flags = {"nan": np.isnan(x), "+inf": x == np.inf, "-inf": x == -np.inf, "±max": np.abs(x) == fmt.max,
                 "subnormal": (x != 0) & (np.abs(x) < fmt.tiny), "|x|>1e4": np.isfinite(x) & (np.abs(x) > 1e4)}
    out |= {f"logits:{k}" for k, v in flags.items() if v.any()}
    if problem.probability_target:
        t = problem.rows()[1].astype(np.float64)
        s = t.sum(axis=1)
        onehot = bool(t.size) and bool(((t == 0) | (t == 1)).all()) and bool(np.all(s == 1))
        out.add("target:prob:" + ("zeros" if not t.any() else "one-hot" if onehot else "normalised"
                                  if np.allclose(s, 1, atol=1e-2) else "unnormalised"))
    else:
        used = problem.target == problem.ignore_index
        where = "inside" if 0 <= problem.ignore_index < C else ("beyond" if problem.ignore_index >= C else "negative")
        out.add(f"target:{problem.target.dtype.name}")
        if used.any():
            out.add("ignore:all" if used.all() else f"ignore:{where}")
    w = problem.weight
    out.add("weight:none" if w is None else "weight:signed" if (w < 0).any() else
            "weight:zeros" if (w == 0).any() else "weight:positive")
    eps = problem.label_smoothing
    out.add(f"smoothing:{eps:g}" if eps in (0.0, 0.1, 1.0) else "smoothing:other")
    return out


# -- judging one problem ---------------------------------------------------------------------------


class _Cells:
    """The part of :class:`harness.results.Results` the sweeps' cell code writes to."""

    def __init__(self):
        self.cells: list[dict] = []

    def has(self, key) -> bool:
        return False

    def add_cell(self, cell: dict) -> None:
        self.cells.append(cell)

    def mark_not_applicable(self, key) -> None:
        pass


class Judge:
    """One implementation judged on problems the way a sweep judges a cell: called through a
    :class:`~harness.runner.Runner` (isolated for plugins, or as ``isolate`` says), the
    reference from the cache, the cells made by :mod:`harness.sweeps` with ``budgets`` (default:
    those in force, as for ``check``) and marked with the ``known`` failures. A cell's scenario
    is the name the problem would be saved under (:func:`case_name`), as ``check`` names it."""

    def __init__(self, entry, *, budgets: dict | None = None, known: list | None = None, isolate: bool | None = None,
                 timeout: float = 60.0, cache=None):
        from harness import budgets as budgets_mod
        from harness import sweeps
        from harness.cache import ReferenceCache
        from harness.runner import Runner, isolated

        self.entry = entry
        self.budgets = budgets if budgets is not None else budgets_mod.load()[0]
        self.known = known if known is not None else budgets_mod.load_known()[0]
        self.plan = sweeps.Plan([entry], [], [], self.budgets, timeout=timeout, cache=cache or ReferenceCache())
        self.runner = Runner(entry, isolate=isolated(entry, isolate), timeout=timeout)
        self.calls = 0

    @property
    def name(self) -> str:
        return self.entry.name

    def cells(self, problem: Problem) -> list[dict]:
        """Every cell of ``problem`` (accuracy, gradient and, where the reference has inf/NaN,
        special); none when the implementation does not support it."""
        from harness import campaign, sweeps

        self.calls += 1
        s = SimpleNamespace(name=case_name(problem))
        d = problem.dtype.name
        out = _Cells()
        computed = sweeps._compute(out, self.runner, self.entry, s, d, problem, list(vocabulary.KINDS))
        if computed is None or computed[1]:
            return []  # unsupported: nothing to judge
        exact = self.plan.cache.get_many([problem], workers=1)[0]
        sweeps._record(self.plan, out, self.entry, s, d, problem, exact, computed)
        campaign.mark_known(out.cells, self.known)
        return out.cells

    def failures(self, problem: Problem) -> list[dict]:
        """The failing or erroring cells that are not known failures."""
        return [c for c in self.cells(problem) if c["status"] in ("fail", "error") and not c.get("known")]

    def close(self) -> None:
        self.runner.close()


_JUDGES: dict = {}


def conforms(impl, problem: Problem, *, budgets: dict | None = None) -> None:
    """Assert that ``impl`` (a registry name, an ``--impl`` spec, or a :class:`harness.registry.
    Implementation`) passes every cell of ``problem``; AssertionError listing the failing cells.
    For users' hypothesis tests (``@given(problems())``); judges are kept per implementation."""
    from harness import registry

    key = (impl if isinstance(impl, str) else id(impl), id(budgets))
    judge = _JUDGES.get(key)
    if judge is None:
        if isinstance(impl, str):
            chosen, _ = registry.select([impl])
            entry = chosen[0]
            if entry.impl is None:
                raise registry.ImplementationError(entry.error or f"{impl}: could not load")
        else:
            if not isinstance(impl, registry.Implementation):
                impl = registry.as_implementation(impl, getattr(impl, "__name__", type(impl).__name__), "conforms")
            entry = registry.Entry(impl.name or "impl", impl.origin, impl)
        judge = _JUDGES[key] = Judge(entry, budgets=budgets, known=[])
    bad = judge.failures(problem)
    if bad:
        lines = [f"{c['impl']} {c['dtype']} {c['kind']} {c['status']}: {c['message']}" for c in bad]
        raise AssertionError(f"{problem!r}:\n  " + "\n  ".join(lines))


def settings_profile(name: str = "xent-harness-fuzz"):
    """Register (once) and return hypothesis settings for fuzzing: no deadline (a call may
    compute an exact reference), no example database, every health check off."""
    from hypothesis import HealthCheck, settings
    from hypothesis.errors import InvalidArgument

    try:
        return settings.get_profile(name)
    except InvalidArgument:
        settings.register_profile(name, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        return settings.get_profile(name)


# -- the search ------------------------------------------------------------------------------------


def signature(cell: dict) -> tuple[str, str, str]:
    """What makes two failing cells the same finding: (dtype, kind, what): what is "error",
    "special" (a wrong inf/NaN), "nonfinite" (inf/NaN where the contract is finite) or "budget"
    (finite, outside the budget)."""
    if cell["status"] == "error":
        what = "error"
    elif cell["kind"] == "special":
        what = "special"
    else:
        what = "nonfinite" if (cell.get("metrics") or {}).get("nonfinite_mismatch") else "budget"
    return cell["dtype"], cell["kind"], what


class _OutOfTime(BaseException):
    """Raised inside hypothesis' condition to stop a search (hypothesis lets it through)."""


@dataclass
class Request:
    impls: list[str] = field(default_factory=list)
    seconds: float = 60.0
    seed: int = 0
    dtypes: list[str] | None = None
    out: Path | str | None = None
    save_to: Path | str | None = None
    budgets: str | None = None
    known: str | None = None
    timeout: float = 60.0
    shrink_seconds: float = 60.0
    isolate: bool | None = None
    max_logits: int = MAX_LOGITS
    examples: int | None = None
    argv: list[str] | None = None
    reports: Path = Path("reports")


@dataclass
class Outcome:
    out: Path
    data: dict

    @property
    def findings(self) -> list[dict]:
        return self.data["findings"]

    @property
    def verdict(self) -> str:
        return self.data["summary"]["verdict"]


def _positive(flag: str, v, *, integer: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok or (integer and int(v) != v):
        raise FuzzError(f"{flag}: must be a positive {'integer' if integer else 'number of seconds'}, not {v!r}")


def _round_seed(seed: int, impl: str, rnd: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{impl}/{rnd}".encode()).digest()[:8], "big")


def _out_dir(req: Request) -> Path:
    from harness import campaign

    if req.out is not None:
        out = Path(req.out)
        if out.exists() and not out.is_dir():
            raise FuzzError(f"--out: {out} is a file; name a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FuzzError(f"--out: cannot create {out} ({exc.strerror or exc})") from None
        return out
    return campaign.new_run_dir(Path(req.reports), "fuzz-", error=FuzzError)


def _check(req: Request) -> None:
    _positive("--seconds", req.seconds)
    _positive("--shrink-seconds", req.shrink_seconds)
    _positive("--timeout", req.timeout)
    _positive("--max-logits", req.max_logits, integer=True)
    if req.examples is not None:
        _positive("--examples", req.examples, integer=True)
    if isinstance(req.seed, bool) or not isinstance(req.seed, int) or req.seed < 0:
        raise FuzzError(f"--seed: must be a non-negative integer, not {req.seed!r}")
    for d in req.dtypes or []:
        if d not in FORMATS:
            raise FuzzError(f"--dtype: unknown dtype {d!r}; use {', '.join(DTYPE_NAMES)}")
    save = Path(req.save_to) if req.save_to is not None else found_dir()
    if save.exists() and not save.is_dir():
        raise FuzzError(f"--save-to: {save} is a file; name a directory")
    here = save
    while not here.exists() and here != here.parent:
        here = here.parent
    if not os.access(here, os.W_OK):
        raise FuzzError(f"--save-to: {save} cannot be written ({here} is not writable); name a writable directory")
    if (save / golden.MANIFEST).exists():
        try:
            golden.load_manifest(save)
        except ValueError as exc:
            raise FuzzError(f"--save-to: {exc}") from None


def run(req: Request, *, log: Callable[[str], None] = print) -> Outcome:
    """``xent-harness fuzz``: see the module docstring. Bad input raises :class:`FuzzError`
    before anything is computed; the summary is ``<out>/fuzz.json``."""
    import sys

    from harness import budgets as budgets_mod
    from harness import registry, results

    _check(req)
    try:
        budget_table, budget_source = budgets_mod.load(req.budgets)
        known, known_source = budgets_mod.load_known(req.known)
    except (ValueError, budgets_mod.BudgetError) as exc:
        raise FuzzError(str(exc)) from None
    try:
        chosen, skipped = registry.select(req.impls, include_canaries=bool(req.impls),
                                          isolate=req.isolate is not False, timeout=req.timeout)
    except registry.ImplementationError as exc:
        raise FuzzError(str(exc)) from None
    if not chosen:
        raise FuzzError("--impl: no implementation available; see `xent-harness list`")
    out = _out_dir(req)
    save_to = Path(req.save_to) if req.save_to is not None else found_dir()
    for e in skipped:
        log(f"skip {e.name}: {e.unavailable() or registry.left_out(e, include_canaries=False) or vocabulary.CANARY_LEFT_OUT}")
    argv = list(sys.argv[1:]) if req.argv is None else list(req.argv)
    data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "run": {"id": out.name, "command": results.argv_command(argv), "argv": argv, "started": results.now(),
                    "seed": req.seed, "seconds": req.seconds, "shrink_seconds": req.shrink_seconds,
                    "dtypes": req.dtypes or list(DTYPE_NAMES), "save_to": str(save_to), "max_logits": req.max_logits,
                    "examples": req.examples},
            "provenance": results.provenance(threads=registry.default_threads()),
            "budgets": budget_table, "budgets_source": budget_source, "known_failures_source": known_source,
            "implementations": [], "findings": []}
    share = req.seconds / len(chosen)
    interrupted = False
    try:
        for entry in chosen:
            if entry.impl is None:
                log(f"error {entry.name}: {entry.error}")
                data["implementations"].append({"name": entry.name, "origin": entry.origin, "verdict": "error",
                                                "reason": entry.error})
                continue
            data["implementations"].append(_fuzz_one(entry, req, share, budget_table, known, save_to, log,
                                                     data["findings"]))
    except KeyboardInterrupt:  # the cases saved so far stay saved, and the summary says what they are
        interrupted = True
    failing = sorted({f["impl"] for f in data["findings"]} | {r["name"] for r in data["implementations"]
                                                              if r["verdict"] in ("fail", "error")})
    data["summary"] = {"verdict": "fail" if failing else "pass", "findings": len(data["findings"]),
                       "failing": failing}
    data["run"] |= {"finished": results.now(), "interrupted": interrupted}
    try:
        _atomic_write(out / SUMMARY, (results.dumps(data) + "\n").encode())
    except OSError as exc:
        raise FuzzError(f"--out: cannot write {out / SUMMARY} ({exc.strerror or exc})") from None
    if interrupted:
        log(f"interrupted: {len(data['findings'])} finding(s) saved; summary in {out / SUMMARY}")
        raise KeyboardInterrupt
    return Outcome(out, data)


def _fuzz_one(entry, req: Request, share: float, budget_table, known, save_to: Path, log,
              findings: list) -> dict:
    """One implementation's rounds of search and shrinking: its row; each finding is appended
    to ``findings`` as soon as it is saved."""
    from hypothesis import Phase, Verbosity, find, settings
    from hypothesis.errors import HypothesisException, NoSuchExample

    from harness import registry

    impl = entry.impl
    row = {"name": entry.name, "origin": entry.origin, "examples": 0, "shrink_examples": 0, "rounds": 0,
           "findings": 0, "coverage": {}}
    dtypes = [d for d in _dtypes(req.dtypes or DTYPE_NAMES) if d in impl.dtypes]
    if not dtypes:
        log(f"skip {entry.name}: supports none of the dtypes {', '.join(req.dtypes or DTYPE_NAMES)}")
        return row | {"verdict": "skipped", "reason": "no dtype in common"}
    strategy = problems(dtypes, impl.features & registry.FEATURES, max_logits=req.max_logits)
    conf = settings(settings_profile(), max_examples=10**9, phases=(Phase.generate, Phase.shrink),
                    verbosity=Verbosity.quiet, print_blob=False, report_multiple_bugs=False)
    judge = Judge(entry, budgets=budget_table, known=known, isolate=req.isolate, timeout=req.timeout)
    t_start = time.monotonic()
    t_end = t_start + share
    found_keys: set[tuple] = set()
    mine = 0
    coverage: Counter = Counter()
    drawn = [0]  # problems drawn by the search (not the shrinking), every round together
    try:
        rnd = 0
        while time.monotonic() < t_end and (req.examples is None or drawn[0] < req.examples):
            state = SimpleNamespace(found_at=None, best=None, last=None, searched=0, shrunk=0)

            def condition(problem, state=state, found_keys=found_keys):
                now = time.monotonic()
                if state.found_at is None:
                    if now >= t_end or (req.examples is not None and drawn[0] >= req.examples):
                        raise _OutOfTime
                    drawn[0] += 1
                    state.searched += 1
                    coverage.update(traits(problem))
                else:
                    if now - state.found_at > req.shrink_seconds:
                        raise _OutOfTime
                    state.shrunk += 1
                bad = judge.failures(problem)
                keys = {signature(c) for c in bad}
                if not keys - found_keys:
                    return False
                if state.found_at is None:
                    state.found_at = time.monotonic()
                state.last = (problem, bad)
                if state.best is None or problem.logits.size <= state.best[0].logits.size:
                    state.best = state.last
                return True

            seed = _round_seed(req.seed, entry.name, rnd)
            shrunk = "complete"
            try:
                minimal = find(strategy, condition, settings=conf, random=random.Random(seed))
                problem, bad = state.last if state.last and state.last[0] is minimal else (minimal, judge.failures(minimal))
            except _OutOfTime:
                if state.best is None:
                    break  # the search time is spent
                problem, bad = state.best
                shrunk = f"stopped after --shrink-seconds {req.shrink_seconds:g}"
            except NoSuchExample:
                break
            except HypothesisException as exc:  # e.g. a flaky implementation: keep the best seen
                if state.best is None:
                    raise
                problem, bad = state.best
                shrunk = f"stopped: {type(exc).__name__}"
            finally:
                row["examples"] += state.searched
                row["shrink_examples"] += state.shrunk
                row["rounds"] += 1
            if not bad:  # the minimal example passes when judged again: a nondeterministic implementation
                log(f"fuzz {entry.name}: a failure did not repeat on its minimal problem {problem!r}; stopping")
                break
            found_keys |= {signature(c) for c in bad}
            finding = {"impl": entry.name, "dtype": problem.dtype.name, "kinds": sorted({c["kind"] for c in bad}),
                       "messages": [c["message"] for c in bad], "seed": req.seed, "round": rnd,
                       "round_seed": seed, "found_after": state.searched, "shrink_examples": state.shrunk,
                       "shrunk": shrunk, "shape": list(problem.logits.shape), "logits": int(problem.logits.size),
                       "problem": repr(problem), "name": case_name(problem), "cells": bad}
            try:
                finding["file"] = str(save_case(problem, finding, save_to))
            except OSError as exc:  # the finding stands (exit 1); it is reported, not saved
                finding["file"] = None
                finding["save_error"] = f"--save-to: cannot write {exc.filename or save_to} ({exc.strerror or exc})"
                log(f"error {entry.name}: {finding['save_error']}")
            findings.append(finding)
            mine += 1
            log(f"FOUND {entry.name} {finding['dtype']} {','.join(finding['kinds'])} shape {finding['shape']}: "
                f"{finding['messages'][0]} -> {finding['file']}")
            rnd += 1
    finally:
        judge.close()
    seconds = time.monotonic() - t_start
    row |= {"seconds": round(seconds, 2), "findings": mine, "dtypes": dtypes,
            "verdict": "fail" if mine else "pass", "coverage": dict(sorted(coverage.items()))}
    what = f"{mine} finding(s)" if mine else "nothing found"
    log(f"fuzz {entry.name}: {row['examples']} problems drawn, {row['shrink_examples']} while shrinking, "
        f"{seconds:.1f} s, seed {req.seed}: {what}")
    return row


__all__ = ["FoundScenario", "Judge", "Request", "case_name", "conforms", "found_dir", "found_scenarios",
           "problems", "run", "save_case", "settings_profile", "traits"]
