"""The scenario space (harness/space.py, harness/space.toml): a covering design over the axes of
the contract. The pairs, constraints and limits are re-derived here from the TOML by code of the
test's own, and every generated problem is measured against the values its name claims."""

from __future__ import annotations

import json
import math
import tomllib
import zlib
from importlib import resources
from itertools import combinations

import numpy as np
import pytest

from harness import campaign, generators, scenarios, space
from harness.cli import main
from harness.formats import FORMATS

TEXT = resources.files("harness").joinpath("space.toml").read_text(encoding="utf-8")
DATA = tomllib.loads(TEXT)
AXES = {axis: body["values"] for axis, body in DATA["axes"].items()}
GENERATED = space.scenarios()
ROWS = [dict(s.coordinates) for s in GENERATED]


# -- the test's own reading of the constraints and limits ------------------------------------------
def _piece(row, key):
    for axis, name in row.items():
        if key in AXES[axis][name]:
            return AXES[axis][name][key]
    return None


def _breaks(row: dict) -> bool:
    """Whether a partial row already breaks a constraint or a limit (as the TOML's header says)."""
    for c in DATA.get("constraint", []):
        when = c.get("when", {})
        if all(a in row and row[a] in names for a, names in when.items()) and any(
            row.get(a) in names for a, names in c["exclude"].items()
        ):
            return True
    samples, classes = _piece(row, "samples"), _piece(row, "classes")
    if samples is not None and classes is not None:
        exact = any(AXES[a][v].get("exact_path", False) for a, v in row.items())
        limits = DATA["limits"]
        if samples * classes > limits["exact_path_logits" if exact else "logits"]:
            return True
    return False


def _completable(fixed: dict) -> bool:
    axes = [a for a in AXES if a not in fixed]

    def search(row, i):
        if _breaks(row):
            return False
        if i == len(axes):
            return True
        return any(search({**row, axes[i]: v}, i + 1) for v in AXES[axes[i]])

    return search(dict(fixed), 0)


def _pairs(row: dict) -> set:
    return {frozenset([(a, row[a]), (b, row[b])]) for a, b in combinations(AXES, 2)}


@pytest.fixture(scope="module")
def coverable() -> set:
    out = set()
    for a, b in combinations(AXES, 2):
        for va in AXES[a]:
            for vb in AXES[b]:
                if _completable({a: va, b: vb}):
                    out.add(frozenset([(a, va), (b, vb)]))
    return out


@pytest.fixture(scope="module")
def problems():
    return {s.name: s.problem(s.dtypes[0]) for s in GENERATED}


def _subset(tag):
    return [s for s in GENERATED if tag in s.tags]


# -- the design ------------------------------------------------------------------------------------
def test_every_allowed_pair_is_covered(coverable):
    covered = set().union(*(_pairs(r) for r in ROWS))
    assert coverable <= covered, sorted(map(sorted, coverable - covered))[:5]
    # the design is a real reduction of the product, and far from a list of the pairs
    assert len(GENERATED) < len(coverable) / 5
    assert len(coverable) > 1500


def test_no_scenario_breaks_a_constraint_or_a_limit():
    for row in ROWS:
        assert set(row) == set(AXES)
        assert not _breaks(row), row


def test_every_value_that_some_scenario_may_hold_is_in_the_design():
    for axis, values in AXES.items():
        for name in values:
            held = any(r[axis] == name for r in ROWS)
            assert held == _completable({axis: name}), (axis, name)


def test_two_loads_give_the_same_scenarios():
    again = space.build(space.loads(TEXT))
    assert [s.name for s in again] == [s.name for s in GENERATED]
    for a, b in zip(again, GENERATED):
        assert repr(dict(a.params)) == repr(dict(b.params))  # repr: a NaN parameter equals itself
        assert (a.seed, a.tags, a.why, a.kind, a.dtypes) == (b.seed, b.tags, b.why, b.kind, b.dtypes)
        assert dict(a.coordinates) == dict(b.coordinates)
    for s in GENERATED[::17]:
        assert s.problem(s.dtypes[0]).digest == again[GENERATED.index(s)].problem(s.dtypes[0]).digest


def test_names_seeds_and_descriptions():
    pattern = DATA["design"]["name"]
    for i, (s, row) in enumerate(zip(GENERATED, ROWS)):
        assert s.name == pattern.format(index=i + 1, **row)
        assert scenarios.NAME_RE.match(s.name)
        assert s.seed == zlib.crc32(s.name.encode())
        assert s.family == DATA["design"]["family"]
        assert s.dtypes == (AXES["dtype"][row["dtype"]]["dtype"],)
        # the description is one phrase per axis, in the file's order
        assert s.why == "; ".join(AXES[a][row[a]]["why"] for a in AXES)
    assert len({s.name for s in GENERATED}) == len(GENERATED)


def test_the_catalogue_holds_the_named_regression_set_and_the_space():
    cat = scenarios.catalogue()
    names = [s.name for s in cat]
    named = scenarios.loads(resources.files("harness").joinpath("scenarios.toml").read_text(encoding="utf-8"))
    assert names[: len(named)] == [s.name for s in named]
    assert {s.name for s in GENERATED} <= set(names)
    assert scenarios.get(GENERATED[0].name) is GENERATED[0]
    assert [s.name for s in scenarios.select(["space"])] == [s.name for s in GENERATED]
    assert {s.name for s in scenarios.select(["tag:full"])} == {s.name for s in _subset("full")}


# -- the subsets -----------------------------------------------------------------------------------
def _values(subset):
    return {(a, s.coordinates[a]) for s in subset for a in AXES}


def test_gate_and_quick_hold_every_value_and_nest():
    every = {(a, r[a]) for r in ROWS for a in AXES}
    quick, gate, full = _subset("quick"), _subset("gate"), _subset("full")
    assert _values(quick) == every and _values(gate) == every
    assert {s.name for s in quick} < {s.name for s in gate}
    assert {s.name for s in gate}.isdisjoint({s.name for s in full})
    assert len(gate) + len(full) == len(GENERATED)
    sub = DATA["subsets"]
    assert sum(_cost(s) for s in quick) <= sub["quick"]["cost"]
    assert sum(_cost(s) for s in gate) <= sub["gate"]["cost"]
    assert len(gate) <= sub["gate"]["scenarios"]
    assert len(quick) < len(gate) / 2


def _cost(s) -> int:
    """A scenario's cost as space.toml's header defines it (the test's own arithmetic)."""
    c, row = DATA["subsets"]["cost"], dict(s.coordinates)
    path = "exact_path" if any(AXES[a][v].get("exact_path", False) for a, v in row.items()) else "fast_path"
    return c["scenario"] + c["logit"] * s.size + c[f"{path}_sample"] * _piece(row, "samples") + c[f"{path}_logit"] * s.size


def test_the_gate_leaves_the_costliest_scenarios_to_full():
    gate, full = _subset("gate"), _subset("full")
    assert max(_cost(s) for s in gate) < max(_cost(s) for s in full)
    # a long batch on the MPFR path costs a minute cold: none is in the gate
    long_exact = [s for s in GENERATED if _cost(s) > 60_000_000]
    assert long_exact and not set(long_exact) & set(gate)
    assert all(space.cost(space.load(), dict(s.coordinates)) == _cost(s) for s in GENERATED)


def test_the_gate_covers_more_pairs_than_quick(coverable):
    quick = set().union(*(_pairs(dict(s.coordinates)) for s in _subset("quick")))
    gate = set().union(*(_pairs(dict(s.coordinates)) for s in _subset("gate")))
    assert quick < gate <= coverable
    assert len(gate) >= 0.75 * len(coverable)


def test_quick_still_holds_every_family_of_the_named_catalogue():
    quick = scenarios.select(quick=True)
    # but the language models' (65.7 million logits at the least) and the saved fuzz findings
    assert set(scenarios.families()) - {"llm", "found"} <= {s.family for s in quick}


def _picked(tmp_path, monkeypatch, **kw) -> list[str]:
    from harness import sweeps

    monkeypatch.setattr(sweeps, "run", lambda *a, **k: None)  # only what the campaign picks
    req = campaign.Request(kinds=campaign.CHECK, impls=["numpy"], out=tmp_path / "run", force=True, argv=["check"], **kw)
    done = campaign.run(req, log=lambda m: None)
    return [s["name"] for s in done.data["scenarios"]]


def test_check_runs_the_gate_and_full_the_whole_space(tmp_path, monkeypatch):
    gate = _picked(tmp_path, monkeypatch)
    assert {s.name for s in _subset("gate")} <= set(gate) and not set(gate) & {s.name for s in _subset("full")}
    assert "scale-1" in gate and "large-c-32768" not in gate  # the named regression set, as before
    full = _picked(tmp_path, monkeypatch, full=True)
    assert {s.name for s in GENERATED} <= set(full)
    quick = _picked(tmp_path, monkeypatch, quick=True)
    assert {s.name for s in _subset("quick")} <= set(quick) and not set(quick) & {s.name for s in _subset("full")}
    named = _picked(tmp_path, monkeypatch, scenarios=[_subset("full")[0].name])
    assert named == [_subset("full")[0].name]  # a scenario named is run whatever its subset


def test_resume_keeps_to_the_subset_it_started_with(tmp_path, monkeypatch):
    from harness import sweeps

    monkeypatch.setattr(sweeps, "run", lambda *a, **k: None)
    req = dict(kinds=campaign.CHECK, impls=["numpy"], scenarios=["scale-1"], out=tmp_path / "run", argv=["check"])
    first = campaign.run(campaign.Request(**req), log=lambda m: None)
    with pytest.raises(campaign.CampaignError, match=r"--full \(off then, on now\)"):
        campaign.run(campaign.Request(**req, resume=True, full=True), log=lambda m: None)
    # a run recorded before --full existed did not ask for it, and resumes without it
    path = first.out / "results.json"
    data = json.loads(path.read_text())
    del data["run"]["request"]["full"]
    path.write_text(json.dumps(data))
    assert campaign.run(campaign.Request(**req, resume=True), log=lambda m: None).verdict == "pass"


def test_full_and_quick_together_are_a_usage_error(capsys):
    assert main(["check", "--full", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--full" in err and "--quick" in err and "\n" not in err


def test_list_shows_every_generated_scenario(capsys):
    assert main(["list", "--scenarios"]) == 0
    out = capsys.readouterr().out
    for s in GENERATED:
        assert f"{s.name} " in out
    assert main(["list", "--scenarios", "--scenario", "space", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [s.name for s in GENERATED]
    assert all(r["space"] == dict(s.coordinates) and r["seed"] == s.seed for r, s in zip(rows, GENERATED))


# -- every problem is what its values say ----------------------------------------------------------
def test_every_generated_problem_measures_as_its_values(problems):
    seen = set()
    for s, row in zip(GENERATED, ROWS):
        p = problems[s.name]
        x = p.logits.astype(np.float64)
        c, samples = _piece(row, "classes"), _piece(row, "samples")
        assert (p.num_classes, p.num_samples, p.dtype.name) == (c, samples, s.dtypes[0]), s.name
        layout = row["layout"]
        assert p.logits.ndim == {"unbatched": 1, "2d": 2}.get(layout, 2 + len(AXES["layout"][layout].get("spatial", []))), s.name
        assert p.reduction == row["reduction"]
        assert p.label_smoothing == AXES["smoothing"][row["smoothing"]].get("label_smoothing", 0.0)
        ii = {"default": -100, "minus-one": -1, "inside": c - 1, "beyond": c}[row["ignore_index"]]
        assert p.ignore_index == ii, s.name
        _, t = p.rows()
        target = row["target"]
        if target.startswith("prob"):
            assert p.probability_target and row["ignored"] == "none"
            sums = t.astype(np.float64).sum(axis=1)
            if target == "prob-raw":
                assert (t >= 0).all() and (c == 1 or not np.allclose(sums, 1.0))
            else:
                assert np.allclose(sums, 1.0, rtol=1e-2), s.name
            if target == "prob-onehot":
                assert ((t == 0) | (t == 1)).all() and (t == 1).sum(axis=1).max() == 1
            if target == "prob-zeros" and c >= 8:
                assert (t == 0).mean() > 0.5
        else:
            assert p.target.dtype == (np.uint8 if target == "index-uint8" else np.int64), s.name
            ignored = t.astype(np.int64) == ii
            count = int(ignored.sum())
            if row["ignored"] == "all":
                assert count == samples
            elif row["ignored"] == "some":
                assert 0 < count < samples and count >= round(0.25 * samples)
            elif row["ignore_index"] != "inside":  # inside [0, C): targets may fall on it by chance
                assert count == 0
            if target == "index-inexact":
                kept = t[~ignored].astype(np.int64)
                assert (kept % 2 == 1).all() and (kept > (2048 if c > 2049 else 256)).all(), s.name
                with np.errstate(over="ignore"):  # float16 rounds indices past 65504 to inf
                    as16 = kept.astype(np.float16 if c > 2049 else FORMATS["bfloat16"].dtype).astype(np.float64)
                assert (as16 != kept).all()
        w = None if p.weight is None else p.weight.astype(np.float64)
        weight = row["weight"]
        assert (w is None) == (weight == "none")
        if weight == "positive":
            assert (w > 0).all()
        elif weight == "negative":
            assert (w < 0).any()
        elif weight == "some-zero":
            assert (w == 0).any() and (c < 4 or (w > 0).any())
        elif weight == "kept-zero":
            if p.probability_target:
                assert (w == 0).all()
            else:
                kept = t[t.astype(np.int64) != ii].astype(np.int64)
                assert (w[kept] == 0).all()
        tags = set(s.tags)
        if not np.isfinite(x).all():
            assert "special" in tags, s.name
        stress = row["stress"]
        if stress.startswith(("mask-", "posinf-", "nan-")):
            assert not np.isfinite(x).all(), s.name
        if stress.endswith(("-kept", "-ignored")):
            xr, tr = p.rows()
            bad = ~np.isfinite(xr.astype(np.float64)).all(axis=1)
            ign = (tr.astype(np.int64) == ii) if not p.probability_target else np.zeros(len(tr), bool)
            assert (bad == (~ign if stress.endswith("-kept") else ign)).all(), s.name
        if stress == "subnormal":
            assert (np.abs(x) < FORMATS[s.dtypes[0]].tiny).all()
        seen.add(row["stress"])
    assert seen == {v for v in AXES["stress"] if any(r["stress"] == v for r in ROWS)}


def test_positions_differ_in_range_across_a_kdim_input(problems):
    checked = 0
    for s, row in zip(GENERATED, ROWS):
        if row["stress"] != "position-ranges" or s.size < 1000 or row["dtype"] == "float16":
            continue
        p = problems[s.name]
        x = np.moveaxis(p.logits.astype(np.float64), 1, -1)  # (N, d..., C)
        spread = x.std(axis=(0, -1)).reshape(-1)  # one per position
        assert spread.max() / spread.min() > 1e4, s.name
        checked += 1
    assert checked or not any(r["stress"] == "position-ranges" and _piece(r, "samples") > 24 for r in ROWS)


# -- the generator features the space uses ---------------------------------------------------------
F32 = FORMATS["float32"]


def _gen(kind="normal", **p):
    return generators.generate(kind, {"shape": [64, 40], **p}, 7, F32)


def test_weight_modes():
    p = _gen(weight="negative")
    w = p.weight.astype(np.float64)
    assert (w < 0).sum() == 40 // 3 and (w > 0).sum() == 40 - 40 // 3
    p = _gen(weight="kept-zero", ignore_fraction=0.25)
    w, t = p.weight.astype(np.float64), p.target
    kept = t[t != -100]
    assert (w[kept] == 0).all() and (w > 0).any()
    p = _gen(weight="kept-zero", target="prob")
    assert (p.weight == 0).all()
    with pytest.raises(ValueError, match="weight: unknown mode"):
        _gen(weight="heavy")


def test_ignore_index_relative_to_c():
    assert generators.resolve_ignore_index("C", 40) == 40
    assert generators.resolve_ignore_index("C-1", 40) == 39
    assert generators.resolve_ignore_index("C+3", 40) == 43
    assert generators.resolve_ignore_index(-7, 40) == -7
    p = _gen(ignore_index="C-1", ignore_fraction=0.5)
    assert p.ignore_index == 39 and (p.target == 39).sum() >= 32
    with pytest.raises(ValueError, match="ignore_index: 'D'"):
        generators.resolve_ignore_index("D", 4)


def test_ranges_cycle_over_positions():
    p = generators.generate("normal", {"shape": [50, 30, 2, 3], "scale": [1.0, 1e3, 1e-3], "vary": "positions"}, 1, F32)
    x = np.moveaxis(p.logits.astype(np.float64), 1, -1).reshape(50, 6, 30)
    std = x.std(axis=(0, 2))
    assert np.allclose(std / np.array([1.0, 1e3, 1e-3] * 2), 1.0, rtol=0.1)
    with pytest.raises(ValueError, match="vary: unknown value"):
        generators.generate("normal", {"shape": [4, 4], "vary": "columns"}, 1, F32)


def test_masked_tail_and_poisoned_rows():
    p = _gen("special", fill=-math.inf, where="tail")
    x, t = p.rows()
    assert np.isneginf(x[:, 30:]).all() and np.isfinite(x[:, :30]).all() and (t < 30).all()
    for rows in ("kept", "ignored"):
        p = _gen(poison=math.nan, poison_rows=rows, ignore_fraction=0.25)
        x, t = p.rows()
        nan_rows = np.isnan(x).any(axis=1)
        assert (nan_rows == ((t != -100) if rows == "kept" else (t == -100))).all()
        assert (np.isnan(x).sum(axis=1)[nan_rows] == 1).all()
        assert not np.isnan(x[np.arange(64), np.where(t == -100, 0, t)][t != -100]).any()  # never the target
    with pytest.raises(ValueError, match="no kept row"):
        _gen(poison=math.inf, poison_rows="kept", ignore_fraction=1.0)


def test_targets_beyond_the_exact_integers_of_16_bit_floats():
    p = generators.generate("dominant", {"shape": [32, 5000], "gap": 40.0, "target_classes": "inexact-16-bit"}, 3, F32)
    x, t = p.rows()
    assert (t > 2048).all() and (t % 2 == 1).all()
    assert (t.astype(np.float16).astype(np.int64) != t).all()
    others = x.astype(np.float64).copy()
    others[np.arange(32), t] = -np.inf
    assert (x[np.arange(32), t] - others.max(axis=1) == 40.0).all()  # the gap moved with the target
    p = generators.generate("normal", {"shape": [32, 1000], "target_classes": "inexact-16-bit"}, 3, F32)
    assert (p.target > 256).all() and (p.target % 2 == 1).all()
    with pytest.raises(ValueError, match="needs C > 257"):
        generators.generate("normal", {"shape": [4, 200], "target_classes": "inexact-16-bit"}, 3, F32)


def test_probability_targets_with_zeros():
    p = _gen(target="prob-zeros")
    t = p.target.astype(np.float64)
    assert np.allclose(t.sum(axis=1), 1.0) and 0.6 < (t == 0).mean() < 0.9 and (t > 0).any(axis=1).all()
    with pytest.raises(ValueError, match="probability targets have no ignored samples"):
        _gen(target="prob", ignore_fraction=0.5)


def test_uint8_targets():
    kw = {"target_dtype": "uint8", "ignore_index": "C", "ignore_fraction": 0.25}
    try:
        p = _gen(**kw)
    except ValueError as exc:
        if "uint8" not in str(exc) or "int64" not in str(exc):
            raise
        pytest.skip(f"harness.problem does not take uint8 class indices yet: {exc}")
    assert p.target.dtype == np.uint8 and (p.target == 40).sum() == 16
    with pytest.raises(ValueError, match=r"uint8 holds class indices 0\.\.255"):
        _gen(target_dtype="uint8", ignore_fraction=0.25)  # ignore_index -100


# -- bad space.toml: one line naming the entry -----------------------------------------------------
def _replace(old: str, new: str) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (_replace('exclude = { batch = ["small", "many", "huge"] }', 'exclude = { batch = ["small", "lots"] }'),
         ["constraint #1", "batch", "'lots'"]),
        (_replace('when = { layout = ["unbatched"] }', 'when = { layuot = ["unbatched"] }'),
         ["constraint #1", "unknown axis 'layuot'"]),
        (_replace('where = "next",', 'where = "next", filll = 1,'),
         ["axes.stress.values.mask-next", "filll", "kind 'special'"]),
        (_replace('positive = { weight = "random",', 'positive = { wieght = "random", weight = "random",'),
         ["axes.weight.values.positive", "wieght"]),
        (_replace('none = { reduction = "none", why = "reduction none" }', 'none = { reduction = "none" }'),
         ["axes.reduction.values.none", "why is required"]),
        (_replace('none = { reduction = "none",', 'none = { reduction = "none", label_smoothing = 0.5,'),
         ["axes.reduction.values.none", "'label_smoothing'", "smoothing"]),
        (_replace('[[constraint]]\nwhen = { layout = ["unbatched"] }', '[[constraint]]\nwhen = { layout = ["kdim-3"] }'),
         ["scenario {", "unbatched input is one sample", "[[constraint]]"]),
        (_replace('[limits]\n', '[limits]\nlogtis = 5\n'), ["limits", "logtis"]),
        (_replace('none = { reduction = "none",', 'none = { reduction = "avg",'),
         ["scenario pair-", "reduction=none}", "reduction must be one of"]),
        (_replace('quick = { cost = 30_000_000 }', 'quick = { cost = 3 }'), ["subsets.quick", "does not reach every value"]),
        (TEXT.replace("[design]", "[design]\nname2 = 1", 1),
         ["design", "name2"]),
        (_replace('kdim-1 = {', '"KDim" = {'), ["axes.layout.values.KDim", "value names must match"]),
    ],
)
def test_a_bad_space_is_one_line_naming_the_entry(text, fragments):
    with pytest.raises(space.SpaceError) as exc:
        space.build(space.loads(text))
    msg = str(exc.value)
    assert msg.startswith("space.toml: ") and "\n" not in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_not_toml_is_one_line():
    with pytest.raises(space.SpaceError, match=r"^space\.toml: not valid TOML"):
        space.loads("[axes\n")


def test_known_failures_name_generated_scenarios_that_exist():
    """A known failure that names a generated scenario outright goes stale when the space is
    redesigned (the names hold the row number): it must name one of today's."""
    from harness import budgets

    known, _ = budgets.load_known()
    names = {s.name for s in GENERATED}
    listed = [c.split("/")[3] for k in known for c in k["cells"]]
    outright = [n for n in listed if n.startswith("pair-") and not set(n) & set("*?[")]
    assert set(outright) <= names, sorted(set(outright) - names)
