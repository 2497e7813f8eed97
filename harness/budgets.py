"""Accuracy budgets and verdicts.

The defaults live in ``harness/budgets.toml`` (read its header for the reasoning); users override
them in ``pyproject.toml`` under ``[tool.xent-harness.budgets.<dtype>]`` or with ``--budgets
FILE``. An element passes when its error is within the ULP budget *or* the backward-stable
("scaled") budget; :func:`scales` computes the scale each element is entitled to.
"""

from __future__ import annotations

import copy
import math
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np

from harness import vocabulary
from harness.formats import DTYPE_NAMES
from harness.problem import Problem

KEYS = vocabulary.BUDGET_KEYS


class BudgetError(ValueError):
    """A budget file or table that cannot be used (one line: file, key, fix)."""


def defaults() -> dict:
    text = resources.files("harness").joinpath("budgets.toml").read_text()
    return tomllib.loads(text)


def _validate(table: dict, where: str) -> dict:
    out = {}
    for dtype, entry in table.items():
        if dtype not in DTYPE_NAMES:
            raise BudgetError(f"budgets: unknown dtype {dtype!r} in {where}; use {', '.join(DTYPE_NAMES)}")
        if not isinstance(entry, dict):
            raise BudgetError(f"budgets: [{dtype}] in {where} must be a table of {', '.join(KEYS)}")
        for key, value in entry.items():
            if key not in KEYS:
                raise BudgetError(f"budgets: unknown key {dtype}.{key} in {where}; use {', '.join(KEYS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise BudgetError(f"budgets: {dtype}.{key} in {where} must be a number >= 0, got {value!r}")
        out[dtype] = dict(entry)
    return out


def _find_pyproject(start: Path) -> Path | None:
    for d in (start, *start.parents):
        p = d / "pyproject.toml"
        if p.is_file():
            return p
    return None


def load(path: str | Path | None = None, *, cwd: Path | None = None) -> tuple[dict, str]:
    """The budgets in force and where they came from: the defaults, updated by the nearest
    pyproject.toml's [tool.xent-harness.budgets], updated by ``path`` (a TOML file with either
    top-level dtype tables or the same [tool.xent-harness.budgets] section)."""
    budgets = copy.deepcopy(defaults())
    sources = ["defaults (harness/budgets.toml)"]
    pyproject = _find_pyproject(Path(cwd or Path.cwd()))
    if pyproject is not None:
        try:
            section = tomllib.loads(pyproject.read_text()).get("tool", {}).get("xent-harness", {}).get("budgets")
        except tomllib.TOMLDecodeError as exc:
            raise BudgetError(f"budgets: {pyproject} is not valid TOML: {exc}") from None
        if section:
            for dtype, entry in _validate(section, str(pyproject)).items():
                budgets[dtype].update(entry)
            sources.append(str(pyproject))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise BudgetError(f"--budgets: file {str(p)!r} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BudgetError(f"--budgets: {p} is not valid TOML: {exc}") from None
        data = data.get("tool", {}).get("xent-harness", {}).get("budgets", data)
        for dtype, entry in _validate(data, str(p)).items():
            budgets[dtype].update(entry)
        sources.append(str(p))
    return budgets, " + ".join(sources)


# -- the scale each element is entitled to ---------------------------------------------------------


#: Logits per block when the row factors scan the logits (8 MB of float64 temporaries).
_ROW_BLOCK_ELEMS = 1 << 20


def _row_factors(problem: Problem):
    """Per row: logit magnitude 1 + max|x| (finite entries), loss weight factor c_n, gradient
    factor c'_n, and the reduction's sigma; plus the mean's denominator."""
    x, t = problem.rows()
    C = problem.num_classes
    eps = problem.label_smoothing
    w = np.ones(C) if problem.weight is None else np.abs(problem.weight.astype(np.float64))
    # max|x| over the finite entries, in row blocks: no full-size float64 copy of the logits
    # (an 8192 x 128256 language-model batch would need 8.4 GB for it); the max is exact, so
    # the blocking changes nothing
    M = x.shape[0]
    # eps > 0 implies C > 0 for index targets (C = 0 admits only ignored targets); the smoothing
    # terms are left out when eps = 0, as PyTorch leaves them out (a NaN weight of an unused
    # class must not turn 0 * NaN into a NaN scale)
    eoc = eps / C if eps > 0 and C else 0.0
    mag = np.empty(M)
    if problem.probability_target:
        c, cg = np.empty(M), np.empty(M)
    step = max(1, _ROW_BLOCK_ELEMS // max(C, 1))
    for a in range(0, M, step):
        rows = slice(a, min(M, a + step))
        xb = x[rows].astype(np.float64)
        fin = np.where(np.isfinite(xb), np.abs(xb), 0.0)
        mag[rows] = 1.0 + fin.max(axis=1, initial=0.0)
        if problem.probability_target:
            tb = t[rows].astype(np.float64)
            tp = (1 - eps) * tb + eoc if eps > 0 else tb
            wt = np.abs(w * tp)
            c[rows] = wt.sum(axis=1)
            cg[rows] = c[rows] + wt.max(axis=1, initial=0.0)
    if problem.probability_target:
        denom = float(problem.num_samples)
    else:
        kept = t != problem.ignore_index
        wy = np.where(kept, w[np.where(kept, t, 0)], 0.0) if C else np.zeros(t.shape)
        if eps > 0:
            c = np.where(kept, (1 - eps) * wy + eoc * w.sum(), 0.0)
            cg = np.where(kept, c + eoc * w.max(initial=0.0), 0.0)
        else:
            c = cg = wy
        signed_w = np.ones(C) if problem.weight is None else problem.weight.astype(np.float64)
        denom = float(np.abs(np.where(kept, signed_w[np.where(kept, t, 0)], 0.0).sum())) if C else 0.0
    sigma = 1.0 / denom if problem.reduction == "mean" and denom else 1.0
    return mag, c, cg, sigma, denom


def scales(problem: Problem, quantity: str) -> np.ndarray:
    """The backward-stable scale of every output element ('loss' or 'grad'), shaped like it."""
    if quantity == "grad":
        per = grad_row_scales(problem)
        rows = np.broadcast_to(per[:, None], (per.size, problem.num_classes))
        return problem.unrows(np.ascontiguousarray(rows))
    if quantity != "loss":
        raise ValueError(f"quantity must be 'loss' or 'grad', got {quantity!r}")
    mag, c, _, _, denom = _row_factors(problem)
    per = c * (mag + math.log(max(problem.num_classes, 1)))
    if problem.reduction == "none":
        return per.reshape(problem.output_shape)
    total = per.sum()
    return np.array(total / denom if problem.reduction == "mean" and denom else total)


def grad_row_scales(problem: Problem) -> np.ndarray:
    """The gradient's scale per row of ``problem.rows()`` (every class of a row has the same):
    what :func:`scales` broadcasts, as an (M,) array, for judging in row blocks."""
    mag, _, cg, sigma, _ = _row_factors(problem)
    return sigma * cg * mag


# -- known failures --------------------------------------------------------------------------------


def load_known(path: str | Path | None = None, *, cwd: Path | None = None) -> list[dict]:
    """Known failures: cells that fail for a documented reason and must not fail the gate.

    Each entry is ``{cells = "IMPL/DTYPE/KIND/SCENARIO" glob, reason = "..."}`` under
    ``[[tool.xent-harness.known-failures]]`` in the nearest pyproject.toml, or top-level
    ``[[known-failures]]`` tables in ``path``. A known cell keeps its status (the report still
    shows it) and gains a ``known`` field; only unknown failures fail ``check``."""
    entries: list[dict] = []
    sources = []
    pyproject = _find_pyproject(Path(cwd or Path.cwd()))
    if pyproject is not None:
        data = tomllib.loads(pyproject.read_text()).get("tool", {}).get("xent-harness", {})
        sources.append((data.get("known-failures", []), str(pyproject)))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise BudgetError(f"--known: file {str(p)!r} does not exist")
        data = tomllib.loads(p.read_text())
        data = data.get("tool", {}).get("xent-harness", data)
        sources.append((data.get("known-failures", []), str(p)))
    for items, where in sources:
        for item in items:
            cells = item.get("cells") if isinstance(item, dict) else None
            cells = [cells] if isinstance(cells, str) else cells
            if not cells or not all(isinstance(c, str) for c in cells) or not item.get("reason"):
                raise BudgetError(f"known-failures in {where}: each entry needs cells = \"IMPL/DTYPE/KIND/SCENARIO\" (or a list) and reason")
            for c in cells:
                if c.count("/") != 3:
                    raise BudgetError(f"known-failures in {where}: {c!r} must have the form IMPL/DTYPE/KIND/SCENARIO")
            entries.append({"cells": cells, "reason": item["reason"]})
    return entries


def known_reason(cell: dict, known: list[dict]) -> str | None:
    from fnmatch import fnmatchcase

    key = vocabulary.cell_id(cell)
    for k in known:
        if any(fnmatchcase(key, pattern) for pattern in k["cells"]):
            return k["reason"]
    return None
