"""The reference's vectorized first pass (numba): exp(x_j - m) in triple-double, with proven bounds.

This is the first phase of the CRlibm / CORE-MATH two-phase idea: whole row blocks are evaluated
in numba with a *proven* relative error bound (``EXP_REL``) far below the 2^-106 that the
double-double view of the reference needs; only what this pass cannot settle goes to MPFR.

The package imports numba at import time; ``import harness`` does not import it (callers import
``harness.fastpath`` lazily).

Public API
----------
``exp_rows(x, k, lo=None) -> (e1, e2, e3, s, flag, smin)``
    e_j = exp((x_j + lo_j) - (x_k + lo_k)) per row as a non-overlapping triple-double, the row
    sums s_i = sum_{j != k} e_j (a triple), a per-entry flag.
``scale_rows(f, e1, e2, e3, out_hi=None, out_lo=None, flag=None) -> (hi, lo, bound)``
    v = f_i * e_ij as a double-double (hi = RN(v)) with a rigorous absolute error bound.
``stable_rows(hi, lo, bound, e1, flag, f1, tcol, ...) -> ok``
    per row, whether every entry has enough correct bits and rounds stably in all four formats.
``EXP_REL``, ``SUM_REL``, ``SUM_ABS``, ``PROD_REL``, ``FLAG_D``, ``FLAG1_E``, ``FLAG1_ABS``,
``FLAG2_D``, ``FLAG_E``: the proven constants.
``two_sum``, ``fast_two_sum``, ``two_prod``, ``dd_add``: documented numba error-free transforms.
``warm()``: compile every kernel into numba's on-disk cache (the install step).

Modules: :mod:`~harness.fastpath.error_free` (the error-free transforms and the notation of the
proofs), :mod:`~harness.fastpath.contract` (the proven constants and the inputs' array form),
:mod:`~harness.fastpath.exponential` (``exp_rows`` and its error analysis, the row sum's too),
:mod:`~harness.fastpath.scaling` (``scale_rows`` and its error analysis),
:mod:`~harness.fastpath.stability` (``stable_rows``), :mod:`~harness.fastpath.jit` (how they are
compiled and cached).
"""

from __future__ import annotations

import numpy as np

from harness.fastpath.contract import (
    DROP_D,
    EXP_REL,
    FLAG1_ABS,
    FLAG1_E,
    FLAG2_D,
    FLAG3_D,
    FLAG3_LOG2,
    FLAG_D,
    FLAG_E,
    MAX_COLS,
    PROD_REL,
    SUM_ABS,
    SUM_REL,
)
from harness.fastpath.error_free import dd_add, fast_two_sum, two_prod, two_sum
from harness.fastpath.exponential import exp_rows, exp_table
from harness.fastpath.scaling import scale_rows
from harness.fastpath.stability import stable_rows

__all__ = [
    "DROP_D",
    "EXP_REL",
    "FLAG1_ABS",
    "FLAG1_E",
    "FLAG2_D",
    "FLAG3_D",
    "FLAG3_LOG2",
    "FLAG_D",
    "FLAG_E",
    "MAX_COLS",
    "PROD_REL",
    "SUM_ABS",
    "SUM_REL",
    "dd_add",
    "exp_rows",
    "exp_table",
    "fast_two_sum",
    "scale_rows",
    "stable_rows",
    "two_prod",
    "two_sum",
    "warm",
]

def warm() -> None:
    """Compile the kernels with the signatures the reference uses (numba's cache then keeps the
    machine code): ``python -c "from harness import fastpath; fastpath.warm()"``, which the
    Makefile's install step runs, so the first ``make run`` does not spend ~15-25 s compiling.
    (Not ``python -m``: numba's cache is keyed by the module, and that one would be ``__main__``.)"""
    from harness import reference
    from harness.problem import Problem

    x = np.array([[0.0, -1.0, -800.0, -np.inf], [3.0, 2.0, 1.0, 0.0]])
    for dtype in (np.float64, np.float32):
        p = Problem(x.astype(dtype), np.array([0, 1]), reduction="sum")
        reference.evaluate(p, workers=1)
        for _ in reference.blocks(p, workers=1, reuse=True):
            pass
