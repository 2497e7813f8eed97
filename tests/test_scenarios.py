"""The scenario catalogue: every scenario builds, deterministically, within the logit budget,
and the numeric scenarios really are what their names say."""

from __future__ import annotations

import json
import math
from decimal import Decimal, localcontext
from importlib import resources

import numpy as np
import pytest

from harness import generators
from harness import scenarios as S
from harness.formats import DTYPE_NAMES, FORMATS
from harness.problem import Problem

CATALOGUE = S.catalogue()
# The named catalogue (scenarios.toml, the regression set) is tested here; the generated space
# (space.toml) in tests/test_space.py, the saved fuzz findings in tests/test_fuzz.py.
NAMED = [s for s in CATALOGUE if s.family not in ("space", "found")]
# The language-model family (tests/test_llm_scenarios.py) is built there: 65.7 million to 2.1
# billion logits a problem, outside the catalogue's reference budget (judged blockwise).
ORDINARY = [s for s in NAMED if s.family != "llm"]
PAIRS = [(s, d) for s in ORDINARY for d in s.dtypes]

REQUIRED_FAMILIES = {
    "scale",
    "exp-overflow",
    "dominant",
    "target-below",
    "ties",
    "large-c",
    "offset",
    "masked",
    "nonfinite",
    "extremes",
    "bits",
    "shape",
    "weight",
    "ignore",
    "smoothing",
    "prob-target",
    "combo",
}

ALL_BUDGET = 4_000_000
QUICK_BUDGET = 300_000


@pytest.fixture(scope="module")
def problems() -> dict[tuple[str, str], Problem]:
    return {(s.name, d): s.problem(d) for s, d in PAIRS}


def f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


# -- structure ---------------------------------------------------------------------------------
def test_toml_is_package_data():
    assert resources.files("harness").joinpath("scenarios.toml").is_file()


def test_names_unique_and_well_formed():
    names = [s.name for s in CATALOGUE]  # named, generated and found alike
    assert len(names) == len(set(names))
    for n in names:
        assert S.NAME_RE.match(n), n


def test_required_families_and_fields():
    assert REQUIRED_FAMILIES <= set(S.families())
    for s in CATALOGUE:
        assert s.why.strip() and "{" not in s.why, s.name
        assert s.dtypes and set(s.dtypes) <= set(DTYPE_NAMES)
        assert set(s.tags) <= S.KNOWN_TAGS
        assert isinstance(s.seed, int)
        assert s.axis is None or (isinstance(s.axis[0], str) and isinstance(s.axis[1], float))
        hash(s)


def test_seed_defaults_to_crc32_of_name():
    import zlib

    s = S.get("scale-1e-06")
    assert s.seed == zlib.crc32(b"scale-1e-06")


def test_expected_expansions_exist():
    names = {s.name for s in CATALOGUE}
    for n in ("scale-1e-06", "scale-100000", "dominant-gap-20", "dominant-gap-10000",
              "target-below-10000", "large-c-32768", "large-c-262144", "long-rows-f16",
              "exp-overflow-float64-above", "smoothing-1-none", "prob-raw-sum"):  # fmt: skip
        assert n in names, n
    assert len([s for s in CATALOGUE if s.family == "scale"]) == 12


def test_every_feature_is_exercised(problems):
    from harness.registry import FEATURES

    seen = set().union(*(p.features for p in problems.values()))
    assert seen == FEATURES


def test_budgets():
    total = S.total_logits(ORDINARY)
    quick = [s for s in S.select(quick=True) if s in NAMED]
    assert total <= ALL_BUDGET, total
    assert S.total_logits(quick) <= QUICK_BUDGET, S.total_logits(quick)
    assert 15 <= len(quick) <= 25
    assert REQUIRED_FAMILIES <= {s.family for s in quick}
    for n in ("dominant-gap-20", "dominant-gap-100", "scale-1e-06", "scale-10000"):
        assert S.get(n).quick
    assert any("bits" in s.tags for s in quick)
    assert any("special" in s.tags for s in quick)
    assert not any("large" in s.tags for s in quick)


# -- building ----------------------------------------------------------------------------------
def test_every_scenario_builds_a_valid_problem(problems):
    for s, d in PAIRS:
        p = problems[s.name, d]
        assert isinstance(p, Problem)
        assert p.dtype == FORMATS[d].dtype
        assert p.logits.shape == s.shape
        x = f64(p.logits)
        if "special" not in s.tags:
            assert np.isfinite(x).all(), (s.name, d)
        opts = S.options(s)
        assert p.reduction == opts["reduction"]
        assert p.label_smoothing == opts["label_smoothing"]
        assert p.ignore_index == opts["ignore_index"]
        assert (p.weight is not None) == (opts["weight"] is not None)
        assert p.probability_target == (opts["target"] != "index")


def test_non_finite_inputs_are_tagged_special(problems):
    for s, d in PAIRS:
        if not np.isfinite(f64(problems[s.name, d].logits)).all():
            assert "special" in s.tags, (s.name, d)


def test_determinism(problems):
    digests = {}
    for s, d in PAIRS:
        if "large" in s.tags:
            continue
        again = s.problem(d).digest
        assert again == problems[s.name, d].digest, (s.name, d)
        digests.setdefault(d, []).append(again)
    for d, ds in digests.items():
        assert len(ds) == len(set(ds)), f"two scenarios give the same {d} problem"


def test_wrong_dtype_is_refused():
    with pytest.raises(ValueError, match="does not apply to float16"):
        S.get("offset-plus-1e300").problem("float16")


def test_describe_is_json_ready(problems):
    for s in ORDINARY:
        row = S.describe(s)
        json.dumps(row, allow_nan=False)
        assert row["shape"] == list(problems[s.name, s.dtypes[0]].logits.shape)
        assert {"name", "family", "why", "dtypes", "tags", "axis", "shape", "options"} <= set(row)


# -- selection ---------------------------------------------------------------------------------
def test_select():
    assert S.select(None) == CATALOGUE
    assert [s.name for s in S.select(["dominant-gap-1*"])] == [
        "dominant-gap-1",
        "dominant-gap-10",
        "dominant-gap-100",
        "dominant-gap-1000",
        "dominant-gap-10000",
    ]
    fam = S.select(["masked"])  # a family name
    assert {s.family for s in fam} == {"masked"} and len(fam) == 5
    both = S.select(["scale-1e-06", "masked-rows"])
    assert [s.name for s in both] == ["scale-1e-06", "masked-rows"]
    assert S.select(["scale-1e-06,masked-rows"]) == both
    assert all(s.quick for s in S.select(quick=True))
    assert [s.name for s in S.select(["scale-*"], quick=True)] == ["scale-1e-06", "scale-10000"]
    assert {s.name for s in S.select(["tag:large"])} == {
        "large-c-32768", "large-c-262144", "long-rows-f16", "llm-8192x128256", "llm-8192x262144",
    }  # fmt: skip


def test_select_dtypes():
    only64 = S.select(dtypes=["float64"])
    assert all(s.dtypes == ("float64",) for s in only64)
    assert "long-rows-f16" not in {s.name for s in only64}
    assert "exp-overflow-float64-above" in {s.name for s in only64}
    half = S.select(["offset-*"], dtypes=["float16", np.float32])
    assert {s.name: s.dtypes for s in half}["offset-plus-1e6"] == ("float32",)
    assert "offset-plus-1e300" not in {s.name for s in half}
    narrowed = {s.name: s for s in half}["offset-plus-1e4"]
    assert narrowed.problem("float32").digest == S.get("offset-plus-1e4").problem("float32").digest


def test_select_unknown_pattern():
    with pytest.raises(ValueError) as e:
        S.select(["dominant-gap-20", "no-such-*"])
    assert str(e.value) == (
        "--scenario: no scenario matches 'no-such-*'; see `xent-harness list --scenarios`"
    )


# -- the numbers are what the names say --------------------------------------------------------
def test_dominant_gap_is_exact(problems):
    checked = 0
    for s, d in PAIRS:
        if s.kind != "dominant":
            continue
        x, t = problems[s.name, d].rows()
        x = f64(x)
        rows = np.arange(x.shape[0])
        xt = x[rows, t]
        others = x.copy()
        others[rows, t] = -np.inf
        gap = float(s.params["gap"])
        assert (xt - others.max(axis=1) == gap).all(), (s.name, d)
        checked += 1
    assert checked >= 4 * 13


def test_overflow_thresholds_straddle_log_max(problems):
    for s, d in PAIRS:
        if s.family != "exp-overflow":
            continue
        fmt = FORMATS[s.params["fmt"]]
        lm = generators.log_max(fmt)
        top = f64(problems[s.name, d].logits).max(axis=-1)
        assert np.unique(top).size == 1, (s.name, d)
        v = Decimal(float(top[0]))
        if s.params["side"] == "below":
            assert v < lm, (s.name, d)
        else:
            assert v > lm, (s.name, d)
        # one step of the dtype away
        below, above = generators.neighbours(lm, FORMATS[d])
        assert float(top[0]) == (below if s.params["side"] == "below" else above)
        if d == fmt.name:  # exp of the dtype's own value, rounded to nearest, overflows iff above
            with localcontext() as ctx:
                ctx.prec = 60
                overflow = Decimal(fmt.max) + Decimal(2.0 ** (fmt.emax - fmt.precision))
                assert (v.exp() >= overflow) == (s.params["side"] == "above"), (s.name, d)


def test_bit_patterns_cover_exponents(problems):
    for name in ("bits-finite", "bits-bounded-100"):
        s = S.get(name)
        for d in s.dtypes:
            x = f64(problems[name, d].logits)
            assert np.isfinite(x).all()
            nz = x[x != 0]
            exps = np.unique(np.frexp(nz)[1])
            need = 20 if d == "float16" else 40
            assert exps.size >= need, (name, d, exps.size)
            assert (x < 0).any() and (x > 0).any()
            if name == "bits-bounded-100":
                assert np.abs(x).max() <= 100
    x32 = f64(problems["bits-finite", "float32"].logits)
    assert np.unique(np.frexp(x32[x32 != 0])[1]).size >= 20


def test_subnormals_are_subnormal(problems):
    s = S.get("subnormal-all")
    for d in s.dtypes:
        x = np.abs(f64(problems[s.name, d].logits))
        fmt = FORMATS[d]
        assert (x > 0).all() and (x < fmt.tiny).all()


def test_scale_and_large_c(problems):
    s = S.get("scale-1e-06")
    x = f64(problems[s.name, "float64"].logits)
    assert 0.5e-6 < x.std() < 2e-6
    assert S.get("large-c-262144").shape == (2, 262144)
    x = f64(problems["long-rows-f16", "float16"].logits)
    assert np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1).min() > FORMATS["float16"].max


def test_options(problems):
    p = problems["ignore-inside-mean", "float32"]
    assert p.ignore_index == 0 and (p.target == 0).sum() >= 4
    p = problems["ignore-all-sum", "float32"]
    assert (p.target == -100).all()
    p = problems["ignore-partial-none", "float32"]
    assert (p.target == -100).sum() == 8
    p = problems["weight-zeros-mean", "float32"]
    w = f64(p.weight)
    assert (w == 0).sum() == 32 and (w[p.target] == 0).any() and (w[p.target] > 0).any()
    p = problems["prob-soft-mean", "float64"]
    assert np.allclose(p.target.sum(axis=1), 1.0)
    p = problems["prob-raw-mean", "float64"]
    assert not np.allclose(p.target.sum(axis=1), 1.0) and (p.target >= 0).all()
    p = problems["unbatched", "float16"]
    assert p.logits.shape == (1000,) and p.target.shape == ()
    p = problems["combo-kdim-weight-mean", "bfloat16"]
    assert p.kdim and p.weight is not None and p.reduction == "mean"


def test_special_placements(problems):
    x, t = problems["masked-next", "float32"].rows()
    rows = np.arange(x.shape[0])
    assert np.isneginf(x[rows, (t + 1) % x.shape[1]]).all() and np.isfinite(x[rows, t]).all()
    x, t = problems["masked-rows", "float64"].rows()
    assert np.isneginf(x[::4]).all() and np.isfinite(x[1::4]).all()
    for d in DTYPE_NAMES:
        x = f64(problems["at-max-all", d].logits)
        assert (x == FORMATS[d].max).all()


def test_torch_agrees_on_exact_cases(problems):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def ce(p):
        kw = p.kwargs()
        w = kw.pop("weight")
        return F.cross_entropy(
            torch.from_numpy(np.array(p.logits)),
            torch.from_numpy(np.array(p.target)),
            weight=None if w is None else torch.from_numpy(np.array(w)),
            **kw,
        ).numpy()

    assert ce(problems["all-equal", "float64"]) == pytest.approx(math.log(128), rel=1e-15)
    assert (ce(problems["single-class", "float64"]) == 0).all()
    r = ce(problems["masked-rows", "float64"])
    assert np.isnan(r[::4]).all() and np.isfinite(r[1::4]).all()
    assert np.isnan(ce(problems["ignore-all-mean", "float64"]))
    assert np.isinf(ce(problems["masked-target", "float64"]))
    assert np.isnan(ce(problems["nan-every-third", "float64"])).all()


# -- the loader rejects mistakes ---------------------------------------------------------------
GOOD = """
[[scenario]]
name = "x-{scale:g}"
family = "f"
kind = "normal"
why = "w"
expand = { scale = [1.0, 2.0] }
"""


def test_loads_template():
    got = S.loads(GOOD)
    assert [s.name for s in got] == ["x-1", "x-2"]
    assert got[0].shape == (16, 128)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD.replace('kind = "normal"', 'kind = "nope"'), "unknown kind"),
        (GOOD.replace("expand", "params = { scael = 1.0 }\nexpand"), "unknown parameter"),
        (GOOD.replace('"x-{scale:g}"', '"x"'), "duplicate name"),
        (GOOD.replace('"x-{scale:g}"', '"X-{scale:g}"'), "names must match"),
        (GOOD + 'tags = ["fast"]\n', "unknown tag"),
        (GOOD + 'dtypes = ["float8"]\n', "dtypes"),
        (GOOD + 'quick = ["x-3"]\n', "no expanded scenario"),
        (GOOD.replace('why = "w"', ""), "why is required"),
        (GOOD + 'axis = "gap"\n', "axis"),
    ],
)
def test_loads_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        S.loads(text)


def test_the_generated_space_joins_the_catalogue_after_the_named_scenarios():
    from harness import space

    generated = space.scenarios()
    names = [s.name for s in CATALOGUE]
    first = names.index(generated[0].name)
    assert names[first:first + len(generated)] == [s.name for s in generated]
    assert all(CATALOGUE.index(s) < first for s in NAMED)
    # --quick is the named quick set plus the space's quick subset; nothing else
    quick = S.select(quick=True)
    assert {s.name for s in quick if s.family == "space"} == {s.name for s in generated if s.quick}
    assert {s.family for s in quick} >= REQUIRED_FAMILIES | {"space"}
