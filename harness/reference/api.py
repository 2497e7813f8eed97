"""The reference's public API: ``evaluate`` (an :class:`~harness.reference.Exact`),
``evaluate_many``, ``blocks`` (streamed), and the mpmath API (``cross_entropy``,
``cross_entropy_grad``: the values of record as ``mpmath.mpf``; ``rounded``)."""

from __future__ import annotations

import os
from functools import partial

import gmpy2
import mpmath
import numpy as np

from harness.formats import FORMATS
from harness.problem import Problem
from harness.reference.arithmetic import _signed_man_exp, _to_mpf_array
from harness.reference.exact import Exact
from harness.reference.pool import _pool
from harness.reference.row_blocks import Blocks


def blocks(problem: Problem, **kwargs) -> Blocks:
    """See :class:`Blocks`."""
    return Blocks(problem, **kwargs)


def evaluate(problem: Problem, *, grad: bool = True, workers: int | None = None,
             keep_mpfr: bool = False) -> Exact:
    """Reference loss (and gradient) of ``problem`` as double-doubles; see :class:`Exact`.

    ``keep_mpfr`` also keeps every gradient value in MPFR (``Exact.grad_mpfr``, rows order):
    the values of record, for small problems (the public mpmath API)."""
    ev = Blocks(problem, grad=grad, workers=workers, keep_mpfr=keep_mpfr)
    parts = list(ev)
    exact = ev.loss()
    if grad:
        C = problem.num_classes
        cat = (lambda name: np.concatenate([getattr(b, name) for b in parts])) if parts else (lambda name: np.empty((0, C)))
        exact.grad_hi = problem.unrows(cat("hi")).copy()
        exact.grad_lo = problem.unrows(cat("lo")).copy()
        exact.grad_bound = problem.unrows(cat("bound")).copy()
        if keep_mpfr:
            exact.grad_mpfr = ev.grad_mpfr
    return exact


def evaluate_many(problems: list[Problem], *, grad: bool = True, workers: int | None = None) -> list[Exact]:
    """Evaluate many problems, in parallel across problems (each one in-process)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(problems) <= 1:
        return [evaluate(p, grad=grad, workers=workers) for p in problems]
    with _pool(workers) as pool:
        return list(pool.map(partial(evaluate, grad=grad, workers=1), problems, chunksize=1))


def _problem(logits, target, weight, ignore_index, reduction, label_smoothing) -> Problem:
    return Problem(
        np.asarray(logits),
        np.asarray(target),
        weight=None if weight is None else np.asarray(weight),
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def cross_entropy(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
) -> np.ndarray:
    """Exact ``torch.nn.functional.cross_entropy`` as an object array of ``mpmath.mpf``
    (shape () for 'mean'/'sum', the per-sample shape for 'none'), >= 106 correct bits,
    rounding correctly to float16/bfloat16/float32/float64."""
    problem = _problem(logits, target, weight, ignore_index, reduction, label_smoothing)
    exact = evaluate(problem, grad=False)
    return _to_mpf_array(exact.loss_mpfr).reshape(problem.output_shape)


def cross_entropy_grad(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
) -> np.ndarray:
    """Exact gradient of :func:`cross_entropy` w.r.t. the logits (for 'none': of the sum of the
    per-sample losses), an object array of ``mpmath.mpf`` with the logits' shape, >= 106
    correct bits for every value however small or large (the MPFR values of record, not the
    double-double view)."""
    problem = _problem(logits, target, weight, ignore_index, reduction, label_smoothing)
    exact = evaluate(problem, grad=True, keep_mpfr=True)
    flat = _to_mpf_array(exact.grad_mpfr)
    M = problem.num_samples if problem.logits.ndim > 1 else 1
    return problem.unrows(flat.reshape(M, problem.num_classes)).copy()


def rounded(values: np.ndarray, dtype) -> np.ndarray:
    """Round an object array of mpmath.mpf (as returned above) correctly to ``dtype``: each value
    is converted to MPFR exactly, then rounded once in a context with the format's precision,
    exponent range and subnormals (so ties, subnormals and overflow follow IEEE)."""
    fmt = FORMATS[np.dtype(dtype).name] if not isinstance(dtype, str) else FORMATS[dtype]
    flat = np.asarray(values, dtype=object).ravel()
    out = []
    for v in flat:
        if not mpmath.isfinite(v):
            out.append(float(v))
            continue
        man, exp = _signed_man_exp(v)
        with gmpy2.context(gmpy2.get_context(), precision=max(man.bit_length(), 2) + 2,
                           emin=-(2**30), emax=2**30):
            exact = gmpy2.mul_2exp(gmpy2.mpfr(man), exp)
        with gmpy2.context(gmpy2.get_context(), precision=fmt.precision, subnormalize=True,
                           emin=fmt.emin - fmt.precision + 2, emax=fmt.emax + 1):
            out.append(float(gmpy2.mpfr(exact) * 1))  # "* 1" keeps -0 (x + 0 would not)
    # Every value is now exactly representable in fmt, so this cast rounds nothing.
    return np.array(out, dtype=np.float64).astype(fmt.dtype).reshape(np.shape(values))
