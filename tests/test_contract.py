"""Contract fidelity: where the harness's input validation and PyTorch could disagree.

Each test checks one decision of docs/semantics.md ("Arguments: what is accepted, and why", the
special-values table, "Shapes and dtypes") twice: what the harness does (always), then that the
installed torch really behaves as the decision says (skipped, after the harness part ran, when
torch is not importable). A torch release that changes any of these behaviours fails here, and
the page and :mod:`harness.problem` must then be revisited.

Expected values are torch 2.13's in float64 (float32 where the case says so); they are checked
against torch and against our NumPy implementation, which follows PyTorch's chain for them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness import budgets
from harness.implementations._degenerate import degenerate_result
from harness.implementations.numpy_stable import NumpyStable
from harness.problem import Problem, ProblemError

nan, inf = math.nan, math.inf

X = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])  # 2 samples, C = 3
Y = np.array([0, 1])  # class 2 is used by no target
T_PROB = np.array([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])  # class 2 has target probability 0


def _torch():
    """torch and torch.nn.functional, or skip (the harness half of the test has run by then)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        pytest.skip("torch is not installed: the harness's behaviour was checked, torch's was not")
    return torch, F


def torch_ce(logits, target, **kw):
    """(loss, gradient) from torch.nn.functional.cross_entropy, as float64 NumPy arrays."""
    torch, F = _torch()
    x = torch.tensor(np.asarray(logits), requires_grad=True)
    t = torch.tensor(np.asarray(target))
    if kw.get("weight") is not None:
        kw["weight"] = torch.tensor(np.asarray(kw["weight"], dtype=np.asarray(logits).dtype))
    loss = F.cross_entropy(x, t, **kw)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach().double().numpy(), g.double().numpy()


def torch_raises(logits, target, match: str, *, backward: bool = False, **kw):
    torch, F = _torch()
    with pytest.raises((RuntimeError, ValueError, TypeError, IndexError), match=match):
        x = torch.tensor(np.asarray(logits), requires_grad=True)
        t = target if isinstance(target, torch.Tensor) else torch.tensor(np.asarray(target))
        loss = F.cross_entropy(x, t, **kw)
        if backward:
            loss.sum().backward()


def same(got, want, rtol=1e-12) -> bool:
    """Equal NaN positions, equal infinities (with sign), finite values within rtol."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return False
    inf_ = np.isinf(want)
    if not np.array_equal(np.isinf(got), inf_) or not np.array_equal(got[inf_], want[inf_]):
        return False
    fin = np.isfinite(want)
    return bool(np.allclose(got[fin], want[fin], rtol=rtol, atol=rtol))


def zero_signs_match(got, want) -> bool:
    """The signs of the exact zeros of ``want`` (NaN signs are not meaningful)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    zero = want == 0
    return bool(np.array_equal(np.signbit(got[zero]), np.signbit(want[zero])))


def ours(p: Problem):
    return NumpyStable().loss_and_grad(p)


def error(**kwargs) -> str:
    args = {"logits": X, "target": Y} | kwargs
    with pytest.raises(ProblemError) as info:
        Problem(**args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# -- 1. index target dtypes ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint16", "uint32", "uint64"])
def test_index_targets_must_be_int64_or_uint8(dtype):
    msg = error(target=Y.astype(dtype))
    assert msg.startswith("target:") and dtype in msg and "int64" in msg and "uint8" in msg
    assert Problem(X, Y.astype(np.int64)).target.dtype == np.int64
    assert Problem(X, Y.astype(">i8")).target.dtype == np.dtype("<i8")  # byte order is normalized

    torch, _ = _torch()
    torch_raises(X, torch.tensor(Y, dtype=getattr(torch, dtype)), "expected target dtype to be Long or Byte")


def test_uint8_targets_where_torch_takes_them():
    """uint8 (Byte) class indices: accepted for (C,) and (N, C) logits, loss and gradient equal to
    int64's; refused for K-dim inputs and for weighted 'mean' with label smoothing, as torch."""
    y8 = Y.astype(np.uint8)
    assert Problem(X, y8).target.dtype == np.uint8
    assert Problem(X[0], np.array(1, np.uint8)).target.dtype == np.uint8
    assert "K-dim" in error(logits=np.zeros((2, 3, 2)), target=np.zeros((2, 2), np.uint8))
    assert "gather" in error(target=y8, weight=np.ones(3), label_smoothing=0.1)
    Problem(X, y8, weight=np.ones(3), label_smoothing=0.1, reduction="sum")  # the other reductions work

    torch, _ = _torch()
    for kw in ({}, {"reduction": "none"}, {"weight": np.array([1.0, 2.0, 0.5]), "reduction": "sum"},
               {"ignore_index": 1}):
        p = Problem(X, y8, **kw)
        assert same(torch_ce(X, y8, **kw)[0], torch_ce(X, Y, **kw)[0])
        assert same(torch_ce(X, y8, **kw)[1], torch_ce(X, Y, **kw)[1])
        assert same(ours(p)[0], torch_ce(X, Y, **kw)[0]) and same(ours(p)[1], torch_ce(X, Y, **kw)[1])
    torch_raises(np.zeros((2, 3, 2)), torch.zeros(2, 2, dtype=torch.uint8), "expected scalar type Long but found Byte")
    torch_raises(X, torch.tensor(Y, dtype=torch.uint8), "gather", weight=torch.ones(3, dtype=torch.float64),
                 label_smoothing=0.1)


def test_torch_uint8_smoothing_treats_ignore_index_mod_256_as_ignored():
    """A torch 2.13 bug the harness catches (docs/semantics.md): with uint8 class indices and
    label smoothing, torch compares the target with ignore_index in uint8 (-100 wraps to 156), so
    a sample of class 156 loses its smoothing term; the nll term (and int64 targets) are right.
    The harness's contract is the int64 one: uint8 indices mean the same classes."""
    x = np.linspace(-2.0, 2.0, 3 * 300).reshape(3, 300)
    y = np.array([156, 3, 255])
    p = Problem(x, y.astype(np.uint8), label_smoothing=0.1, reduction="none")
    want = torch_ce(x, y, label_smoothing=0.1, reduction="none")[0]
    assert same(ours(p)[0], want)
    got = torch_ce(x, y.astype(np.uint8), label_smoothing=0.1, reduction="none")[0]
    assert not same(got[:1], want[:1]) and same(got[1:], want[1:])


def test_unbatched_target_must_be_0d():
    x = np.array([1.0, 2.0, 0.5])
    msg = error(logits=x, target=np.array([1]))
    assert msg.startswith("target:") and "shape ()" in msg and "0-d target" in msg
    assert Problem(x, np.array(1)).sample_shape == ()

    torch, F = _torch()
    # torch's forward takes (1,), its backward and its label-smoothing path do not
    xt = torch.tensor(x, requires_grad=True)
    loss = F.cross_entropy(xt, torch.tensor([1]))
    assert same(loss.detach().numpy(), torch_ce(x, np.array(1))[0])
    with pytest.raises(RuntimeError, match="size mismatch"):
        loss.backward()
    torch_raises(x, np.array([1]), "doesn't match the broadcast shape", label_smoothing=0.1)
    torch_raises(np.array([0.5]), np.array([0]), "Expected floating point type for target with class probabilities")


# -- 2. probability targets and ignore_index -------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [0, 1, 5, 2**40])
def test_probability_targets_reject_a_nonnegative_ignore_index(ignore_index):
    msg = error(target=T_PROB, ignore_index=ignore_index)
    assert msg.startswith("ignore_index:") and "-100" in msg
    torch_raises(X, T_PROB, "ignore_index is not supported for floating point target", ignore_index=ignore_index)


@pytest.mark.parametrize("ignore_index", [-1, -7, -(2**63)])
def test_probability_targets_ignore_a_negative_ignore_index(ignore_index):
    p = Problem(X, T_PROB, ignore_index=ignore_index)
    base = Problem(X, T_PROB)
    for a, b in zip(ours(p), ours(base), strict=True):
        np.testing.assert_array_equal(a, b)

    for red in ("mean", "sum", "none"):
        got = torch_ce(X, T_PROB, ignore_index=ignore_index, reduction=red)
        want = torch_ce(X, T_PROB, reduction=red)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


# -- 3. label_smoothing's type and range ------------------------------------------------------------
@pytest.mark.parametrize("value", ["0.1", b"0.1", None, 0.1 + 0j, np.array(0.1)], ids=repr)
def test_label_smoothing_must_be_a_real_scalar(value):
    msg = error(label_smoothing=value)
    assert msg.startswith("label_smoothing:") and "real number" in msg
    torch_raises(X, Y, "must be float", label_smoothing=value)


@pytest.mark.parametrize("value", [1.5, 1.0 + 2**-52, inf])
def test_label_smoothing_above_one_is_rejected(value):
    msg = error(label_smoothing=value)
    assert msg.startswith("label_smoothing:") and "at most 1" in msg
    torch_raises(X, Y, "label_smoothing must be between 0.0 and 1.0", label_smoothing=value)


@pytest.mark.parametrize("value", [True, 1, np.float32(0.1), np.float64(0.25), np.int64(1)], ids=repr)
def test_label_smoothing_takes_python_and_numpy_scalars(value):
    assert Problem(X, Y, label_smoothing=value).label_smoothing == float(value)
    got, want = torch_ce(X, Y, label_smoothing=value), torch_ce(X, Y, label_smoothing=float(value))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [-0.1, -0.0, nan, -inf, -1e300])
def test_label_smoothing_that_is_not_positive_means_none(value):
    p = Problem(X, Y, label_smoothing=value)
    assert p.label_smoothing == 0.0 and math.copysign(1.0, p.label_smoothing) == 1.0
    assert p.digest == Problem(X, Y).digest
    assert "label_smoothing" not in p.features

    w = np.array([1.0, 2.0, 3.0])
    for target in (Y, T_PROB):
        for red in ("mean", "sum", "none"):
            got = torch_ce(X, target, weight=w, reduction=red, label_smoothing=value)
            want = torch_ce(X, target, weight=w, reduction=red, label_smoothing=0.0)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)


# -- 4. ignore_index's range and type -------------------------------------------------------------------
@pytest.mark.parametrize("value", [2**70, -(2**70), 2**63, -(2**63) - 1, np.uint64(2**64 - 1)], ids=repr)
def test_ignore_index_must_fit_int64(value):
    msg = error(ignore_index=value)
    assert msg.startswith("ignore_index:") and "int64" in msg
    torch_raises(X, Y, "Overflow when unpacking long long", ignore_index=value)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), np.int64(1)], ids=repr)
def test_ignore_index_at_the_int64_limits_is_accepted(value):
    p = Problem(X, Y, ignore_index=value)
    assert p.ignore_index == int(value)
    torch_ce(X, Y, ignore_index=value)  # accepted


@pytest.mark.parametrize("value", [True, 1.0, "1"], ids=repr)
def test_ignore_index_must_be_an_int(value):
    assert error(ignore_index=value).startswith("ignore_index:")
    torch_raises(X, Y, "must be int", ignore_index=value)


# -- 5a. C = 0 -----------------------------------------------------------------------------------
def _c0_expected(prob: bool, eps: float, reduction: str, sample_shape):
    if prob:
        per, total = -0.0, -0.0
    elif eps > 0:
        per, total = nan, nan
    else:
        per, total = 0.0, 0.0
    if reduction == "none":
        return np.full(sample_shape, per)
    return np.array(total if reduction == "sum" else nan)


C0_SHAPES = [(0, 0), (3, 0), (0,), (0, 0, 2), (2, 0, 0), (2, 0, 3, 2)]


@pytest.mark.parametrize("shape", C0_SHAPES, ids=str)
@pytest.mark.parametrize("prob", [False, True], ids=["index", "prob"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["", "w"])
def test_an_empty_class_axis_follows_torch(shape, prob, eps, reduction, weighted):
    x = np.zeros(shape)
    sample_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = np.zeros(shape) if prob else np.full(sample_shape, -100, np.int64)
    w = np.zeros(0) if weighted else None
    p = Problem(x, target, weight=w, reduction=reduction, label_smoothing=eps)
    assert p.num_classes == 0 and p.output_shape == (sample_shape if reduction == "none" else ())
    want = _c0_expected(prob, eps, reduction, sample_shape)
    for loss, grad in (ours(p), degenerate_result(p)):
        assert same(loss, want) and zero_signs_match(loss, want)
        assert grad.shape == shape and grad.size == 0
    assert budgets.scales(p, "loss").shape == p.output_shape
    assert budgets.scales(p, "grad").shape == shape

    loss, grad = torch_ce(x, target, weight=w, reduction=reduction, label_smoothing=eps)
    assert same(loss, want) and zero_signs_match(loss, want)
    assert grad.shape == shape


@pytest.mark.parametrize("shape", [(2, 0, 3), (1, 0, 1)], ids=str)
def test_an_empty_class_axis_with_one_extra_dim_is_a_torch_bug(shape):
    """torch 2.13 raises for index targets with logits (N, 0, d), N·d > 0 (its 2-d nll path
    reshapes with view(n, 0, 1, -1)); the harness accepts the shape with the semantics of every
    other C = 0 input. If this test fails, torch fixed it: drop the note in docs/semantics.md."""
    sample_shape = shape[:1] + shape[2:]
    p = Problem(np.zeros(shape), np.full(sample_shape, -100, np.int64), reduction="none")
    np.testing.assert_array_equal(ours(p)[0], np.zeros(sample_shape))
    torch_raises(np.zeros(shape), np.full(sample_shape, -100), "size mismatch", reduction="none")
    # the same shape with probability targets, and one more dimension, work in torch
    torch_ce(np.zeros(shape), np.zeros(shape), reduction="none")
    torch_ce(np.zeros((*shape, 1)), np.full((*sample_shape, 1), -100), reduction="none")


def test_an_empty_class_axis_still_needs_ignored_targets():
    msg = error(logits=np.zeros((4, 0)), target=np.zeros(4, np.int64))
    assert msg.startswith("target:") and "outside [0, 0)" in msg and "ignore_index" in msg
    torch_raises(np.zeros((4, 0)), np.zeros(4, np.int64), "out of bounds")


# -- 5b. non-finite class weights -----------------------------------------------------------------------
def _check(p: Problem, loss, grad, *, rtol=1e-12):
    """Our implementation and torch both give (loss, grad) for problem p."""
    got = ours(p)
    assert same(got[0], loss, rtol=max(rtol, 1e-12)), (got[0], loss)
    assert same(got[1], grad, rtol=max(rtol, 1e-12)), (got[1], grad)
    tl, tg = torch_ce(p.logits, p.target, **p.kwargs())
    assert same(tl, loss, rtol=rtol), (tl, loss)
    assert same(tg, grad, rtol=rtol), (tg, grad)


@pytest.mark.parametrize("bad", [nan, inf, -inf])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_a_nonfinite_weight_of_an_unused_class_has_no_effect_without_smoothing(bad, reduction):
    finite = Problem(X, Y, weight=[1.0, 2.0, 7.0], reduction=reduction)
    p = Problem(X, Y, weight=[1.0, 2.0, bad], reduction=reduction)
    assert np.isnan(p.weight[2]) if math.isnan(bad) else p.weight[2] == bad
    want = ours(finite)
    assert np.isfinite(want[0]).all() and np.isfinite(want[1]).all()
    _check(p, *want)
    # a class whose only targets are ignored (ignore_index inside [0, C)) is unused as well
    q = Problem(X, np.array([0, 2]), weight=[1.0, 2.0, bad], ignore_index=2, reduction=reduction)
    _check(q, *ours(Problem(X, np.array([0, 2]), weight=[1.0, 2.0, 7.0], ignore_index=2, reduction=reduction)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_a_nonfinite_weight_of_an_unused_class_with_smoothing(reduction):
    per = reduction == "none"
    # NaN weight: NaN everywhere, ignored rows of the gradient included (0 * NaN in G)
    for target, loss in ((Y, [nan, nan]), (np.array([0, -100]), [nan, 0.0])):
        p = Problem(X, target, weight=[1.0, 2.0, nan], reduction=reduction, label_smoothing=0.1)
        _check(p, loss if per else nan, np.full((2, 3), nan))
    # +inf / -inf weight: W = ±inf; kept rows ±inf except NaN at that class; ignored rows NaN
    for s in (1.0, -1.0):
        row = [s * inf, s * inf, nan]
        p = Problem(X, Y, weight=[1.0, 2.0, s * inf], reduction=reduction, label_smoothing=0.1)
        _check(p, [s * inf, s * inf] if per else s * inf, [row, row])
        p = Problem(X, np.array([0, -100]), weight=[1.0, 2.0, s * inf], reduction=reduction, label_smoothing=0.1)
        _check(p, [s * inf, 0.0] if per else s * inf, [row, [nan, nan, nan]])


@pytest.mark.parametrize("bad", [nan, inf])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_a_nonfinite_weight_with_probability_targets(bad, eps):
    # t' = 0 at the class (eps = 0): 0 * bad = NaN; t' > 0 (eps > 0): bad itself
    p = Problem(X, T_PROB, weight=[1.0, 2.0, bad], reduction="sum", label_smoothing=eps)
    if math.isnan(bad) or eps == 0:
        _check(p, nan, np.full((2, 3), nan))
    else:
        _check(p, inf, [[inf, inf, nan], [inf, inf, nan]])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_nonfinite_weight_of_a_used_class(reduction):
    fin = ours(Problem(X, Y, weight=[1.0, 1.0, 1.0], reduction="sum"))[1]
    for s in (1.0, -1.0):
        p = Problem(X, Y, weight=[s * inf, 1.0, 1.0], reduction=reduction)
        if reduction == "sum":  # G_{0,0} = -s inf: NaN at the target, s inf elsewhere
            _check(p, s * inf, [[nan, s * inf, s * inf], fin[1]])
        else:  # W_K = ±inf: loss inf/inf = NaN, sigma = ±0 multiplies every row
            _check(p, nan, [[nan, nan, nan], [0.0, 0.0, 0.0]])
    p = Problem(X, Y, weight=[nan, 1.0, 1.0], reduction=reduction)
    _check(p, nan, [[nan] * 3, fin[1]] if reduction == "sum" else np.full((2, 3), nan))


def test_a_finite_weight_that_overflows_the_dtype_is_rejected():
    msg = error(logits=X.astype(np.float16), weight=np.array([1.0, 1e6, 1.0]))
    assert msg.startswith("weight:") and "overflows float16" in msg
    p = Problem(X.astype(np.float16), Y, weight=np.array([1.0, np.inf, 1.0]))  # an explicit inf is fine
    assert np.isinf(p.weight[1])


def test_budgets_ignore_an_unused_nonfinite_weight_without_smoothing():
    p = Problem(X, Y, weight=[1.0, 2.0, nan])
    q = Problem(X, Y, weight=[1.0, 2.0, 7.0])
    for quantity in ("loss", "grad"):
        np.testing.assert_array_equal(budgets.scales(p, quantity), budgets.scales(q, quantity))


# -- 6. special values of the contract ------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_an_infinite_probability_target(reduction):
    x = np.array([0.0, 0.0], np.float32)
    for s in (1.0, -1.0):
        p = Problem(x, np.array([s * inf, 0.0], np.float32), reduction=reduction)
        _check(p, s * inf, [nan, s * inf], rtol=1e-6)
    # it meets L = 0 (a single class): inf * 0 = NaN
    _check(Problem(np.array([[3.0]]), np.array([[inf]]), reduction="sum"), nan, [[nan]])


def test_a_zero_total_weight_with_a_nonzero_numerator():
    x = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    w = np.array([1.0, -1.0], np.float32)
    pattern = [[nan, inf], [-inf, nan]]
    _check(Problem(x, Y, weight=w), inf, pattern, rtol=1e-6)  # numerator 0.1863 > 0
    _check(Problem(x[:, ::-1].copy(), Y, weight=w), -inf, pattern, rtol=1e-6)  # numerator < 0
    # an ignored sample keeps a zero gradient row
    x3 = np.vstack([x, [[3.0, 3.0]]]).astype(np.float32)
    _check(Problem(x3, np.array([0, 1, -100]), weight=w), inf, [*pattern, [0.0, 0.0]], rtol=1e-6)
    # with label smoothing every kept row is NaN (both signs of inf in G)
    _check(Problem(x, Y, weight=w, label_smoothing=0.1), inf, np.full((2, 2), nan), rtol=1e-6)
    # numerator 0 (zero weights): 0/0
    _check(Problem(x, np.array([0, 0]), weight=np.array([0.0, 1.0], np.float32)), nan, np.full((2, 2), nan))
    # 'sum' and 'none' do not divide
    fin = Problem(x, Y, weight=w, reduction="sum")
    assert np.isfinite(ours(fin)[0]) and np.isfinite(torch_ce(x, Y, weight=w, reduction="sum")[0])
