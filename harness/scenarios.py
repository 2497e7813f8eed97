"""The scenario catalogue: named, seeded, documented cross-entropy problems.

The data lives in ``scenarios.toml`` next to this module (PyTorch OpInfo style: adding a case is
one table there); this module loads it, expands the templates, checks them, and turns each
scenario into a :class:`~harness.problem.Problem` per dtype with the generator named by its
``kind`` (:mod:`harness.generators`). The catalogue is these named scenarios (the regression
set), then the generated ones of :mod:`harness.space` (``space.toml``: a pairwise covering
design over the contract's axes, family "space", tagged ``gate`` or ``full`` by subset).

A scenario is deterministic: its problem for a dtype depends only on its name (through the seed),
its parameters and the dtype.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from types import MappingProxyType

from harness.formats import DTYPE_NAMES, FORMATS, format_of
from harness.generators import (
    COMMON_PARAMS,
    KIND_PARAMS,
    KINDS,
    POISON_ROWS,
    TARGET_CLASSES,
    TARGET_DTYPES,
    TARGET_MODES,
    WEIGHT_MODES,
    generate,
    resolve_ignore_index,
)
from harness.memory_layout import MEMORY_LAYOUTS
from harness.problem import REDUCTIONS, Problem

TOML_RESOURCE = "scenarios.toml"
#: quick: the --quick subset; special: inf/NaN/subnormal/max inputs; large: only with
#: --include-large; bits: bit-pattern logits; gate / full: a generated scenario (space.toml) in
#: the subset every run judges / only in --full runs.
KNOWN_TAGS = frozenset({"quick", "special", "large", "bits", "gate", "full"})
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")

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
    #: a generated scenario's value on each axis of the space (harness/space.py), else None
    coordinates: Mapping | None = field(default=None, hash=False, compare=False)

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
        return generate(self.kind, self.params, self.seed, fmt)


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
    for key, allowed in (("target_dtype", TARGET_DTYPES), ("target_classes", TARGET_CLASSES),
                         ("poison_rows", POISON_ROWS)):
        if key in params and params[key] not in allowed:
            raise ValueError(f"{where}: {key} must be one of {', '.join(allowed)}")
    if "memory" in params and params["memory"] not in MEMORY_LAYOUTS:
        raise ValueError(f"{where}: memory must be one of {', '.join(MEMORY_LAYOUTS)}")
    if ("poison" in params) != ("poison_rows" in params):
        raise ValueError(f"{where}: poison and poison_rows go together (a value and which rows get it)")
    try:
        ignore_index = resolve_ignore_index(params.get("ignore_index", -100), _classes(shape))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if params.get("target", "index") != "index" and ignore_index >= 0:
        raise ValueError(
            f"{where}: ignore_index must be negative with probability targets (PyTorch rejects "
            f"ignore_index >= 0 for them), got {params.get('ignore_index')!r}"
        )


def _classes(shape) -> int:
    return int(shape[0] if len(shape) == 1 else shape[1])


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
    """The named scenarios (scenarios.toml), then the generated space (space.toml)."""
    from harness import space

    text = resources.files("harness").joinpath(TOML_RESOURCE).read_text(encoding="utf-8")
    named = loads(text)
    generated = space.scenarios()
    clash = {s.name for s in named} & {s.name for s in generated}
    if clash:
        raise ValueError(f"space.toml: scenario names also in scenarios.toml: {', '.join(sorted(clash))}")
    return named + generated


def catalogue() -> list[Scenario]:
    """Every scenario, in the catalogue's order, then the saved fuzz findings (family "found",
    read from $XENT_FOUND or references/found/: see harness.found_cases) so check replays them (a
    fresh list; the scenarios are immutable)."""
    from harness.found_cases import found_scenarios

    return list(_catalogue()) + found_scenarios()


def families() -> list[str]:
    return list(dict.fromkeys(s.family for s in catalogue()))


def get(name: str) -> Scenario:
    for s in catalogue():
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
    cat = catalogue()
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
        "ignore_index": resolve_ignore_index(p.get("ignore_index", -100), _classes(s.shape)),
        "ignore_fraction": float(p.get("ignore_fraction", 0.0)),
        "label_smoothing": float(p.get("label_smoothing", 0.0)),
        "weight": p.get("weight"),
        "target": p.get("target", "index"),
        "target_dtype": p.get("target_dtype", "int64"),
        "memory": p.get("memory", "contiguous"),
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
        **({"space": dict(s.coordinates)} if s.coordinates is not None else {}),
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
