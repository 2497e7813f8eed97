"""The scenario space: the contract as a product of axes, covered pairwise.

``space.toml`` next to this module declares the axes (layout, target kind, weights,
ignore_index, ignored samples, label smoothing, reduction, batch size, C, numerical stress,
dtype), each a table of named values that are fragments of a scenario's parameters, the
constraints that exclude impossible combinations, a bound on one scenario's size and the
budgets of the subsets the commands run; its header is the full story. This module reads it,
builds a covering design (every pair of values of two axes that an allowed scenario can hold is
in at least one scenario) and turns each row into a :class:`~harness.scenarios.Scenario` of
family "space" (one dtype each; tags ``quick``, ``gate`` or ``full`` say which subset it is in).

The design is allpairspy's pairwise generator, whose filter is the constraints, followed by one
scenario for every allowed pair it left out: allpairspy stops at the first row that adds no new
pair, which with constraints can come before every pair is covered. It is deterministic: the
same file gives the same rows in the same order, hence the same names and seeds.

Subsets, chosen greedily over the design in its order (ties go to the earlier row):

* ``quick``: every value of every axis at least once, the row covering the most values not yet
  covered per unit of cost first (:func:`cost`: an estimate of its time, warm and cold);
* ``gate``: quick, then the rows adding the most pairs not yet covered per unit of cost while
  the subset's cost and scenario count stay within its budget;
* the rest (tag ``full``) runs with ``--full``.
"""

from __future__ import annotations

import math
import re
import tomllib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import combinations
from types import MappingProxyType

TOML_RESOURCE = "space.toml"
VALUE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
#: The pieces of a scenario's shape and dtype, each given by the values of one axis.
SHAPE_PIECES = ("unbatched", "spatial", "samples", "classes", "dtype")
#: What a value may carry besides parameters.
VALUE_META = ("why", "tags", "exact_path")
VALUE_TAGS = frozenset({"special", "bits"})
#: The terms of a scenario's cost (space.toml's [subsets.cost]).
COST_TERMS = ("scenario", "logit", "fast_path_sample", "fast_path_logit", "exact_path_sample", "exact_path_logit")


class SpaceError(ValueError):
    """A malformed space.toml: one line naming the entry."""


@dataclass(frozen=True)
class Value:
    axis: str
    name: str
    params: Mapping  # the scenario parameters this value sets
    pieces: Mapping  # the shape pieces it gives
    why: str
    tags: tuple[str, ...]
    exact_path: bool


@dataclass(frozen=True)
class Constraint:
    index: int
    when: Mapping  # axis -> frozenset of value names (empty: every scenario)
    exclude: Mapping  # axis -> frozenset of value names
    why: str

    def violated(self, row: Mapping[str, str]) -> bool:
        """Whether a (possibly partial) assignment of values breaks this constraint: only when
        every axis it names is assigned can it be broken, so a prefix that passes may still be
        completed, and one that fails cannot."""
        if not all(axis in row and row[axis] in names for axis, names in self.when.items()):
            return False
        return any(row.get(axis) in names for axis, names in self.exclude.items())


@dataclass(frozen=True)
class Space:
    axes: Mapping  # axis -> {value name: Value}, in the file's order
    constraints: tuple[Constraint, ...]
    family: str
    name_pattern: str
    max_logits: int
    max_exact_path_logits: int
    cost_model: Mapping  # [subsets.cost]: what a sample, a logit, a scenario cost
    quick_cost: int
    gate_cost: int
    gate_scenarios: int
    kind_axis: str
    piece_axis: Mapping  # shape piece -> the axis giving it

    def value(self, axis: str, name: str) -> Value:
        return self.axes[axis][name]

    def piece(self, row: Mapping[str, str], piece: str):
        axis = self.piece_axis[piece]
        return self.axes[axis][row[axis]].pieces.get(piece) if axis in row else None

    def logits(self, row: Mapping[str, str]) -> int | None:
        samples, classes = self.piece(row, "samples"), self.piece(row, "classes")
        return None if samples is None or classes is None else samples * classes

    def exact_path(self, row: Mapping[str, str]) -> bool:
        return any(self.axes[a][v].exact_path for a, v in row.items())

    def allows(self, row: Mapping[str, str]) -> bool:
        """Whether a (possibly partial) assignment breaks no constraint and no limit."""
        if any(c.violated(row) for c in self.constraints):
            return False
        n = self.logits(row)
        if n is None:
            return True
        limit = self.max_exact_path_logits if self.exact_path(row) else self.max_logits
        return n <= limit

    def complete(self, fixed: Mapping[str, str], prefer=None) -> dict[str, str] | None:
        """An allowed scenario holding the values ``fixed``, or None when there is none: a
        depth-first search over the axes in order, trying values in ``prefer(axis, partial)``
        order (default: the file's)."""
        axes = list(self.axes)
        row = dict(fixed)
        if not self.allows(row):
            return None

        def extend(i: int) -> bool:
            if i == len(axes):
                return True
            axis = axes[i]
            if axis in fixed:
                return extend(i + 1)
            names = prefer(axis, row) if prefer else list(self.axes[axis])
            for name in names:
                row[axis] = name
                if self.allows(row) and extend(i + 1):
                    return True
                del row[axis]
            return False

        return row if extend(0) else None


# ----------------------------------------------------------------------------------------------
# Parsing and checking the TOML


def _fail(where: str, msg: str):
    raise SpaceError(f"space.toml: {where}: {msg}")


def _table(data, where: str, allowed: Iterable[str] | None = None, required=()) -> dict:
    if not isinstance(data, dict):
        _fail(where, f"must be a table, got {data!r}")
    if allowed is not None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            _fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in data:
            _fail(where, f"{key} is required")
    return data


def _count(value, where: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        _fail(where, f"must be a {'non-negative' if zero else 'positive'} integer, got {value!r}")
    return value


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, "must be a non-empty string")
    return value


def _value(axis: str, name: str, data, allowed_params: frozenset, kinds) -> Value:
    where = f"axes.{axis}.values.{name}"
    if not VALUE_NAME_RE.match(name):
        _fail(where, f"value names must match {VALUE_NAME_RE.pattern}")
    data = _table(data, where, required=("why",))
    why = _text(data["why"], f"{where}.why")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or set(tags) - VALUE_TAGS:
        _fail(f"{where}.tags", f"must be a list of {', '.join(sorted(VALUE_TAGS))}, got {tags!r}")
    exact_path = data.get("exact_path", False)
    if not isinstance(exact_path, bool):
        _fail(f"{where}.exact_path", f"must be true or false, got {exact_path!r}")
    allowed = set(allowed_params)
    if "kind" in data:
        if data["kind"] not in kinds:
            _fail(f"{where}.kind", f"unknown kind {data['kind']!r}; use one of {', '.join(sorted(kinds))}")
        allowed |= {"kind"} | kinds[data["kind"]]
    params = {k: v for k, v in data.items() if k not in VALUE_META and k not in SHAPE_PIECES}
    unknown = sorted(set(params) - allowed)
    if unknown:
        kind = f" for kind {data['kind']!r}" if "kind" in data else ""
        _fail(where, f"unknown parameter(s) {', '.join(unknown)}{kind}; allowed: {', '.join(sorted(allowed))}")
    pieces = {k: data[k] for k in SHAPE_PIECES if k in data}
    if "unbatched" in pieces and pieces["unbatched"] is not True:
        _fail(f"{where}.unbatched", "must be true (leave it out for a batched layout)")
    if "spatial" in pieces:
        d = pieces["spatial"]
        if not isinstance(d, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in d):
            _fail(f"{where}.spatial", f"must be a list of positive integers ([] for (N, C)), got {d!r}")
    for key in ("samples", "classes"):
        if key in pieces:
            _count(pieces[key], f"{where}.{key}")
    if "dtype" in pieces:
        from harness.formats import DTYPE_NAMES

        if pieces["dtype"] not in DTYPE_NAMES:
            _fail(f"{where}.dtype", f"must be one of {', '.join(DTYPE_NAMES)}, got {pieces['dtype']!r}")
    return Value(axis, name, MappingProxyType(params), MappingProxyType(pieces), why, tuple(tags), exact_path)


def _piece_axes(axes: dict) -> tuple[str, dict]:
    """The axis naming the generator (every value has ``kind``) and the axis giving each shape
    piece (the layout axis gives ``unbatched`` or ``spatial``)."""

    def giving(keys: tuple[str, ...], label: str) -> str:
        found = [a for a, vals in axes.items() if any(set(keys) & set(v.pieces) | set(keys) & set(v.params) for v in vals.values())]
        if len(found) != 1:
            _fail("axes", f"exactly one axis must give {label}, found {len(found)} ({', '.join(found) or 'none'})")
        axis = found[0]
        for v in axes[axis].values():
            if not set(keys) & (set(v.pieces) | set(v.params)):
                _fail(f"axes.{axis}.values.{v.name}", f"every value of axis {axis} must give {label}")
        return axis

    kind_axis = giving(("kind",), "kind (the generator)")
    layout = giving(("unbatched", "spatial"), "the layout (unbatched = true or spatial = [...])")
    pieces = {"unbatched": layout, "spatial": layout}
    for piece in ("samples", "classes", "dtype"):
        pieces[piece] = giving((piece,), piece)
    return kind_axis, pieces


def _check_disjoint(axes: dict) -> None:
    owner: dict[str, str] = {}
    for axis, vals in axes.items():
        for v in vals.values():
            for key in v.params:
                if owner.setdefault(key, axis) != axis:
                    _fail(f"axes.{axis}.values.{v.name}", f"sets {key!r}, which axis {owner[key]} also sets; one axis per parameter")


def _constraint(i: int, data, axes: dict) -> Constraint:
    where = f"constraint #{i + 1}"
    data = _table(data, where, ("when", "exclude", "why"), ("exclude", "why"))
    why = _text(data["why"], f"{where}.why")
    where = f"constraint #{i + 1} ({why[:40]}…)" if len(why) > 40 else f"constraint #{i + 1} ({why})"

    def names(part: str) -> dict:
        table = _table(data.get(part, {}), f"{where}.{part}")
        out = {}
        for axis, listed in table.items():
            if axis not in axes:
                _fail(f"{where}.{part}", f"unknown axis {axis!r}; axes: {', '.join(axes)}")
            if not isinstance(listed, list) or not listed:
                _fail(f"{where}.{part}.{axis}", f"must be a non-empty list of value names, got {listed!r}")
            for name in listed:
                if name not in axes[axis]:
                    _fail(f"{where}.{part}.{axis}", f"axis {axis} has no value {name!r}; its values: {', '.join(axes[axis])}")
            out[axis] = frozenset(listed)
        return out

    exclude = names("exclude")
    if not exclude:
        _fail(f"{where}.exclude", "must name at least one axis")
    return Constraint(i, MappingProxyType(names("when")), MappingProxyType(exclude), why)


def parse(data: Mapping) -> Space:
    """The space of a parsed space.toml; SpaceError names the first bad entry."""
    from harness.generators import COMMON_PARAMS, KIND_PARAMS

    data = _table(dict(data), "top level", ("design", "limits", "subsets", "axes", "constraint"),
                  ("design", "limits", "subsets", "axes"))
    design = _table(data["design"], "design", ("family", "name"), ("family", "name"))
    limits = _table(data["limits"], "limits", ("logits", "exact_path_logits"), ("logits", "exact_path_logits"))
    subsets = _table(data["subsets"], "subsets", ("cost", "quick", "gate"), ("cost", "quick", "gate"))
    cost = _table(subsets["cost"], "subsets.cost", COST_TERMS, COST_TERMS)
    quick = _table(subsets["quick"], "subsets.quick", ("cost",), ("cost",))
    gate = _table(subsets["gate"], "subsets.gate", ("cost", "scenarios"), ("cost", "scenarios"))
    kinds = {k: frozenset(v) for k, v in KIND_PARAMS.items()}
    axes: dict[str, dict[str, Value]] = {}
    raw_axes = _table(data["axes"], "axes")
    if len(raw_axes) < 2:
        _fail("axes", "a pairwise design needs at least two axes")
    for axis, body in raw_axes.items():
        body = _table(body, f"axes.{axis}", ("why", "values"), ("why", "values"))
        _text(body["why"], f"axes.{axis}.why")
        values = _table(body["values"], f"axes.{axis}.values")
        if not values:
            _fail(f"axes.{axis}.values", "needs at least one value")
        axes[axis] = {name: _value(axis, name, v, COMMON_PARAMS, kinds) for name, v in values.items()}
    kind_axis, piece_axis = _piece_axes(axes)
    _check_disjoint(axes)
    constraints = data.get("constraint", [])
    if not isinstance(constraints, list):
        _fail("constraint", "must be an array of tables [[constraint]]")
    return Space(
        axes=MappingProxyType(axes),
        constraints=tuple(_constraint(i, c, axes) for i, c in enumerate(constraints)),
        family=_text(design["family"], "design.family"),
        name_pattern=_text(design["name"], "design.name"),
        max_logits=_count(limits["logits"], "limits.logits"),
        max_exact_path_logits=_count(limits["exact_path_logits"], "limits.exact_path_logits"),
        cost_model=MappingProxyType({k: _count(cost[k], f"subsets.cost.{k}", zero=True) for k in COST_TERMS}),
        quick_cost=_count(quick["cost"], "subsets.quick.cost"),
        gate_cost=_count(gate["cost"], "subsets.gate.cost"),
        gate_scenarios=_count(gate["scenarios"], "subsets.gate.scenarios"),
        kind_axis=kind_axis,
        piece_axis=MappingProxyType(piece_axis),
    )


# ----------------------------------------------------------------------------------------------
# The design


def pairs_of(row: Mapping[str, str], axes: Iterable[str]) -> set[tuple]:
    """The pairs ((axis, value), (axis, value)) a scenario holds, axes in ``axes`` order."""
    cells = [(a, row[a]) for a in axes]
    return set(combinations(cells, 2))


def design(space: Space) -> list[dict[str, str]]:
    """The rows (axis -> value name) of the covering design, in a fixed order."""
    from collections import OrderedDict

    from allpairspy import AllPairs

    axes = list(space.axes)
    # allpairspy fills rows axis by axis; its designs are smallest with the largest axes first
    order = sorted(axes, key=lambda a: -len(space.axes[a]))

    def allowed(prefix: list[str]) -> bool:
        return space.allows(dict(zip(order, prefix)))

    params = OrderedDict((a, list(space.axes[a])) for a in order)
    rows = [{a: getattr(r, a) for a in axes} for r in AllPairs(params, filter_func=allowed)]
    covered = set().union(*(pairs_of(r, axes) for r in rows)) if rows else set()
    # every pair allpairspy left out gets a scenario of its own, completed so that it also holds
    # as many other uncovered pairs as the search finds first
    for pair in _all_pairs(space):
        if pair in covered:
            continue
        row = space.complete(dict(pair), _most_new_pairs_first(space, covered))
        if row is None:
            continue  # no allowed scenario holds this pair
        row = {x: row[x] for x in axes}
        rows.append(row)
        covered |= pairs_of(row, axes)
    return rows


def _most_new_pairs_first(space: Space, covered: set):
    """A value order for :meth:`Space.complete`: the values making the most pairs not in
    ``covered`` with the values already chosen first, the file's order between equals."""
    order = {a: i for i, a in enumerate(space.axes)}

    def prefer(axis: str, partial: Mapping[str, str]) -> list[str]:
        def new_pairs(name: str) -> int:
            cells = [(x, v) for x, v in partial.items() if x != axis]
            return sum(tuple(sorted([(x, v), (axis, name)], key=lambda c: order[c[0]])) not in covered
                       for x, v in cells)

        return sorted(space.axes[axis], key=lambda name: -new_pairs(name))  # sorted is stable

    return prefer


def _all_pairs(space: Space) -> list[tuple]:
    axes = list(space.axes)
    return [((a, va), (b, vb)) for a, b in combinations(axes, 2) for va in space.axes[a] for vb in space.axes[b]]


def coverable_pairs(space: Space) -> set[tuple]:
    """Every pair of values of two axes that some allowed scenario holds."""
    return {p for p in _all_pairs(space) if space.complete(dict(p)) is not None}


# ----------------------------------------------------------------------------------------------
# Rows -> scenarios


def shape_of(space: Space, row: Mapping[str, str]) -> list[int]:
    """The logits' shape of a row: (C,) unbatched; else (N, C, d1, ...) with N·d1·… samples
    (every d 1 for one sample). A row the constraints should have excluded is an error."""
    samples, classes = space.piece(row, "samples"), space.piece(row, "classes")
    where = f"scenario {_label(space, row)}"
    if space.piece(row, "unbatched"):
        if samples != 1:
            raise SpaceError(f"space.toml: {where}: an unbatched input is one sample, not {samples}; "
                             "add a [[constraint]] excluding this combination")
        return [classes]
    spatial = list(space.piece(row, "spatial"))
    if samples == 1:
        spatial = [1] * len(spatial)
    positions = math.prod(spatial)
    if samples % positions:
        raise SpaceError(f"space.toml: {where}: {samples} samples do not split into N × {positions} positions "
                         f"({spatial}); choose samples divisible by every layout's positions")
    return [samples // positions, classes, *spatial]


def _label(space: Space, row: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{a}={row[a]}" for a in space.axes if a in row) + "}"


def cost(space: Space, row: Mapping[str, str]) -> int:
    """What a scenario costs a run, in space.toml's units (~1 us on one core): warm, its logits
    and a fixed part; cold, its reference on the fast or the MPFR path as well."""
    c = space.cost_model
    samples, logits = space.piece(row, "samples"), space.logits(row)
    path = "exact_path" if space.exact_path(row) else "fast_path"
    return (c["scenario"] + c["logit"] * logits
            + c[f"{path}_sample"] * samples + c[f"{path}_logit"] * logits)


def subsets(space: Space, rows: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """The indices of the quick and gate rows (see the module docstring)."""
    axes = list(space.axes)
    costs = [cost(space, r) for r in rows]

    def greedy(items: list[set], chosen: list[int], budget: int, count: int) -> list[int]:
        covered = set().union(*(items[i] for i in chosen)) if chosen else set()
        chosen, spent = list(chosen), sum(costs[i] for i in chosen)
        while len(chosen) < count:
            best, best_gain = None, 0.0
            for i, it in enumerate(items):
                if i in chosen or spent + costs[i] > budget:
                    continue
                new = len(it - covered)
                if new and new / costs[i] > best_gain:
                    best, best_gain = i, new / costs[i]
            if best is None:
                break
            chosen.append(best)
            covered |= items[best]
            spent += costs[best]
        return chosen

    values = [{(a, r[a]) for a in axes} for r in rows]
    quick = greedy(values, [], space.quick_cost, len(rows))
    missing = set().union(*values) - set().union(*(values[i] for i in quick)) if rows else set()
    if missing:
        axis, name = sorted(missing)[0]
        raise SpaceError(f"space.toml: subsets.quick: its cost = {space.quick_cost:,} does not reach every value "
                         f"(not {axis} = {name!r}); raise it")
    if sum(costs[i] for i in quick) > space.gate_cost or len(quick) > space.gate_scenarios:
        raise SpaceError("space.toml: subsets.gate: its budget is smaller than the quick subset it includes")
    gate = greedy([pairs_of(r, axes) for r in rows], quick, space.gate_cost, space.gate_scenarios)
    return sorted(quick), sorted(gate)


def build(space: Space):
    """The space's scenarios, in the design's order."""
    from harness.scenarios import NAME_RE, Scenario, _check_params, _freeze

    rows = design(space)
    quick, gate = subsets(space, rows)
    quick, gate = set(quick), set(gate)
    out, names = [], set()
    for i, row in enumerate(rows):
        label = _label(space, row)
        try:
            name = space.name_pattern.format(index=i + 1, **row)
        except (KeyError, IndexError, ValueError) as e:
            raise SpaceError(f"space.toml: design.name: cannot format {space.name_pattern!r}: {e!r}") from None
        if not NAME_RE.match(name) or name in names:
            raise SpaceError(f"space.toml: design.name: {name!r} (scenario {label}) "
                             f"{'is a duplicate' if name in names else f'does not match {NAME_RE.pattern}'}")
        names.add(name)
        values = [space.value(a, row[a]) for a in space.axes]
        params = {"shape": shape_of(space, row)}
        for v in values:
            params.update(v.params)
        kind = params.pop("kind")
        try:
            _check_params(kind, params, f"space.toml: scenario {name} {label}")
        except ValueError as exc:
            raise SpaceError(str(exc)) from None
        tags = {t for v in values for t in v.tags}
        tags |= {"quick", "gate"} if i in quick else {"gate"} if i in gate else {"full"}
        out.append(Scenario(
            name=name,
            family=space.family,
            why="; ".join(v.why for v in values),
            kind=kind,
            params=_freeze(params),
            dtypes=(space.piece(row, "dtype"),),
            seed=zlib.crc32(name.encode()),
            tags=tuple(sorted(tags)),
            coordinates=MappingProxyType(dict(row)),
        ))
    return tuple(out)


def loads(text: str) -> Space:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"space.toml: not valid TOML ({exc})") from None
    return parse(data)


@cache
def load() -> Space:
    """The package's space (space.toml next to this module)."""
    return loads(resources.files("harness").joinpath(TOML_RESOURCE).read_text(encoding="utf-8"))


@cache
def scenarios():
    """The package's generated scenarios (a tuple, built once)."""
    return build(load())


__all__ = [
    "Constraint",
    "Space",
    "SpaceError",
    "Value",
    "build",
    "cost",
    "coverable_pairs",
    "design",
    "load",
    "loads",
    "pairs_of",
    "parse",
    "scenarios",
    "shape_of",
    "subsets",
]
