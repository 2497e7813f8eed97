"""The diagnosis (harness/diagnosis.py, harness/hypotheses.toml): every bug hypothesis is
recognised on a deliberately wrong plugin (tests/plugins/bugs.py, faulty.py) and fires on none
of numpy, torch and jax over the quick scenarios; the alternatives' values against torch float64
and hand-derived numbers; the campaign's step, its bound and what the report shows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness import budgets as budgets_mod
from harness import campaign, diagnosis, registry, scenarios
from harness.cache import ReferenceCache
from harness.problem import Problem
from tests.plugins import bugs, faulty

BUDGETS = budgets_mod.load()[0]
CACHE = ReferenceCache()


def _overflow_rows() -> Problem:
    """float32 rows whose unshifted exp(x) overflows in float32 only ([100, 0, 0, 0]) and in
    float64 too ([1000, 0, 0, 0]), per-sample losses 100 and 1000."""
    return Problem(np.array([[100, 0, 0, 0], [1000, 0, 0, 0]], np.float32), np.array([1, 1]), reduction="none")


#: hypothesis -> (the wrong implementation, scenario or problem builder, dtype, quantity)
DEMOS = {
    "mean-over-n": (faulty.WrongWeightedMean, "weight-zeros-mean", "float32", "loss"),
    "ignored-in-denominator": (bugs.IgnoredInDenominator, "combo-weight-smoothing-ignore-mean", "float32", "loss"),
    "weights-ignored": (bugs.WeightsIgnored, "weight-zeros-mean", "float32", "loss"),
    "ignore-index-inside": (faulty.IgnoreInsideIgnored, "ignore-inside-sum", "float32", "loss"),
    "smoothing-ignored": (bugs.SmoothingIgnored, "smoothing-0.1-none", "float32", "loss"),
    "smoothing-over-c-minus-1": (bugs.SmoothingOverOthers, "smoothing-0.1-none", "float32", "loss"),
    "smoothing-includes-ignored": (bugs.SmoothingIncludesIgnored, "combo-kdim-ignore-smoothing-sum", "float32", "loss"),
    "smoothing-weighted-by-target": (bugs.SmoothingWeightedByTarget, "combo-weight-smoothing-ignore-mean", "float32",
                                     "loss"),
    "computed-in-float32": (bugs.InFloat32, "scale-1e-06", "float64", "loss"),
    "computed-in-bfloat16": (bugs.InBfloat16, "scale-1e-06", "float32", "loss"),
    "computed-in-float16": (bugs.InFloat16, "scale-1e-06", "float32", "loss"),
    "sum-in-dtype": (bugs.SumInFloat16, "scale-10000", "float16", "loss"),
    "sum-for-mean": (bugs.SumForMean, "scale-1e-06", "float32", "loss"),
    "probabilities-clipped": (bugs.KerasClip, "target-below-10000", "float32", "loss"),
    "log-clamped": (bugs.LogClamp100, "target-below-10000", "float32", "loss"),
    "no-max-shift": (bugs.NaiveInDtype, _overflow_rows, "float32", "loss"),
    "no-max-shift-float64": (faulty.NoMaxShift, _overflow_rows, "float32", "loss"),
    "log-of-softmax": (bugs.LogOfSoftmax, "target-below-10000", "float32", "loss"),
    "targets-renormalised": (bugs.RenormalisedTargets, "prob-raw-mean", "float32", "loss"),
    "targets-assumed-normalised": (bugs.AssumedNormalised, "prob-raw-mean", "float32", "loss"),
}

#: More demonstrations: other quantities, dtypes and the built-in canary.
MORE = [
    ("computed-in-float32", bugs.InFloat32, "scale-1e-06", "float64", "grad"),
    ("ignored-in-denominator", bugs.IgnoredInDenominator, "combo-weight-smoothing-ignore-mean", "float32", "grad"),
    ("no-max-shift", "numpy-naive", "exp-overflow-float16-above", "float16", "loss"),
    ("no-max-shift", bugs.NaiveInDtype, "exp-overflow-float32-above", "float32", "loss"),
    ("log-of-softmax", "numpy-naive", "target-below-10000", "float32", "loss"),
    ("targets-assumed-normalised", bugs.AssumedNormalised, "prob-raw-mean", "float64", "grad"),
]


def _impl(what) -> registry.Implementation:
    if isinstance(what, str):
        return registry.builtin(what).impl
    return registry.as_implementation(what, what.__name__, "tests")


def _problem(where, dtype) -> Problem:
    return where() if callable(where) else scenarios.get(where).problem(dtype)


def _diagnose(impl, problem, quantity, **kw):
    y = impl.loss(problem) if quantity == "loss" else impl.grad(problem)
    exact = CACHE.get_many([problem])[0]
    return diagnosis.diagnose(problem, quantity, np.asarray(y), exact, BUDGETS, cache=CACHE, **kw)


# -- the library --------------------------------------------------------------------------------------


def test_every_hypothesis_has_a_demonstration_and_a_documented_function():
    names = [h.name for h in diagnosis.library()]
    assert sorted(names) == sorted(DEMOS) and len(set(names)) == len(names)
    for h in diagnosis.library():
        fn = diagnosis.FUNCTIONS[h.function]
        # its docstring gives the formula and how it is evaluated: by the reference, or in MPFR
        assert fn.__doc__ and ("reference" in fn.__doc__ or "MPFR" in fn.__doc__), h.function
        assert h.text and h.why and set(h.quantities) <= {"loss", "grad"}


@pytest.mark.parametrize("entry, fragment", [
    ({"name": "x", "text": "t", "function": "nope", "why": "w", "quantities": ["loss"]}, "unknown function 'nope'"),
    ({"name": "x", "text": "t", "function": "narrowed", "why": "w", "quantities": ["loss"], "params": {"bits": 3}},
     "takes no parameter(s) bits"),
    ({"name": "x", "text": "t", "function": "sum_for_mean", "why": "w", "quantities": ["value"]}, "quantities"),
    ({"name": "x", "function": "sum_for_mean", "why": "w", "quantities": ["loss"]}, "text is required"),
    ({"name": "x", "text": "t", "function": "sum_for_mean", "why": "w", "quantities": ["loss"], "colour": 1},
     "unknown key(s) colour"),
])
def test_a_bad_library_entry_is_a_one_line_error(entry, fragment):
    with pytest.raises(ValueError) as exc:
        diagnosis.parse({"hypothesis": [entry]})
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    twice = {"name": "x", "text": "t", "function": "sum_for_mean", "why": "w", "quantities": ["loss"]}
    with pytest.raises(ValueError, match="duplicate name"):
        diagnosis.parse({"hypothesis": [twice, twice]})


# -- every hypothesis recognised on its wrong plugin ------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflowing plugins' NumPy warnings
@pytest.mark.parametrize("name", list(DEMOS))
def test_each_hypothesis_is_recognised_on_its_wrong_plugin(name):
    plugin, where, dtype, quantity = DEMOS[name]
    d = _diagnose(_impl(plugin), _problem(where, dtype), quantity)
    assert d["reproduced"], "the wrong plugin must fail the contract"
    assert d["matches"] and d["matches"][0]["name"] == name, d["text"]
    assert d["text"].startswith("matches: " + next(h.text for h in diagnosis.library() if h.name == name))
    assert not d.get("errors")


@pytest.mark.parametrize("name, plugin, where, dtype, quantity", MORE,
                         ids=[f"{m[0]}-{m[3]}-{m[4]}" for m in MORE])
def test_more_demonstrations(name, plugin, where, dtype, quantity):
    d = _diagnose(_impl(plugin), _problem(where, dtype), quantity)
    assert d["reproduced"] and d["matches"][0]["name"] == name, d["text"]


def test_a_correct_plugin_is_not_diagnosed():
    problem = scenarios.get("combo-weight-smoothing-ignore-mean").problem("float32")
    d = _diagnose(_impl(bugs.Contract), problem, "loss")
    assert not d["reproduced"] and d["matches"] == [] and d["text"].startswith("not reproduced")


def test_indistinguishable_hypotheses_are_listed_together():
    """On an unweighted problem with ignored samples, "mean over N" and "ignored samples in the
    denominator" are the same number: the output matches both."""
    problem = scenarios.get("ignore-partial-mean").problem("float32")
    d = _diagnose(_impl(faulty.WrongWeightedMean), problem, "loss")
    assert [m["name"] for m in d["matches"]][:2] == ["mean-over-n", "ignored-in-denominator"]
    assert "; also consistent: ignored samples counted" in d["text"]


# -- none fires on numpy, torch, jax -------------------------------------------------------------------

_SHARED: dict = {}  # derived references per problem, shared by the three implementations


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_no_hypothesis_fires_on_numpy_torch_jax_over_the_quick_scenarios(name):
    """Every output of a correct implementation: the diagnosis reports no match (it passes the
    contract), and no hypothesis that this problem can tell from the contract is consistent
    with it (where the output is finite wherever the contract is: an inf for a value a hair
    below the largest float is 1 ULP by the metric, and also what a no-max-shift bug returns).
    The one exception is torch's documented float16 'mean' overflow, diagnosed as such."""
    if name != "numpy":
        pytest.importorskip(name)
    if name == "jax":
        pytest.importorskip("optax")
    impl = registry.builtin(name).impl
    known, _ = budgets_mod.load_known()
    overflow_cells = []
    for s in scenarios.select(quick=True):
        for dtype in s.dtypes:
            problem = s.problem(dtype)
            if impl.supports(problem) or problem.logits.size > diagnosis.MAX_LOGITS:
                continue
            exact = CACHE.get_many([problem])[0]
            shared = _SHARED.setdefault(problem.digest, {})
            loss, grad = impl.loss_and_grad(problem)
            for quantity, y in (("loss", np.asarray(loss)), ("grad", np.asarray(grad))):
                cell = {"impl": name, "dtype": dtype, "kind": "accuracy" if quantity == "loss" else "gradient",
                        "scenario": s.name}
                d = diagnosis.diagnose(problem, quantity, y, exact, BUDGETS, cache=CACHE, shared=shared)
                where = f"{name}/{dtype}/{cell['kind']}/{s.name}"
                assert not d.get("errors"), (where, d["errors"])
                if d["reproduced"]:  # a failing cell: only the documented ones are expected
                    reason = budgets_mod.known_reason(cell, known)
                    assert reason, f"{where} fails the contract: {d['text']}"
                    if name == "torch" and dtype == "float16" and quantity == "loss":
                        assert d["matches"][0]["name"] == "sum-in-dtype", (where, d["text"])
                        overflow_cells.append(s.name)
                    continue
                assert d["matches"] == []
                rounded = exact.rounded(quantity, problem.dtype).astype(np.float64)
                if np.isfinite(y.astype(np.float64)[np.isfinite(rounded)]).all():
                    rows = diagnosis.evaluate(problem, quantity, y, exact, BUDGETS, cache=CACHE, shared=shared)
                    fired = [r["name"] for r in rows if r["verdict"] == "consistent"]
                    assert not fired, f"{where}: a correct output agrees with {fired}"
    if name == "torch":
        assert len(overflow_cells) >= 3, overflow_cells  # scale-10000, target-below-10000, at-max-one, ...


# -- the alternatives' values, against independent evidence ------------------------------------------------


def _ctx(problem, quantity="loss", y=None):
    exact = CACHE.get_many([problem])[0]
    y = exact.rounded(quantity, problem.dtype) if y is None else y
    return diagnosis.Context(problem, quantity, exact, np.asarray(y), cache=CACHE)


def _value(alt):
    return np.asarray(alt.hi) + np.asarray(alt.lo)


def test_mean_over_n_is_torchs_sum_over_n():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4)) * 3
    t = np.array([0, 3, 1, -100, 2])
    w = np.array([0.5, 2.0, 1.25, 3.0])
    problem = Problem(x, t, weight=w, reduction="mean")
    want = F.cross_entropy(torch.tensor(x), torch.tensor(t), weight=torch.tensor(w), reduction="sum").item() / 5
    got = _value(diagnosis.denominator(_ctx(problem), count="samples"))
    assert got == pytest.approx(want, rel=1e-15)
    ones = diagnosis.denominator(_ctx(problem), count="ignored-as-one")  # Σ w[target] + 1 ignored sample
    assert _value(ones) == pytest.approx(want * 5 / (0.5 + 3.0 + 2.0 + 1.25 + 1), rel=1e-15)
    g = diagnosis.denominator(_ctx(problem, "grad"), count="samples")
    xr = torch.tensor(x, requires_grad=True)
    (F.cross_entropy(xr, torch.tensor(t), weight=torch.tensor(w), reduction="sum") / 5).backward()
    np.testing.assert_allclose(_value(g), xr.grad.numpy(), rtol=1e-12, atol=1e-15)  # torch: float64 ops


def test_smoothing_over_the_other_classes_against_its_formula_in_torch_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    C, eps = 6, 0.2
    x = rng.normal(size=(4, C)) * 2
    t = np.array([1, 5, -100, 0])
    w = rng.uniform(0.5, 2, C)
    problem = Problem(x, t, weight=w, label_smoothing=eps, reduction="mean")
    logp = torch.log_softmax(torch.tensor(x), dim=1).numpy()
    kept = t != -100
    total = 0.0
    for n in np.flatnonzero(kept):
        others = [j for j in range(C) if j != t[n]]
        total += (1 - eps) * w[t[n]] * -logp[n, t[n]] + eps / (C - 1) * sum(w[j] * -logp[n, j] for j in others)
    want = total / w[t[kept]].sum()
    assert _value(diagnosis.smoothing_over_others(_ctx(problem))) == pytest.approx(want, rel=1e-14)


def test_keras_clip_caps_at_minus_log_1e_minus_7_and_zeroes_the_clamped_gradient():
    problem = Problem(np.array([[0.0, -30.0], [0.0, 0.0]]), np.array([1, 0]), reduction="mean")
    alt = diagnosis.capped(_ctx(problem), p_min=1e-7)
    # sample 0: -log p = 30 + log1p(e^-30) is clipped to 7 ln 10; sample 1: ln 2, unclamped
    assert _value(alt) == pytest.approx((7 * math.log(10) + math.log(2)) / 2, rel=1e-15)
    g = diagnosis.capped(_ctx(problem, "grad"), p_min=1e-7)
    assert np.all(_value(g)[0] == 0)
    np.testing.assert_allclose(_value(g)[1], [-0.25, 0.25], rtol=1e-15)  # (softmax - onehot) / 2
    assert diagnosis.capped(_ctx(problem), log_min=-100.0) is None  # nothing near 100


def test_no_max_shift_overflows_exactly_above_log_of_the_largest_float():
    # ln(FLT_MAX) = 88.7228...: exp(88) is finite in float32, exp(89) is not
    problem = Problem(np.array([[88.0, 0.0], [89.0, 0.0]], np.float32), np.array([1, 1]), reduction="none")
    alt = diagnosis.no_max_shift(_ctx(problem), work="input")
    assert alt.nonfinite.tolist() == [False, True]
    assert diagnosis.no_max_shift(_ctx(problem), work="float64") is None  # e^89 is fine in float64


def test_sum_in_dtype_is_inf_exactly_when_the_float16_sum_overflows():
    two = Problem(np.array([[0.0, 40000.0], [0.0, 40000.0]], np.float16), np.array([0, 0]))
    alt = diagnosis.sum_in_dtype(_ctx(two))  # 80000 > 65504, the mean 40000 is finite
    assert alt is not None and float(alt.hi) == math.inf
    one = Problem(np.array([[0.0, 40000.0]], np.float16), np.array([0]))
    assert diagnosis.sum_in_dtype(_ctx(one)) is None


def test_targets_assumed_normalised_is_lse_minus_q_dot_x():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 5))
    q = rng.uniform(0, 1, (3, 5)) * np.array([[0.5], [1.0], [2.0]]) / 2.5
    problem = Problem(x, q, reduction="mean")
    xt = torch.tensor(x)
    want = (torch.logsumexp(xt, 1) - (torch.tensor(q) * xt).sum(1)).mean().item()
    assert _value(diagnosis.targets_assumed_normalised(_ctx(problem))) == pytest.approx(want, rel=1e-14)
    grad = (torch.softmax(xt, 1) - torch.tensor(q)).numpy() / 3
    np.testing.assert_allclose(_value(diagnosis.targets_assumed_normalised(_ctx(problem, "grad"))), grad,
                               rtol=1e-12, atol=1e-15)


def test_narrowed_declines_when_the_output_is_not_a_number_of_that_format():
    problem = scenarios.get("scale-1e-06").problem("float64")
    exact = CACHE.get_many([problem])[0]
    assert diagnosis.narrowed(_ctx(problem, y=exact.rounded("loss", np.float64)), dtype="float32") is None
    y32 = exact.rounded("loss", np.float64).astype(np.float32).astype(np.float64)
    assert diagnosis.narrowed(_ctx(problem, y=y32), dtype="float32") is not None
    assert diagnosis.narrowed(_ctx(problem, y=y32), dtype="float64") is None


def test_agreement_with_inf_or_nan_claims():
    problem = Problem(np.zeros((2, 3), np.float32), np.array([0, 1]), reduction="none")
    hi, lo = np.array([1.0, 2.0]), np.zeros(2)
    claim = np.array([False, True])
    ok, _ = diagnosis.agrees(problem, "loss", np.array([1.0, np.inf], np.float32), hi, lo, BUDGETS, nonfinite=claim)
    assert ok
    ok, figures = diagnosis.agrees(problem, "loss", np.array([1.0, 2.0], np.float32), hi, lo, BUDGETS, nonfinite=claim)
    assert not ok and figures["mismatch"] == 1
    ok, _ = diagnosis.agrees(problem, "loss", np.array([1.0, 7.0], np.float32), hi, lo, BUDGETS, skip=claim)
    assert ok  # no claim where skipped


# -- the campaign's step ----------------------------------------------------------------------------------


def test_the_campaign_diagnoses_failing_cells_and_the_report_shows_it(tmp_path):
    req = campaign.Request(kinds=campaign.CHECK, impls=["tests/plugins/faulty.py:WrongWeightedMean"],
                           scenarios=["weight-zeros-mean", "scale-1"], dtypes=["float32"], out=tmp_path / "run",
                           argv=["check"])
    lines: list[str] = []
    done = campaign.run(req, log=lines.append)
    cell = next(c for c in done.data["cells"] if c["status"] == "fail")
    d = cell["diagnosis"]
    assert d["matches"][0]["name"] == "mean-over-n" and d["output"] == "recomputed" and d["reproduced"]
    assert d["digest"] == scenarios.get("weight-zeros-mean").problem("float32").digest
    assert (done.out / d["repro"]).is_file() and (done.out / d["repro"]).with_suffix(".npz").is_file()
    assert any(line.startswith("diagnosis: 1 failing cells diagnosed, 1 matched") for line in lines)
    # the journal has it too (a resume keeps it)
    journal = [json.loads(x) for x in (done.out / "cells.jsonl").read_text().splitlines()]
    assert any(e.get("type") == "cell" and "diagnosis" in e["cell"] for e in journal)
    assert all(c["status"] != "fail" or "diagnosis" in c for c in json.loads((done.out / "results.json").read_text())["cells"])
    html = (done.out / "report.html").read_text()
    assert "— matches: mean divided by N (the number of samples) instead of Σ w[target]" in html
    assert f'href="{d["repro"]}"' in html
    data = json.loads(html.split('id="report-data">')[1].split("</script>")[0])
    assert d["repro"] in data["repros"] and d["text"] in data["messages"]
    md = (done.out / "summary.md").read_text()
    assert "— matches: mean divided by N" in md


def test_a_bounded_budget_reaches_every_kind_of_finding_first():
    cells = [{"impl": i, "kind": k, "dtype": d, "scenario": n} for i, k, d, n in (
        ("naive", "accuracy", "float32", "a"), ("lib", "accuracy", "float32", "b"), ("lib", "accuracy", "float32", "c"),
        ("lib", "accuracy", "float32", "d"), ("lib", "gradient", "float32", "e"), ("lib", "accuracy", "float16", "f"))]
    order = [c["scenario"] for c in diagnosis.spread(cells, lambda name: name == "naive")]
    assert order == ["b", "e", "f", "c", "d", "a"]


def test_the_campaign_step_is_bounded(tmp_path):
    from harness import results

    res = results.Results.open(tmp_path, {"id": "t"})
    entry = registry.Entry("numpy-naive", "builtin", registry.builtin("numpy-naive").impl)
    picked = [scenarios.get(n) for n in ("scale-1000", "scale-10000")]
    for s in picked:
        res.add_cell({"kind": "accuracy", "impl": "numpy-naive", "dtype": "float32", "scenario": s.name,
                      "status": "fail", "message": "x", "metrics": None, "budget": None, "seconds": None})
    lines: list[str] = []
    n = diagnosis.run(res, [entry], picked, BUDGETS, log=lines.append, cells=1)
    assert n == 1 and sum("diagnosis" in c for c in res.cells) == 1
    assert "1 more not diagnosed" in lines[-1]
    assert diagnosis.run(res, [entry], picked, BUDGETS, log=lines.append, seconds=-1.0) == 0  # out of time
    res.close()
