"""pytest-benchmark microbenchmarks: every available implementation's forward and
forward+backward (one group per implementation) and the reference on a small problem.

The project's addopts contain ``--benchmark-disable``, so in the normal test run each benchmark
body runs once and these are correctness tests: the benchmarked output is compared with a
float64 computation (implementations) or checked for exactness (the reference). To time them,
save a baseline and compare (docs/ci.md)::

    pytest tests/benchmarks --benchmark-enable --benchmark-autosave
    pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:25%
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from harness.formats import FORMATS
from harness.problem import Problem

#: GPU implementations are listed too: they skip with the reason where no GPU is present.
IMPLS = ("numpy", "torch", "jax", "torch-cuda", "jax-gpu", "cupy")
GPU = {"torch-cuda", "jax-gpu", "cupy"}
#: First use compiles (jax) or initializes autograd (torch): more than ~1 s, so marked slow.
SLOW = {"torch", "jax"}
PASSES = ("forward", "forward+backward")
DTYPES = ("float32", "bfloat16")
N, C = 256, 2048
#: Relative tolerance of the loss and of the gradient (scaled by its largest entry) per dtype:
#: a few units of the format's precision, far above what a correct implementation errs by.
RTOL = {"float32": 2e-6, "bfloat16": 2e-2}


def _params():
    for impl in IMPLS:
        marks = [pytest.mark.gpu] * (impl in GPU) + [pytest.mark.slow] * (impl in SLOW)
        for dtype in DTYPES:
            for pass_ in PASSES:
                yield pytest.param(impl, dtype, pass_, marks=marks, id=f"{impl}-{dtype}-{pass_}")


@cache
def _entries() -> dict:
    from harness import registry

    return {e.name: e for e in registry.discover()}


@cache
def _problem(dtype: str, n: int = N, c: int = C) -> Problem:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c)) * 3
    return Problem(x.astype(FORMATS[dtype].dtype), rng.integers(0, c, n))


def _float64_loss_grad(problem: Problem) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient in float64 from the (already rounded) logits."""
    x = problem.logits.astype(np.float64)
    t = problem.target
    z = x - x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    rows = np.arange(len(t))
    loss = float(np.mean(lse - z[rows, t]))
    g = np.exp(z - lse[:, None])
    g[rows, t] -= 1.0
    return loss, g / len(t)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        from harness.implementations.torch_impl import to_numpy

        return to_numpy(value)
    if type(value).__module__.startswith("cupy"):
        return value.get()
    return np.asarray(value)


def _outputs(result, problem: Problem) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(loss, grad) among what a prepared callable returned (an array or a tuple of them)."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    loss = grad = None
    for item in items:
        a = _to_numpy(item)
        if a.shape == problem.logits.shape and grad is None:
            grad = a
        elif a.shape == problem.output_shape and loss is None:
            loss = a
    return loss, grad


@pytest.mark.parametrize(("impl", "dtype", "pass_"), list(_params()))
def test_implementation(benchmark, impl, dtype, pass_):
    entry = _entries().get(impl)
    if entry is None:
        pytest.skip(f"{impl} is not registered")
    reason = entry.unavailable()
    if reason:
        pytest.skip(f"{impl}: {reason}")
    problem = _problem(dtype)
    unsupported = entry.impl.supports(problem)
    if unsupported or (pass_ == "forward+backward" and not entry.impl.has_grad):
        pytest.skip(f"{impl}: {unsupported or 'no gradient'}")
    fn = entry.impl.prepare(problem, backward=pass_ == "forward+backward")
    fn()  # warm-up, untimed: torch's first autograd call alone takes about a second
    benchmark.group = impl
    benchmark.extra_info.update(N=N, C=C, dtype=dtype, logits=N * C)
    result = benchmark(fn)

    loss, grad = _outputs(result, problem)
    ref_loss, ref_grad = _float64_loss_grad(problem)
    rtol = RTOL[dtype]
    if pass_ == "forward":
        assert loss is not None, f"{impl}: forward returned {type(result).__name__}, no loss of shape ()"
        assert loss.dtype == problem.dtype
        assert abs(float(loss) - ref_loss) <= rtol * abs(ref_loss), (float(loss), ref_loss)
    else:
        assert grad is not None, f"{impl}: forward+backward returned no gradient of the logits' shape"
        assert grad.dtype == problem.dtype
        err = np.max(np.abs(grad.astype(np.float64) - ref_grad))
        assert err <= rtol * np.max(np.abs(ref_grad)), err
        if loss is not None:
            assert abs(float(loss) - ref_loss) <= rtol * abs(ref_loss)


def test_reference(benchmark):
    """The MPFR reference on 16 x 256 float32 logits (in-process, one worker)."""
    from harness import reference

    problem = _problem("float32", 16, 256)
    benchmark.group = "reference"
    benchmark.extra_info.update(N=16, C=256, dtype="float32", logits=16 * 256)
    exact = benchmark(reference.evaluate, problem, workers=1)

    ref_loss, ref_grad = _float64_loss_grad(problem)
    assert exact.unresolved == 0
    assert abs(float(exact.loss_hi) - ref_loss) <= 1e-13 * ref_loss
    assert np.allclose(exact.grad_hi, ref_grad, rtol=1e-11, atol=1e-17)
    # correctly rounded: float32 of the double-double equals float32 of its leading part here
    assert exact.rounded_loss(np.float32) == np.float32(exact.loss_hi)
