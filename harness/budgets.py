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


def _packaged() -> dict:
    return tomllib.loads(resources.files("harness").joinpath("budgets.toml").read_text())


def defaults() -> dict:
    """The default budgets: the [<dtype>] tables of harness/budgets.toml."""
    return {d: v for d, v in _packaged().items() if d in DTYPE_NAMES}


def measured() -> dict:
    """The [measured] record of harness/budgets.toml: the maxima the defaults were derived from
    (``xent-harness budgets measure --write``, harness/budget_measure.py); {} when absent."""
    return _packaged().get("measured", {})


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


def project_pyproject(cwd: Path | None = None) -> Path | None:
    """The checked project's ``pyproject.toml``: the current directory's, never a parent's
    (a file in some folder above must not loosen the gate of the project below it)."""
    p = Path(cwd or Path.cwd()) / "pyproject.toml"
    return p if p.is_file() else None


def read_toml(path: Path, what: str) -> dict:
    """A TOML file as a dict; BudgetError naming ``what`` (the flag or role) and the file."""
    if path.is_dir():
        raise BudgetError(f"{what}: {path} is a directory; name a TOML file")
    if not path.is_file():
        raise BudgetError(f"{what}: file {str(path)!r} does not exist (expected a TOML file)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BudgetError(f"{what}: {path} is not text (a binary file?); expected TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise BudgetError(f"{what}: {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise BudgetError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None


def tool_section(data: dict, where: str) -> dict:
    """``[tool.xent-harness]`` of a TOML document ({} when absent), checked to be tables."""
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise BudgetError(f"{where}: `tool` must be a table ([tool.xent-harness]), not {type(tool).__name__}")
    section = tool.get("xent-harness", {})
    if not isinstance(section, dict):
        raise BudgetError(f"{where}: `tool.xent-harness` must be a table ([tool.xent-harness]), "
                          f"not {type(section).__name__}")
    return section


def _budget_table(section, where: str) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise BudgetError(f"budgets: the budgets in {where} must be tables [<dtype>] of {', '.join(KEYS)}")
    return _validate(section, where)


def load(path: str | Path | None = None, *, cwd: Path | None = None) -> tuple[dict, str]:
    """The budgets in force and where they came from: the defaults, updated by the current
    directory's pyproject.toml [tool.xent-harness.budgets], updated by ``path`` (a TOML file
    with either top-level dtype tables or the same [tool.xent-harness.budgets] section)."""
    budgets = copy.deepcopy(defaults())
    sources = ["defaults (harness/budgets.toml)"]
    pyproject = project_pyproject(cwd)
    if pyproject is not None:
        table = _budget_table(tool_section(read_toml(pyproject, "budgets"), str(pyproject)).get("budgets"),
                              str(pyproject))
        for dtype, entry in table.items():
            budgets[dtype].update(entry)
        if table:
            sources.append(str(pyproject))
    if path is not None:
        p = Path(path)
        data = read_toml(p, "--budgets")
        section = tool_section(data, str(p))
        table = _budget_table(section["budgets"] if "budgets" in section else
                              {k: v for k, v in data.items() if k != "tool"}, str(p))
        for dtype, entry in table.items():
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
    with np.errstate(over="ignore"):  # a scale past the float64 maximum is +inf: every error fits in it
        per = c * (mag + math.log(max(problem.num_classes, 1)))
        total = per.sum()
    if problem.reduction == "none":
        return per.reshape(problem.output_shape)
    return np.array(total / denom if problem.reduction == "mean" and denom else total)


def grad_row_scales(problem: Problem) -> np.ndarray:
    """The gradient's scale per row of ``problem.rows()`` (every class of a row has the same):
    what :func:`scales` broadcasts, as an (M,) array, for judging in row blocks."""
    mag, _, cg, sigma, _ = _row_factors(problem)
    return sigma * cg * mag


# -- known failures --------------------------------------------------------------------------------


def load_known(path: str | Path | None = None, *, cwd: Path | None = None) -> tuple[list[dict], str]:
    """Known failures: cells that fail for a documented reason and must not fail the gate,
    and where they came from ("none" when nowhere).

    Each entry is ``{cells = "IMPL/DTYPE/KIND/SCENARIO" glob, reason = "..."}`` under
    ``[[tool.xent-harness.known-failures]]`` in the current directory's pyproject.toml, or
    top-level ``[[known-failures]]`` tables in ``path``. A known cell keeps its status (the
    report still shows it) and gains a ``known`` field; only unknown failures fail ``check``."""
    entries: list[dict] = []
    sources = []
    pyproject = project_pyproject(cwd)
    if pyproject is not None:
        section = tool_section(read_toml(pyproject, "known failures"), str(pyproject))
        if "known-failures" in section:
            sources.append((section["known-failures"], str(pyproject)))
    if path is not None:
        p = Path(path)
        data = read_toml(p, "--known")
        section = tool_section(data, str(p))
        sources.append((section.get("known-failures", data.get("known-failures", [])), str(p)))
    need = "each entry needs cells = \"IMPL/DTYPE/KIND/SCENARIO\" (or a list of them) and reason = \"...\""
    for items, where in sources:
        if not isinstance(items, list):
            raise BudgetError(f"known-failures in {where}: must be an array of tables [[known-failures]]; {need}")
        for item in items:
            cells = item.get("cells") if isinstance(item, dict) else None
            cells = [cells] if isinstance(cells, str) else cells
            if (not isinstance(cells, list) or not cells or not all(isinstance(c, str) for c in cells)
                    or not isinstance(item.get("reason"), str) or not item["reason"]):
                raise BudgetError(f"known-failures in {where}: {need}")
            for c in cells:
                if c.count("/") != 3:
                    raise BudgetError(f"known-failures in {where}: {c!r} must have the form IMPL/DTYPE/KIND/SCENARIO")
            entries.append({"cells": cells, "reason": item["reason"]})
    return entries, " + ".join(where for _, where in sources) or "none"


def known_reason(cell: dict, known: list[dict]) -> str | None:
    from fnmatch import fnmatchcase

    key = vocabulary.cell_id(cell)
    for k in known:
        if any(fnmatchcase(key, pattern) for pattern in k["cells"]):
            return k["reason"]
    return None
