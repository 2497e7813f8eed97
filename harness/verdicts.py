"""Turn an implementation's output and the reference into a cell: metrics, status and message.

Three kinds of cell per (implementation, dtype, scenario):

* ``accuracy`` (the loss) and ``gradient``: metrics over the positions where the correctly
  rounded reference is finite; an element passes within the ULP *or* the scaled budget
  (harness/budgets.toml); a NaN or inf where the reference is finite fails;
* ``special``: only where the reference has inf/NaN somewhere; passes when the implementation
  returns exactly the same inf/NaN at those positions (loss and gradient).
"""

from __future__ import annotations

import math

import numpy as np

from harness import metrics, vocabulary
from harness.budgets import scales
from harness.formats import Format
from harness.problem import Problem
from harness.segment_sums import SegmentSums


def _describe(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


def check_output(problem: Problem, y, quantity: str) -> np.ndarray:
    """The output as an array of exactly the contract's type; ValueError (one line, expected vs
    got) naming what is wrong.

    The loss must have the logits' dtype and ``problem.output_shape``: a 0-d array for 'mean'
    and 'sum' and for an unbatched 'none' (a NumPy scalar is one; a 1-element array is not),
    the sample shape for 'none'. The gradient must have the logits' dtype and shape. A float64
    result for float32 logits is an error, however exact: a Python float returned through
    ``np.asarray`` is float64, and the contract is PyTorch's, whose loss has the logits' dtype.
    Only the byte order is normalized (a byte-swapped float32 is float32)."""
    try:
        arr = np.asarray(y)
    except Exception as exc:  # a ragged list, a device tensor NumPy cannot read ...
        raise ValueError(f"{quantity}: returned {type(y).__name__}, which is not an array "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    shape = problem.output_shape if quantity == "loss" else problem.logits.shape
    want = problem.dtype
    wrong = []
    if arr.shape != shape:
        wrong.append(f"returned shape {arr.shape}, expected {shape}{_shape_hint(problem, quantity, arr)}")
    if arr.dtype != want:
        if _byte_swapped(arr.dtype, want):
            arr = arr.astype(want)
        else:
            wrong.append(f"returned dtype {_dtype_name(arr.dtype)}, expected {want.name} (the logits' dtype)"
                         + _dtype_hint(arr.dtype, want))
    if wrong:
        raise ValueError(f"{quantity}: " + "; ".join(wrong))
    return arr


def _dtype_name(dt: np.dtype) -> str:
    return dt.name if dt.isnative else f"{dt.name} ({dt.str})"


def _byte_swapped(got: np.dtype, want: np.dtype) -> bool:
    try:
        return not got.isnative and got.newbyteorder("=") == want
    except (TypeError, ValueError):  # dtypes without a byte order
        return False


def _shape_hint(problem: Problem, quantity: str, arr: np.ndarray) -> str:
    if quantity != "loss" or problem.output_shape != ():
        return ""
    why = "an unbatched input's 'none'" if problem.reduction == "none" else f"reduction '{problem.reduction}'"
    got = ", not a 1-element array" if arr.size == 1 else ""
    return f" (a 0-d array for {why}{got})"


def _dtype_hint(got: np.dtype, want: np.dtype) -> str:
    if got == np.float64:
        return ("; a Python float or a float64 result: return it in the logits' dtype, "
                "e.g. np.asarray(value, dtype=logits.dtype)")
    return ""


def judge(problem: Problem, quantity: str, y: np.ndarray, hi: np.ndarray, lo: np.ndarray,
          budget: dict) -> tuple[str, str | None, dict]:
    """(status, message, metrics) of a loss or gradient against the reference (hi + lo)."""
    fmt: Format = problem.format
    q = quantity
    hi = np.asarray(hi, np.float64)
    lo = np.asarray(lo, np.float64)
    rf = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(hi.shape)
    fin = np.isfinite(rf.astype(np.float64))
    yv, hv, lv = y[fin], hi[fin], lo[fin]
    m = metrics.compare(yv, hv, lv, fmt) if yv.size else {"count": 0}
    ulps = metrics.ulp_error(yv, hv, lv, fmt) if yv.size else np.zeros(0)
    m["hist"] = metrics.summarize(ulps)["hist"]
    if yv.size:
        # the mean and the normwise error from per-row partial sums combined exactly (see
        # segment_sums.SegmentSums): the blockwise judge (harness.blockwise) gives the same bits
        m["ulp_mean"], m["normwise"] = _segment_sums(problem, quantity, fin, yv, hv, lv, ulps,
                                                     m["nonfinite_mismatch"] > 0)
    yf = yv.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs((yf - hv) - lv)
        err = np.where(np.isfinite(yf), err, np.inf)
        scale = scales(problem, q)[fin]
        unit = 2.0 ** -fmt.precision * scale
        scaled = np.where(err == 0, 0.0, err / unit)
    m["scaled_max"] = float(scaled.max()) if scaled.size else None
    b_ulp, b_scaled = (budget[vocabulary.budget_key(q, m)] for m in vocabulary.METRICS)
    ok = (ulps <= b_ulp) | (scaled <= b_scaled)
    if ulps.size:
        # The worst element: the one furthest outside the budget (or the largest ULP error).
        badness = np.minimum(ulps / max(b_ulp, 1e-300), scaled / max(b_scaled, 1e-300))
        i = int(np.argmax(np.where(np.isnan(badness), np.inf, badness)))
        index = np.argwhere(fin)[i].tolist()
        m["worst"] = {"index": index, "y": float(yf[i]), "ref": float(hv[i] + lv[i]),
                      "ulp": float(ulps[i]), "scaled": float(scaled[i])}
    bad = int(np.count_nonzero(~ok))
    m["failing"] = bad
    nonfinite = int(np.count_nonzero(~np.isfinite(yf)))
    status, message = verdict(quantity, m, bad, nonfinite, int(yf.size), b_ulp, b_scaled)
    return status, message, m


def _segment_sums(problem: Problem, quantity: str, fin, yv, hv, lv, ulps, mismatch: bool):
    """(ulp_mean, normwise) of the compared positions, summed per row segment of the
    problem's rows() view (the loss: one row), zeros elsewhere."""

    def rows(values):
        full = np.zeros(fin.shape)
        full[fin] = values
        if quantity == "loss" or full.ndim < 2:
            return full.reshape(1, -1)
        return np.moveaxis(full, problem.class_axis, -1).reshape(-1, full.shape[problem.class_axis])

    sums = SegmentSums()
    with np.errstate(invalid="ignore", over="ignore"):
        y = rows(np.where(np.isfinite(yv.astype(np.float64)), yv.astype(np.float64), 0.0))
        sums.add_rows(rows(ulps), y, rows(hv), rows(lv), int(yv.size), mismatch)
    return sums.mean_value(), sums.normwise()


def verdict(quantity: str, m: dict, bad: int, nonfinite: int, count: int, b_ulp, b_scaled
            ) -> tuple[str, str | None]:
    """Status and message of a loss/gradient cell from its metrics (shared with the blockwise
    judge, :mod:`harness.blockwise`): ``bad`` elements outside the budget, ``nonfinite`` of the
    ``count`` compared are inf/NaN."""
    if not bad:
        return "pass", None
    w = m["worst"]
    what = vocabulary.noun(quantity)
    if nonfinite:
        message = (f"{what}: {nonfinite} of {count} values are inf/NaN where the contract is "
                   f"finite (e.g. {_describe(w['y'])} for {_describe(w['ref'])} at {w['index']})")
    else:
        message = (f"{what}: {bad} of {count} values outside budget; worst {_describe(w['y'])} "
                   f"for {_describe(w['ref'])} at {w['index']}: {w['ulp']:.3g} ULP, "
                   f"{w['scaled']:.3g}× the scaled budget unit (budget {b_ulp} ULP or {b_scaled})")
    return "fail", message


def special_part(problem: Problem, y: np.ndarray, hi, lo, name: str) -> tuple[int, int, list[dict]]:
    """(positions where RN_F(reference) is inf/NaN, how many of them y misses, the first three
    misses) of one quantity."""
    fmt = problem.format
    rf = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi)).astype(np.float64)
    special = ~np.isfinite(rf)
    if not special.any():
        return 0, 0, []
    y = np.asarray(y).astype(np.float64)
    ys, rs = y[special], rf[special]
    same = (np.isnan(ys) & np.isnan(rs)) | (ys == rs)
    examples = []
    for k in np.flatnonzero(~same)[:3]:
        idx = np.argwhere(special)[k].tolist()
        examples.append({"quantity": name, "index": idx, "y": float(ys[k]), "ref": float(rs[k])})
    return int(special.sum()), int((~same).sum()), examples


def special_verdict(parts: list[tuple[int, int, list[dict]]]) -> tuple[str, str | None, dict] | None:
    """The special-value cell from the parts of :func:`special_part` (None: no special position)."""
    count = sum(p[0] for p in parts)
    mismatch = sum(p[1] for p in parts)
    examples = [e for p in parts for e in p[2]]
    if count == 0:
        return None
    m = {"count": count, "mismatch": mismatch, "examples": examples}
    if mismatch:
        e = examples[0]
        msg = (f"{mismatch} of {count} inf/NaN positions differ from the contract; e.g. {e['quantity']} "
               f"{e['index']}: {_describe(e['y'])} instead of {_describe(e['ref'])}")
        return "fail", msg, m
    return "pass", None, m


def judge_special(problem: Problem, outputs: dict, exact) -> tuple[str, str | None, dict] | None:
    """Special-value conformance over the positions where the reference is inf/NaN; None when
    it has none. ``outputs`` maps 'loss'/'grad' to the implementation's arrays (grad optional)."""
    parts = [special_part(problem, outputs["loss"], *exact.pair("loss"), "loss")]
    if outputs.get("grad") is not None and exact.grad_hi is not None:
        parts.append(special_part(problem, outputs["grad"], *exact.pair("grad"), "grad"))
    return special_verdict(parts)
