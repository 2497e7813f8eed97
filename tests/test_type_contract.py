"""Exact type contracts (issue 13, section 4): an implementation returns the loss in the logits'
dtype and the contract's shape (0-d for 'mean'/'sum' and for an unbatched 'none'), the gradient
in the logits' dtype and shape, and accepts the class-index dtypes torch takes (int64, uint8)."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from harness import budgets, reference, registry, results, verdicts
from harness.budget_measure import Float64Control
from harness.cli import main
from harness.problem import Problem

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = str(ROOT / "tests" / "plugins" / "contract_types.py")
BF16 = np.dtype(ml_dtypes.bfloat16)

X32 = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
T = np.array([0, 1, 2, 1])


def _error(problem, y, quantity="loss") -> str:
    with pytest.raises(ValueError) as info:
        verdicts.check_output(problem, y, quantity)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{quantity}: ")
    return msg


# -- check_output ----------------------------------------------------------------------------------


def test_the_loss_must_have_the_logits_dtype():
    p = Problem(X32, T)
    msg = _error(p, np.float64(1.0))  # what np.asarray makes of a Python float
    assert "returned dtype float64, expected float32 (the logits' dtype)" in msg
    assert "Python float" in msg
    assert "returned dtype float16, expected float32" in _error(p, np.array(1.0, np.float16))
    assert "returned dtype int64, expected float32" in _error(p, np.array(1))
    assert "expected bfloat16" in _error(Problem(X32.astype(BF16), T), np.array(1.0, np.float32))
    # a float64 problem takes a float64 scalar: that is its dtype
    assert verdicts.check_output(Problem(X32.astype(np.float64), T), 1.0, "loss").dtype == np.float64


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_reduced_loss_is_0d_not_a_1_element_array(reduction):
    p = Problem(X32, T, reduction=reduction)
    msg = _error(p, np.array([1.0], np.float32))
    assert msg == (f"loss: returned shape (1,), expected () (a 0-d array for reduction '{reduction}', "
                   "not a 1-element array)")
    assert verdicts.check_output(p, np.float32(1.0), "loss").shape == ()  # a NumPy scalar is 0-d
    assert verdicts.check_output(p, np.array(1.0, np.float32), "loss").shape == ()


def test_unbatched_none_is_0d():
    p = Problem(X32[0], np.array(1), reduction="none")
    assert p.output_shape == ()
    msg = _error(p, np.zeros(1, np.float32))
    assert "expected () (a 0-d array for an unbatched input's 'none', not a 1-element array)" in msg
    assert verdicts.check_output(p, np.array(0.5, np.float32), "loss").shape == ()


def test_none_and_gradient_shapes_and_both_mismatches_in_one_line():
    p = Problem(X32, T, reduction="none")
    msg = _error(p, np.zeros((4, 1)))
    assert msg.startswith("loss: returned shape (4, 1), expected (4,); returned dtype float64, expected float32")
    g = _error(p, np.zeros((3, 4), np.float32), "grad")
    assert g == "grad: returned shape (3, 4), expected (4, 3)"
    assert "returned dtype float64, expected float32" in _error(p, np.zeros((4, 3)), "grad")


def test_only_the_byte_order_is_normalized():
    p = Problem(X32, T, reduction="none")
    y = verdicts.check_output(p, np.arange(4, dtype=">f4"), "loss")
    assert y.dtype == np.dtype("=f4") and y.tolist() == [0, 1, 2, 3]
    assert "returned dtype object" in _error(p, np.array([None] * 4))
    assert "returned list, which is not an array" in _error(p, [[1.0, 2.0], [3.0]])


# -- through the sweeps: error cells ---------------------------------------------------------------


def _cells(tmp_path, plugin, *args):
    out = tmp_path / plugin
    code = main(["check", "--impl", f"{PLUGINS}:{plugin}", "--no-isolate", "--out", str(out), *args])
    return code, {(c["kind"], c["scenario"], c["dtype"]): c for c in results.load(out)["cells"]}


@pytest.mark.parametrize(("plugin", "kinds", "fragment"), [
    ("PythonFloat", ("accuracy",), "loss: returned dtype float64, expected float32 (the logits' dtype)"),
    ("OneElement", ("accuracy",), "loss: returned shape (1,), expected () (a 0-d array for reduction 'mean'"),
    ("Float64Result", ("accuracy", "gradient"), "returned dtype float64, expected float32"),
])
def test_type_contract_violations_are_error_cells(tmp_path, plugin, kinds, fragment):
    code, cells = _cells(tmp_path, plugin, "--scenario", "weight-random-mean", "--dtype", "float32")
    assert code == 1
    for kind in kinds:
        c = cells[kind, "weight-random-mean", "float32"]
        assert c["status"] == "error" and fragment in c["message"] and "expected" in c["message"], c
    if kinds == ("accuracy",):  # the gradient is the right type: judged, and right
        assert cells["gradient", "weight-random-mean", "float32"]["status"] == "pass"


def test_a_float64_result_is_right_for_float64_logits(tmp_path):
    code, cells = _cells(tmp_path, "Float64Result", "--scenario", "weight-random-mean", "--dtype", "float64")
    assert code == 0 and {c["status"] for c in cells.values()} == {"pass"}


def test_faulty_correct_returns_the_contract_types():
    from tests.plugins.faulty import Correct

    for p in (Problem(X32, T), Problem(X32, T, reduction="none"), Problem(X32[0], np.array(2), reduction="none"),
              Problem(X32.astype(np.float64), T.astype(np.uint8), reduction="sum")):
        loss = Correct().loss(p.logits, p.target, **p.kwargs())
        grad = Correct().grad(p.logits, p.target, **p.kwargs())
        verdicts.check_output(p, loss, "loss")
        verdicts.check_output(p, grad, "grad")


# -- uint8 class indices ---------------------------------------------------------------------------


def _twins():
    """(uint8 problem, int64 twin) pairs over the options torch takes uint8 for: C = 300 so the
    indices reach 255, the class -100 wraps to in uint8 (156) included; every dtype."""
    rng = np.random.default_rng(13)
    t = np.array([156, 0, 255, 3, 17, 156, 200, 3])
    x = rng.normal(0, 3, (8, 300))
    w = rng.uniform(0.5, 2.0, 300)
    options = [{}, {"reduction": "none"}, {"reduction": "sum", "weight": w}, {"ignore_index": 3},
               {"ignore_index": 255, "reduction": "none", "weight": w},
               {"label_smoothing": 0.1, "reduction": "sum", "ignore_index": 200}]
    for dtype in (np.float16, BF16, np.float32, np.float64):
        for kw in options:
            yield (Problem(x.astype(dtype), t.astype(np.uint8), **kw), Problem(x.astype(dtype), t, **kw), kw)
        u = Problem(x[0].astype(dtype), np.array(156, np.uint8), reduction="none")
        yield u, Problem(x[0].astype(dtype), np.array(156), reduction="none"), {"unbatched": True}


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "float64-control"])
def test_uint8_targets_give_the_int64_results(name):
    impl = Float64Control() if name == "float64-control" else registry.get(name)
    if name != "float64-control" and impl.available():
        pytest.skip(impl.available())
    for p8, p64, kw in _twins():
        if name == "torch" and kw.get("label_smoothing") and (p8.target.astype(int) % 256 == 156).any():
            continue  # torch's uint8 smoothing bug (test_torch_uint8_smoothing_bug_is_caught)
        loss8, grad8 = impl.loss_and_grad(p8)
        loss64, grad64 = impl.loss_and_grad(p64)
        for a, b in ((loss8, loss64), (grad8, grad64)):
            assert a.dtype == b.dtype == p8.dtype and a.shape == b.shape
            assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (name, p8, kw)  # same bits


def test_torch_uint8_smoothing_bug_is_caught():
    """torch 2.13 compares uint8 targets with ignore_index in uint8 on its label-smoothing path
    (-100 is 156): the sample of class 156 loses its smoothing term. The judge fails torch there
    and passes numpy (tests/test_contract.py checks the torch behaviour itself)."""
    torch = registry.get("torch")
    if torch.available():
        pytest.skip(torch.available())
    x = np.random.default_rng(5).normal(0, 1, (4, 300)).astype(np.float32)
    p = Problem(x, np.array([156, 1, 2, 3], np.uint8), label_smoothing=0.1, reduction="none")
    ex = reference.evaluate(p, workers=1)
    budget = budgets.load()[0]["float32"]
    status, message, _ = verdicts.judge(p, "loss", torch.loss(p), ex.loss_hi, ex.loss_lo, budget)
    assert status == "fail" and "1 of 4 values outside budget" in message and "at [0]" in message
    ok, _, _ = verdicts.judge(p, "loss", registry.get("numpy").loss(p), ex.loss_hi, ex.loss_lo, budget)
    assert ok == "pass"
    twin = Problem(x, np.array([156, 1, 2, 3]), label_smoothing=0.1, reduction="none")
    assert verdicts.judge(twin, "loss", torch.loss(twin), ex.loss_hi, ex.loss_lo, budget)[0] == "pass"


def test_plugins_are_called_with_the_problems_index_dtype(monkeypatch):
    impl = registry.load_spec(f"{PLUGINS}:RecordsTargetDtype")
    p8 = Problem(X32, T.astype(np.uint8))
    monkeypatch.setenv("XENT_TEST_TARGET", "uint8")
    assert impl.loss(p8).dtype == np.float32
    monkeypatch.setenv("XENT_TEST_TARGET", "int64")
    with pytest.raises(TypeError, match="called with uint8 targets"):
        impl.loss(p8)
    assert impl.loss(Problem(X32, T)).dtype == np.float32
