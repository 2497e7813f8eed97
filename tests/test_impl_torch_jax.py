"""The torch and jax built-ins against an independent float64 formula of the contract.

The reference below is written from the definitions of ``torch.nn.functional.cross_entropy``
(not from the code under test): p = softmax(x) over the class axis, computed in float64 from the
exact (already rounded) inputs of the problem, then

* index targets: l_n = (1−ε)·w_{y_n}·(−log p_{y_n}) + (ε/C)·Σ_c w_c·(−log p_c), 0 for ignored
  samples; 'mean' divides the sum by D = Σ_{n not ignored} w_{y_n} (0/0 = NaN, gradient 0);
  ∂l_n/∂x_c = (1−ε)·w_y·(p_c − [c = y]) + (ε/C)·(W·p_c − w_c), W = Σ_k w_k;
* probability targets: t' = (1−ε)·t + ε/C, l_n = −Σ_c w_c t'_c log p_c, 'mean' divides by the
  number of samples; ∂l_n/∂x_c = S_n·p_c − w_c·t'_c, S_n = Σ_k w_k t'_k;
* 'none' returns l (its gradient is that of Σ_n l_n), 'sum' returns Σ_n l_n.

JAX compiles once per (shape, dtype, options), so the problems reuse four shapes and each one
exercises several options at once; every option is still covered for every dtype.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from harness.problem import Problem

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float64", "float32", "float16", "bfloat16")

# -- tolerances ---------------------------------------------------------------------------------
# An element passes when |got − ref| <= K · u · (|ref| + scale), u the unit roundoff of the
# format and scale the largest |ref| of the array (so entries that cancel to ~0, e.g. gradient
# entries p_c − t'_c, are judged against the size of the whole result, not their own). For the
# largest element that is 2K·u relative, i.e. K ulps (1 ulp = 2u near the top of a binade).
#
# * float64 (u = 2⁻⁵³): K = 256, ~3e-14 relative. Torch and JAX compute in float64; the
#   log-sum-exp, the weighted sums over C ≤ 5 classes and over N ≤ 36 samples each add a few
#   u, times a condition factor ≤ max|x| + log C ≈ 12 for these logits. Observed: ≤ 2 u.
# * float32 (u = 2⁻²⁴): K = 64, ~4e-6 relative, by the same analysis in float32 (a different
#   summation order, e.g. another thread count or SIMD width, stays far inside). Observed: ≤ 2.1.
# * float16 / bfloat16 (u = 2⁻¹¹ / 2⁻⁸): the result is rounded to the format once (≤ 1 u) and
#   torch also rounds intermediates (log_softmax output, w·nll, (1−ε)·nll, ε/C·smooth, their
#   sum) to the format: about one u each for terms of the same sign; exp(rounded log p) in its
#   backward adds u·|log p| relative on the smallest probabilities, which the scale term
#   absorbs. K = 4: a few ulps. Observed: ≤ 1.13 (torch), ≤ 0.41 (jax, one final rounding).
K = {"float64": 256.0, "float32": 64.0, "float16": 4.0, "bfloat16": 4.0}
UNIT = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def _np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


# -- the independent reference -------------------------------------------------------------------
def reference(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    """(loss, gradient) in float64 from the definitions; loss NaN / gradient 0 when D = 0."""
    x, t = p.rows()
    x = x.astype(np.float64)
    m, c = x.shape
    eps = p.label_smoothing
    w = np.ones(c) if p.weight is None else p.weight.astype(np.float64)
    if m:
        shift = x - x.max(axis=1, keepdims=True)
        logp = shift - np.log(np.exp(shift).sum(axis=1, keepdims=True))
    else:
        logp = np.zeros((0, c))
    prob = np.exp(logp)
    if p.probability_target:
        tt = (1.0 - eps) * t.astype(np.float64) + eps / c
        wt = w * tt
        per = -(wt * logp).sum(axis=1)
        g = wt.sum(axis=1, keepdims=True) * prob - wt
        denom = float(m)
    else:
        ignored = t == p.ignore_index
        y = np.where(ignored, 0, t)
        wy = np.where(ignored, 0.0, w[y])
        rows = np.arange(m)
        nll = -logp[rows, y]
        smooth = -(w * logp).sum(axis=1)
        per = np.where(ignored, 0.0, (1.0 - eps) * wy * nll + (eps / c) * smooth)
        onehot = np.zeros((m, c))
        onehot[rows, y] = 1.0
        g = (1.0 - eps) * wy[:, None] * (prob - onehot) + (eps / c) * (w.sum() * prob - w)
        g[ignored] = 0.0
        denom = wy.sum()
    if p.reduction == "none":
        loss = per.reshape(p.sample_shape)
    elif p.reduction == "sum":
        loss = np.array(per.sum())
    elif denom == 0:
        loss, g = np.array(np.nan), np.zeros_like(g)
    else:
        loss, g = np.array(per.sum() / denom), g / denom
    return loss, p.unrows(g)


def assert_close(got: np.ndarray, ref: np.ndarray, dtype: str, what: str) -> None:
    got64 = np.asarray(got).astype(np.float64)
    assert got64.shape == ref.shape, f"{what}: shape {got64.shape} != {ref.shape}"
    np.testing.assert_array_equal(np.isnan(got64), np.isnan(ref), err_msg=f"{what}: NaN pattern")
    ok = ~np.isnan(ref)
    if not ok.any():
        return
    scale = np.abs(ref[ok]).max()
    err = np.abs(got64[ok] - ref[ok])
    tol = K[dtype] * UNIT[dtype] * (np.abs(ref[ok]) + scale)
    worst = np.argmax(err - tol)
    assert (err <= tol).all(), (
        f"{what} ({dtype}): |err| {err[worst]:.3g} > tol {tol[worst]:.3g} "
        f"(got {got64[ok][worst]!r}, ref {ref[ok][worst]!r}; err/u = {err.max() / UNIT[dtype]:.3g})"
    )


# -- the problems: four shapes, every option, each for every dtype ------------------------------
def _problems(dtype: str) -> dict[str, Problem]:
    rng = np.random.default_rng(7)
    dt = _np_dtype(dtype)

    def logits(shape):
        return (3.0 * rng.standard_normal(shape)).astype(dt)

    def weights(c):
        w = rng.uniform(0.25, 2.0, c)
        w[1] = 0.0  # a zero class weight
        return w

    def probs(shape, axis, normalized):
        t = rng.uniform(0.0, 1.0, shape)
        return t / t.sum(axis=axis, keepdims=True) if normalized else 1.7 * t

    n, c, kshape = 7, 5, (3, 4, 2, 3)
    y = np.array([0, 1, 2, 3, 4, 2, 0])  # every class, class 1 has weight 0 below
    y_ign = y.copy()
    y_ign[[2, 5]] = -100
    yk = rng.integers(0, 4, (3, 2, 3))
    yk[0, 0, :] = 2  # ignore_index 2, inside [0, C)
    yk[1, 1, 1] = 0
    out = {
        "index-plain-mean": Problem(logits((n, c)), y),
        "index-weight-ignore-eps0.1-sum": Problem(
            logits((n, c)), y_ign, weight=weights(c), reduction="sum", label_smoothing=0.1
        ),
        "index-weight-ignoreinside-eps1-none": Problem(
            logits((n, c)),
            y,
            weight=weights(c),
            ignore_index=2,
            reduction="none",
            label_smoothing=1.0,
        ),
        "index-weight-ignore-eps0.1-mean": Problem(
            logits((n, c)), y_ign, weight=weights(c), label_smoothing=0.1
        ),
        "index-all-ignored-eps0.1-mean": Problem(
            logits((n, c)), np.full(n, 3), weight=weights(c), ignore_index=3, label_smoothing=0.1
        ),
        "prob-normalized-none": Problem(logits((n, c)), probs((n, c), 1, True), reduction="none"),
        "prob-unnormalized-weight-eps0.1-mean": Problem(
            logits((n, c)), probs((n, c), 1, False), weight=weights(c), label_smoothing=0.1
        ),
        "prob-normalized-weight-eps1-sum": Problem(
            logits((n, c)),
            probs((n, c), 1, True),
            weight=weights(c),
            reduction="sum",
            label_smoothing=1.0,
        ),
        "kdim-index-weight-ignoreinside-eps0.1-mean": Problem(
            logits(kshape), yk, weight=weights(4), ignore_index=2, label_smoothing=0.1
        ),
        "kdim-prob-weight-eps0.1-none": Problem(
            logits(kshape),
            probs(kshape, 1, False),
            weight=weights(4),
            reduction="none",
            label_smoothing=0.1,
        ),
        "unbatched-index-weight-eps0.1-none": Problem(
            logits((c,)), np.array(3), weight=weights(c), reduction="none", label_smoothing=0.1
        ),
        "unbatched-index-ignored-mean": Problem(logits((c,)), np.array(-100)),
        "unbatched-prob-weight-sum": Problem(
            logits((c,)), probs((c,), 0, False), weight=weights(c), reduction="sum"
        ),
        "empty-index-mean": Problem(logits((0, c)), np.zeros(0, np.int64)),
        "empty-index-weight-eps0.1-sum": Problem(
            logits((0, c)),
            np.zeros(0, np.int64),
            weight=weights(c),
            reduction="sum",
            label_smoothing=0.1,
        ),
        "empty-prob-none": Problem(logits((0, c)), probs((0, c), 1, False), reduction="none"),
    }
    return out


CASES = tuple(_problems("float64"))
_CACHE: dict[str, dict[str, Problem]] = {}


def problem(dtype: str, case: str) -> Problem:
    if dtype not in _CACHE:
        _CACHE[dtype] = _problems(dtype)
    return _CACHE[dtype][case]


def test_reference_covers_every_option():
    features = set().union(*(problem("float64", c).features for c in CASES))
    from harness.registry import FEATURES

    assert features == set(FEATURES)
    assert {problem("float64", c).label_smoothing for c in CASES} == {0.0, 0.1, 1.0}


def _with_logits(p: Problem, logits: np.ndarray) -> Problem:
    target = p.target if p.probability_target else p.target.reshape(p.sample_shape)
    return Problem(logits, target, **p.kwargs())


def test_reference_matches_definition_by_finite_differences():
    """The analytic gradient of the reference is the derivative of its loss (central diffs)."""
    for case in CASES:
        p = problem("float64", case)
        if p.logits.size == 0:
            continue
        loss, grad = reference(p)
        if np.isnan(loss).any():
            continue
        fd = np.zeros(p.logits.shape)
        h = 1e-6
        for i in np.ndindex(p.logits.shape):
            hi, lo = p.logits.copy(), p.logits.copy()
            hi[i] += h
            lo[i] -= h
            fd[i] = (
                reference(_with_logits(p, hi))[0].sum() - reference(_with_logits(p, lo))[0].sum()
            ) / (2 * h)
        np.testing.assert_allclose(fd, grad, rtol=1e-6, atol=1e-8, err_msg=case)


# -- implementations ---------------------------------------------------------------------------
def _impl(name: str):
    if name == "torch":
        pytest.importorskip("torch")
        from harness.implementations.torch_impl import TorchCPU

        return TorchCPU()
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    from harness.implementations.jax_impl import JaxCPU

    return JaxCPU()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl_name", ["torch", "jax"])
def test_matches_reference(impl_name, dtype, case):
    impl = _impl(impl_name)
    p = problem(dtype, case)
    ref_loss, ref_grad = reference(p)
    loss = impl.loss(p)
    assert isinstance(loss, np.ndarray) and loss.dtype == p.dtype, loss.dtype
    assert loss.shape == p.output_shape
    assert_close(loss, ref_loss, dtype, f"{impl_name} loss {case}")
    grad = impl.grad(p)
    assert isinstance(grad, np.ndarray) and grad.dtype == p.dtype, grad.dtype
    assert grad.shape == p.logits.shape
    assert_close(grad, ref_grad, dtype, f"{impl_name} grad {case}")


@pytest.mark.parametrize("case", CASES)
def test_jax_matches_torch_float64(case):
    torch_impl, jax_impl = _impl("torch"), _impl("jax")
    p = problem("float64", case)
    for what in ("loss", "grad"):
        a = getattr(torch_impl, what)(p)
        b = getattr(jax_impl, what)(p)
        np.testing.assert_allclose(
            b, a, rtol=1e-12, atol=1e-14, equal_nan=True, err_msg=f"{what} {case}"
        )


@pytest.mark.parametrize("impl_name", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prepare_callables_run(impl_name, dtype):
    impl = _impl(impl_name)
    p = problem(dtype, "kdim-index-weight-ignoreinside-eps0.1-mean")
    fwd = impl.prepare(p)
    bwd = impl.prepare(p, backward=True)
    for _ in range(2):
        assert fwd() is not None
        assert bwd() is not None
    # preparing and running changes nothing: the results still match the reference
    assert_close(impl.loss(p), reference(p)[0], dtype, f"{impl_name} loss after prepare")
    assert_close(impl.grad(p), reference(p)[1], dtype, f"{impl_name} grad after prepare")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_jax_host_upcast_gives_the_bits_of_the_in_jit_upcast(dtype):
    """The accuracy sweeps call jax with 16-bit inputs upcast on the host (one executable per
    shape for three dtypes); prepare() keeps the upcast inside the jitted function. Same bits,
    on every case and the special values."""
    impl = _impl("jax")
    specials = Problem(np.array([[np.inf, 0, 1], [-np.inf, 0, 1], [np.nan, 0, 1], [60000, 0, -60000]],
                                dtype=_np_dtype(dtype)), np.array([1, 0, 2, 2]), reduction="none")
    for p in [*(problem(dtype, c) for c in CASES), specials]:
        loss, grad = impl.prepare(p, backward=True)()
        for got, want in ((impl.loss(p), loss), (impl.grad(p), grad)):
            want = np.asarray(want)
            assert got.dtype == want.dtype == p.dtype
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16), err_msg=repr(p))


# -- torch specifics -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_conversion_is_bit_exact(dtype):
    pytest.importorskip("torch")
    from harness.implementations.torch_impl import to_numpy, to_torch

    bits = np.arange(1 << 16, dtype=np.uint16)  # every pattern: NaNs, infs, subnormals
    arr = bits.view(_np_dtype(dtype)).reshape(256, 256)
    back = to_numpy(to_torch(arr))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back.view(np.uint16), bits.reshape(256, 256))
    scalar = arr[1, 3:4].reshape(())
    assert to_numpy(to_torch(scalar)).view(np.uint16) == scalar.view(np.uint16)


def test_torch_threads(monkeypatch):
    pytest.importorskip("torch")
    from harness.implementations.torch_impl import TorchCPU

    monkeypatch.setenv("XENT_NUM_THREADS", "2")
    assert TorchCPU().threads == 2
    monkeypatch.delenv("XENT_NUM_THREADS")
    assert TorchCPU().threads == (os.cpu_count() or 1)
    import torch

    before = torch.get_num_threads()
    try:
        impl = TorchCPU(threads=1)
        impl.prepare(problem("float32", "index-plain-mean"))()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# -- availability and lazy imports ----------------------------------------------------------------
def _one_line(reason):
    return isinstance(reason, str) and reason.strip() and "\n" not in reason


def test_cpu_variants_available():
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    from harness.implementations.jax_impl import JaxCPU
    from harness.implementations.torch_impl import TorchCPU

    assert TorchCPU().available() is None
    assert JaxCPU().available() is None


def test_torch_cuda_unavailable_reason():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from harness.implementations.torch_impl import TorchCUDA

    assert _one_line(TorchCUDA().available())


def test_jax_gpu_unavailable_reason():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    try:
        if jax.devices("gpu"):
            pytest.skip("a JAX GPU is present")
    except RuntimeError:
        pass
    from harness.implementations.jax_impl import JaxGPU

    assert _one_line(JaxGPU().available())


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        ("harness.implementations.torch_impl", ("torch",)),
        ("harness.implementations.jax_impl", ("jax", "optax", "jaxlib")),
    ],
)
def test_import_is_lazy(module, heavy):
    code = (
        f"import {module}, sys\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr


def test_registry_names():
    from harness.implementations.jax_impl import JaxCPU, JaxGPU
    from harness.implementations.torch_impl import TorchCPU, TorchCUDA

    assert (TorchCPU.name, TorchCUDA.name, JaxCPU.name, JaxGPU.name) == (
        "torch",
        "torch-cuda",
        "jax",
        "jax-gpu",
    )
    assert TorchCPU.requires == ("torch",) and "jax" in JaxCPU.requires
    assert TorchCUDA.devices == ("cuda",) and JaxGPU.devices == ("cuda",)
