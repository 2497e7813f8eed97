"""Memory layouts (harness/memory_layout.py, Problem.memory, the space's memory axis): an
implementation receives the problem's arrays as transposed, strided or offset views, with the
same strides in this process and in an isolated child; torch takes them without a copy; the
reference of a view is its contiguous twin's; and a plugin that assumes C order is caught by
`check` on the non-contiguous scenarios while it passes contiguous ones."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from harness import registry, results, space
from harness.cli import main
from harness.memory_layout import MEMORY_LAYOUTS, describe
from harness.problem import Problem, ProblemError
from harness.reference import api
from harness.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "plugins" / "layouts.py"
NON_CONTIGUOUS = ("transposed-class", "strided", "row-offset")


def _problem(shape, memory="contiguous", *, prob=False, dtype=np.float32, seed=0, **kw) -> Problem:
    rng = np.random.default_rng(seed)
    C = shape[0] if len(shape) == 1 else shape[1]
    x = rng.normal(size=shape).astype(dtype)
    if prob:
        t = rng.random(shape)
    elif len(shape) == 1:
        t = np.int64(rng.integers(0, C))
    else:
        t = rng.integers(0, C, shape[:1] + shape[2:])
    return Problem(x, t, weight=0.5 + rng.random(C), memory=memory, **kw)


SHAPES = [(6, 5), (3, 5, 2, 4), (7,)]
CASES = [(s, m, prob) for s in SHAPES for m in NON_CONTIGUOUS for prob in (False, True)
         if not (m == "transposed-class" and len(s) == 1)]


@pytest.mark.parametrize(("shape", "memory", "prob"), CASES)
def test_a_presented_problem_has_the_same_values_in_its_layout(shape, memory, prob):
    p = _problem(shape, memory, prob=prob)
    v = p.presented()
    assert p.logits.flags.c_contiguous and p.target.flags.c_contiguous  # stored C-ordered
    for name in ("logits", "target", "weight"):
        a, b = getattr(p, name), getattr(v, name)
        assert b.shape == a.shape and b.dtype == a.dtype and np.array_equal(a, b)
        assert not b.flags.writeable
    x, item = describe(v.logits), v.logits.itemsize
    if memory == "transposed-class":
        if len(shape) == 2:  # Fortran order: the samples fastest
            assert x["f_contiguous"] and not x["c_contiguous"]
        else:  # channels-last: the classes fastest, the class axis last in memory
            assert x["strides"][1] == item and not x["c_contiguous"]
            assert x["strides"][-1] == item * shape[1]
    elif memory == "strided":
        doubled = {0, 0 if len(shape) == 1 else 1}  # the sample and the class axis
        buffer = np.empty([2 * n if i in doubled else n for i, n in enumerate(shape)], v.logits.dtype).strides
        assert x["strides"] == tuple(2 * s if i in doubled else s for i, s in enumerate(buffer))
        assert not x["c_contiguous"] and not x["f_contiguous"]
        base = v.logits.base
        assert base.size == v.logits.size * (2 if len(shape) == 1 else 4)
        assert np.isnan(np.asarray(base, np.float64)).sum() == base.size - v.logits.size  # NaN in the gaps
    else:  # row-offset: C-ordered, one element into its buffer
        assert x["c_contiguous"] and x["offset"] == item
        assert np.isnan(v.logits.base[0])
    assert v.presented() is v and v.canonical() is p and p.presented() is not v  # fresh each time


def test_memory_is_validated_in_one_line_naming_the_field():
    with pytest.raises(ProblemError, match=r"^memory: unknown layout 'fortran'; use one of contiguous"):
        _problem((4, 3), "fortran")
    with pytest.raises(ProblemError, match=r"^memory: an unbatched \(C,\) input has one axis"):
        _problem((5,), "transposed-class")


@pytest.mark.parametrize("memory", NON_CONTIGUOUS)
def test_pickling_a_presented_problem_rebuilds_the_same_view(memory):
    v = _problem((3, 5, 2, 4), memory).presented()
    # what pickling a NumPy view alone does: the strides are lost
    assert pickle.loads(pickle.dumps(v.logits)).flags.c_contiguous
    w = pickle.loads(pickle.dumps(v))
    assert w.memory == memory and w.canonical() is not w
    for name in ("logits", "target", "weight"):
        assert describe(getattr(w, name)) == describe(getattr(v, name))
        assert np.array_equal(getattr(w, name), getattr(v, name))
    c = pickle.loads(pickle.dumps(v.canonical()))  # the canonical problem keeps its layout's name
    assert c.memory == memory and c.logits.flags.c_contiguous


def test_digest_keys_the_values_identity_the_call():
    p = _problem((6, 5))
    twins = [p.replace(memory=m) for m in NON_CONTIGUOUS]
    assert {t.digest for t in twins} == {p.digest} == {t.presented().digest for t in twins}
    assert p.identity == p.digest
    assert len({p.identity, *(t.identity for t in twins)}) == 4
    assert "memory='strided'" in repr(twins[1]) and "memory" not in repr(p)
    # options derived by replace/astype keep the layout
    assert p.replace(memory="strided").astype(np.float64).memory == "strided"
    assert twins[1].presented().replace(reduction="sum").memory == "strided"


@pytest.mark.parametrize("memory", NON_CONTIGUOUS)
def test_the_reference_of_a_view_equals_its_contiguous_twins(memory):
    twin = _problem((4, 6, 3), reduction="none", seed=3)
    view = twin.replace(memory=memory).presented()
    assert not view.logits.flags.c_contiguous or memory == "row-offset"
    a, b = api.evaluate(twin), api.evaluate(view)  # computed afresh, no cache
    for name in ("loss_hi", "loss_lo", "grad_hi", "grad_lo"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


# -- what the implementations receive --------------------------------------------------------------


def _entry(attr: str) -> registry.Entry:
    spec = f"{PLUGINS}:{attr}"
    return registry.Entry(attr, "plugin", registry.load_spec(spec), extra={"spec": spec})


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
@pytest.mark.parametrize("attr", ["NumpyRecorder", "TorchRecorder"])
def test_a_strided_problem_reaches_numpy_and_torch_with_its_strides(attr, isolate, tmp_path, monkeypatch):
    if attr == "TorchRecorder":
        pytest.importorskip("torch")
    log = tmp_path / "layouts.jsonl"
    monkeypatch.setenv("XENT_LAYOUT_LOG", str(log))
    runner = Runner(_entry(attr), isolate=isolate, timeout=120)
    problems = [_problem((4, 6, 3), m, seed=1) for m in MEMORY_LAYOUTS]
    problems += [_problem((6, 5), "transposed-class", prob=True, dtype=ml_dtypes.bfloat16)]
    try:
        outputs = [runner.call("loss_and_grad", p) for p in problems]
    finally:
        runner.close()
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(seen) == len(problems)
    import os

    assert all((r["pid"] != os.getpid()) == isolate for r in seen)
    for p, r in zip(problems, seen):
        expected = p.presented()
        assert r["memory"] == p.memory
        for name in ("logits", "target", "weight"):
            got = {k: tuple(v) if isinstance(v, list) else v for k, v in r[name].items()}
            assert got == describe(getattr(expected, name)), (p.memory, name)
        if "torch" in r:  # torch.from_numpy: the same memory, the same strides, no copy
            assert r["torch"]["same_memory"] and r["torch"]["target_same_memory"]
            assert tuple(r["torch"]["strides"]) == expected.logits.strides
    # the same values give the same bits whatever the layout
    for (loss, grad), p in zip(outputs[1:4], problems[1:4]):
        assert np.array_equal(loss, outputs[0][0]) and np.array_equal(grad, outputs[0][1]), p.memory


# -- check catches a plugin that assumes C order -----------------------------------------------------


def _cheapest(memory: str):
    """The smallest generated scenario of ``memory`` that the C-order plugin's base (float
    class-index targets, no special values) handles."""
    fits = [s for s in space.scenarios()
            if s.coordinates["memory"] == memory and s.coordinates["target"] in ("index", "index-inexact")
            and s.dtypes[0] in ("float32", "float64") and not {"special", "bits"} & set(s.tags)
            and s.coordinates["classes"] != "1" and s.coordinates["batch"] in ("small", "many")]
    assert fits, f"the space has no small {memory} scenario with float class-index targets any more"
    return min(fits, key=lambda s: s.size)


def test_check_catches_a_plugin_that_reads_c_order_on_the_memory_axis(tmp_path):
    views = [_cheapest(m).name for m in ("transposed-class", "strided")]
    names = ["scale-1", *views]  # scale-1: a named (contiguous) scenario
    # Correct: the same code reading the view properly
    argv = ["check", "--impl", f"{PLUGINS}:CStrides", "--impl", f"{PLUGINS}:Correct", "--out", str(tmp_path / "run")]
    assert main([*argv, *(a for n in names for a in ("--scenario", n))]) == 1
    by: dict[tuple, set] = {}
    for c in results.load(tmp_path / "run")["cells"]:
        by.setdefault((c["impl"], c["scenario"]), set()).add(c["status"])
    for impl in ("CStrides", "Correct"):  # float16/bfloat16: unsupported (the plugin declares f32, f64)
        assert "pass" in by[impl, "scale-1"] and by[impl, "scale-1"] <= {"pass", "unsupported"}
    for n in views:
        assert "fail" in by["CStrides", n], (n, by["CStrides", n])
        assert by["Correct", n] <= {"pass", "unsupported"}, (n, by["Correct", n])
