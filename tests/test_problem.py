"""Problem validation: one ProblemError (a ValueError) naming the field, for everything PyTorch
rejects."""

import ml_dtypes
import numpy as np
import pytest

from harness.problem import Problem, ProblemError

X = np.zeros((4, 3), np.float32)
T = np.array([0, 1, 2, 1])

BAD = [
    # (kwargs, field named in the message, a fragment of the fix)
    ({"logits": np.zeros((4, 3), np.int32)}, "logits", "float"),
    ({"logits": np.zeros((4, 3), np.complex64)}, "logits", "unsupported dtype"),
    ({"logits": np.float32(1.0)}, "logits", "shape"),
    ({"logits": np.zeros((4, 0), np.float32), "target": np.zeros(4, np.int64)}, "target", "outside [0, 0)"),
    ({"target": np.array([0, 1, 2])}, "target", "shape (4,)"),
    ({"target": np.array([0, 1, 3, 1])}, "target", "outside [0, 3)"),
    ({"target": np.array([0, -1, 2, 1])}, "target", "outside [0, 3)"),
    ({"target": np.array([True, False, True, False])}, "target", "boolean"),
    ({"target": np.zeros((4, 2), np.float32)}, "target", "logits' shape"),
    ({"target": np.array(["a", "b", "c", "d"])}, "target", "neither"),
    ({"target": np.array([0, 1, 2, 1], np.int32)}, "target", "use target.astype(np.int64)"),
    ({"target": np.array([0, 1, 2, 1], np.uint16)}, "target", "int64 (PyTorch's Long) or uint8"),
    ({"target": np.array([0, 1, 3, 1], np.uint8)}, "target", "outside [0, 3)"),
    ({"logits": np.zeros((4, 3, 2), np.float32), "target": np.zeros((4, 2), np.uint8)}, "target",
     "refused for K-dim logits"),
    ({"target": np.array([0, 1, 2, 1], np.uint8), "weight": np.ones(3), "label_smoothing": 0.1}, "target",
     "class weights, reduction 'mean' and label smoothing"),
    ({"logits": np.zeros(3, np.float32), "target": np.array([1])}, "target", "0-d target"),
    ({"weight": np.ones(2)}, "weight", "shape (3,)"),
    ({"logits": np.zeros((4, 3), np.float16), "weight": np.array([1.0, 1e6, 1.0])}, "weight", "overflows"),
    ({"label_smoothing": 1.5}, "label_smoothing", "at most 1"),
    ({"label_smoothing": float("inf")}, "label_smoothing", "at most 1"),
    ({"label_smoothing": "0.1"}, "label_smoothing", "real number"),
    ({"label_smoothing": None}, "label_smoothing", "real number"),
    ({"reduction": "avg"}, "reduction", "'mean', 'sum' or 'none'"),
    ({"ignore_index": 1.5}, "ignore_index", "integer"),
    ({"ignore_index": True}, "ignore_index", "integer"),
    ({"ignore_index": 2**70}, "ignore_index", "int64"),
    ({"target": np.full((4, 3), 1 / 3), "ignore_index": 0}, "ignore_index", "-100"),
]


@pytest.mark.parametrize(("kwargs", "field", "fix"), BAD)
def test_invalid_problems_name_the_field(kwargs, field, fix):
    args = {"logits": X, "target": T} | kwargs
    with pytest.raises(ProblemError) as info:
        Problem(**args)
    msg = str(info.value)
    assert msg.startswith(f"{field}:"), msg
    assert fix in msg, msg
    assert "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_ignore_index_may_lie_inside_the_class_range():
    p = Problem(X, np.array([0, 1, 2, 1]), ignore_index=1)
    assert "ignore_index" in p.features


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_shapes_and_dtypes(dtype):
    unbatched = Problem(np.zeros(5, dtype), np.array(2))
    assert unbatched.num_classes == 5 and unbatched.sample_shape == () and unbatched.output_shape == ()
    kdim = Problem(np.zeros((2, 5, 3, 4), dtype), np.zeros((2, 3, 4), np.int64), reduction="none")
    assert kdim.num_classes == 5 and kdim.output_shape == (2, 3, 4)
    x, t = kdim.rows()
    assert x.shape == (24, 5) and t.shape == (24,)
    np.testing.assert_array_equal(kdim.unrows(x), kdim.logits)
    prob = Problem(np.zeros((2, 5), dtype), np.full((2, 5), 0.2), weight=[1, 2, 3, 4, 5])
    assert prob.target.dtype == np.dtype(dtype) and prob.weight.dtype == np.dtype(dtype)
    assert prob.probability_target and "weight" in prob.features


def test_empty_batch_is_valid():
    p = Problem(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert p.num_samples == 0 and p.output_shape == ()


@pytest.mark.parametrize(
    "logits, target",
    [
        (np.zeros((0, 0)), np.zeros(0, np.int64)),
        (np.zeros((3, 0)), np.full(3, -100)),
        (np.zeros((3, 0)), np.zeros((3, 0))),
        (np.zeros(0), np.array(-100)),
        (np.zeros((2, 0, 3)), np.full((2, 3), 7)),
    ],
    ids=["N0C0", "ignored", "prob", "unbatched", "kdim"],
)
def test_an_empty_class_axis_is_valid(logits, target):
    ignore = 7 if logits.ndim == 3 else -100
    p = Problem(logits, target, weight=np.zeros(0), ignore_index=ignore, reduction="none")
    assert p.num_classes == 0 and p.output_shape == p.sample_shape
    x, _ = p.rows()
    assert x.shape == (p.num_samples, 0)
    np.testing.assert_array_equal(p.unrows(x), p.logits)


def test_accepted_values_that_torch_treats_alike_are_canonical():
    base = Problem(X, T)
    for eps in (-0.1, -0.0, float("nan"), -float("inf")):
        p = Problem(X, T, label_smoothing=eps)
        assert p.label_smoothing == 0.0 and p.digest == base.digest
    assert Problem(X, T, label_smoothing=True).label_smoothing == 1.0
    assert Problem(X, T, label_smoothing=np.float32(0.5)).label_smoothing == 0.5
    assert Problem(X, T.astype(">i8")).target.dtype == np.dtype(np.int64)
    assert Problem(X, T, ignore_index=2**63 - 1).ignore_index == 2**63 - 1
    assert Problem(X, np.full((4, 3), 1 / 3), ignore_index=-1).ignore_index == -1


def test_nonfinite_weights_are_valid():
    for bad in (np.nan, np.inf, -np.inf):
        p = Problem(X, T, weight=np.array([1.0, bad, 1.0]))
        assert p.weight.dtype == np.float32 and not np.isfinite(p.weight[1])


def test_digest_is_stable_and_sensitive():
    a = Problem(X, T)
    assert a.digest == Problem(X.copy(), T.copy()).digest
    assert a.digest != Problem(X, T, label_smoothing=0.1).digest
    assert a.digest != Problem(X.astype(np.float64), T).digest
    assert a.digest != Problem(X, T, weight=np.ones(3)).digest


def test_arrays_are_frozen():
    p = Problem(X, T)
    with pytest.raises(ValueError):
        p.logits[0, 0] = 1.0


def test_uint8_class_indices_are_kept_and_read_as_int64():
    """PyTorch takes Long and Byte class indices: a uint8 target is accepted (where every path of
    PyTorch takes it), kept in its dtype (the implementations are called with it), widened by
    rows(); its digest differs from its int64 twin's (a different call, the same reference)."""
    t8 = T.astype(np.uint8)
    p = Problem(X, t8, reduction="none")
    assert p.target.dtype == np.uint8 and not p.probability_target
    assert p.output_shape == (4,) and p.features == Problem(X, T, reduction="none").features
    _, t = p.rows()
    assert t.dtype == np.int64 and t.tolist() == T.tolist()
    assert p.digest != Problem(X, T, reduction="none").digest
    assert p.digest == Problem(X.copy(), t8.copy(), reduction="none").digest
    assert p.astype(np.float64).target.dtype == np.uint8 and p.replace(reduction="sum").target.dtype == np.uint8
    # ignore_index is compared with the class index's value, not wrapped to uint8 (-100 is not 156)
    q = Problem(np.zeros((3, 300), np.float32), np.array([156, 3, 255], np.uint8), reduction="sum")
    assert "ignore_index" not in q.features
    inside = Problem(np.zeros((3, 200), np.float32), np.array([156, 3, 7], np.uint8), ignore_index=3)
    assert "ignore_index" in inside.features
    # unbatched: a 0-d uint8 target; weighted 'sum' and 'none' with smoothing are accepted
    assert Problem(np.zeros(5), np.array(4, np.uint8)).sample_shape == ()
    Problem(X, t8, weight=np.ones(3), label_smoothing=0.1, reduction="sum")
    Problem(X, t8, weight=np.ones(3), label_smoothing=0.0, reduction="mean")


def test_index_byte_order_is_normalized():
    assert Problem(X, T.astype(">i8")).target.dtype == np.dtype("=i8")
    assert Problem(X, T.astype("|u1")).target.dtype == np.dtype(np.uint8)
