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

from harness import metrics
from harness.budgets import scales
from harness.formats import Format
from harness.problem import Problem


def _describe(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


def check_output(problem: Problem, y, quantity: str) -> np.ndarray:
    """The output as an array of the problem's dtype; ValueError naming what is wrong."""
    y = np.asarray(y)
    shape = problem.output_shape if quantity == "loss" else problem.logits.shape
    if y.shape != shape:
        raise ValueError(f"{quantity}: returned shape {y.shape}, expected {shape}")
    if y.dtype != problem.dtype:
        raise ValueError(f"{quantity}: returned dtype {y.dtype.name}, expected {problem.dtype.name}")
    return y


def judge(problem: Problem, quantity: str, y: np.ndarray, hi: np.ndarray, lo: np.ndarray,
          budget: dict) -> tuple[str, str | None, dict]:
    """(status, message, metrics) of a loss or gradient against the reference (hi + lo)."""
    fmt: Format = problem.format
    q = "loss" if quantity == "loss" else "grad"
    hi = np.asarray(hi, np.float64)
    lo = np.asarray(lo, np.float64)
    rf = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(hi.shape)
    fin = np.isfinite(rf.astype(np.float64))
    yv, hv, lv = y[fin], hi[fin], lo[fin]
    m = metrics.compare(yv, hv, lv, fmt) if yv.size else {"count": 0}
    ulps = metrics.ulp_error(yv, hv, lv, fmt) if yv.size else np.zeros(0)
    m["hist"] = metrics.summarize(ulps)["hist"]
    yf = yv.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs((yf - hv) - lv)
        err = np.where(np.isfinite(yf), err, np.inf)
        scale = scales(problem, q)[fin]
        unit = 2.0 ** -fmt.precision * scale
        scaled = np.where(err == 0, 0.0, err / unit)
    m["scaled_max"] = float(scaled.max()) if scaled.size else None
    b_ulp, b_scaled = budget[f"{q}_ulp"], budget[f"{q}_scaled"]
    ok = (ulps <= b_ulp) | (scaled <= b_scaled)
    if ulps.size:
        # The worst element: the one furthest outside the budget (or the largest ULP error).
        badness = np.minimum(ulps / max(b_ulp, 1e-300), scaled / max(b_scaled, 1e-300))
        i = int(np.argmax(np.where(np.isnan(badness), np.inf, badness)))
        index = np.argwhere(fin)[i].tolist()
        m["worst"] = {"index": index, "y": float(yf[i]), "ref": float(hv[i] + lv[i]),
                      "ulp": float(ulps[i]), "scaled": float(scaled[i])}
    status, message = "pass", None
    bad = int(np.count_nonzero(~ok))
    m["failing"] = bad
    if bad:
        status = "fail"
        w = m["worst"]
        nonfinite = int(np.count_nonzero(~np.isfinite(yf)))
        what = "loss" if quantity == "loss" else "gradient"
        if nonfinite:
            message = (f"{what}: {nonfinite} of {yf.size} values are inf/NaN where the contract is "
                       f"finite (e.g. {_describe(w['y'])} for {_describe(w['ref'])} at {w['index']})")
        else:
            message = (f"{what}: {bad} of {yf.size} values outside budget; worst {_describe(w['y'])} "
                       f"for {_describe(w['ref'])} at {w['index']}: {w['ulp']:.3g} ULP, "
                       f"{w['scaled']:.3g}× the scaled budget unit (budget {b_ulp} ULP or {b_scaled})")
    return status, message, m


def judge_special(problem: Problem, outputs: dict, exact) -> tuple[str, str | None, dict] | None:
    """Special-value conformance over the positions where the reference is inf/NaN; None when
    it has none. ``outputs`` maps 'loss'/'grad' to the implementation's arrays (grad optional)."""
    fmt = problem.format
    parts = [("loss", exact.loss_hi, exact.loss_lo)]
    if outputs.get("grad") is not None and exact.grad_hi is not None:
        parts.append(("grad", exact.grad_hi, exact.grad_lo))
    count = mismatch = 0
    examples = []
    for name, hi, lo in parts:
        rf = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(np.shape(hi)).astype(np.float64)
        special = ~np.isfinite(rf)
        if not special.any():
            continue
        y = np.asarray(outputs[name]).astype(np.float64)
        ys, rs = y[special], rf[special]
        same = (np.isnan(ys) & np.isnan(rs)) | (ys == rs)
        count += int(special.sum())
        mismatch += int((~same).sum())
        for k in np.flatnonzero(~same)[:3]:
            idx = np.argwhere(special)[k].tolist()
            examples.append({"quantity": name, "index": idx, "y": float(ys[k]), "ref": float(rs[k])})
    if count == 0:
        return None
    m = {"count": count, "mismatch": mismatch, "examples": examples}
    if mismatch:
        e = examples[0]
        msg = (f"{mismatch} of {count} inf/NaN positions differ from the contract; e.g. {e['quantity']} "
               f"{e['index']}: {_describe(e['y'])} instead of {_describe(e['ref'])}")
        return "fail", msg, m
    return "pass", None, m
