"""JAX/optax cross-entropy written to PyTorch's contract, on the CPU and on a GPU.

The per-sample losses come from optax: ``optax.softmax_cross_entropy_with_integer_labels``
for class-index targets and ``optax.softmax_cross_entropy`` for probability targets, both
called with ``axis=class_axis`` so K-dim inputs (N, C, d1, ..., dk) and unbatched inputs (C,)
need no transposes. What optax does not offer is written around it, following the structure
of PyTorch's own ``cross_entropy``:

* class weights: the nll term is scaled by ``w[y_n]``; the smoothing term is
  ``optax.softmax_cross_entropy(x, w)`` = -Σ_c w_c log p_c (weights broadcast as "labels");
  probability targets are multiplied by ``w`` before optax;
* ``ignore_index`` (also inside [0, C)): ignored labels are replaced by 0 before optax (whose
  gather would otherwise read out of range) and their losses and weights are set to 0 with
  ``jnp.where``;
* label smoothing ε for index targets: (1−ε)·reduce(nll) + (ε/C)·reduce(smooth), with the mean
  of both terms divided by Σ w_{y_n} over non-ignored samples, exactly as PyTorch; for
  probability targets ``optax.smooth_labels`` gives t' = (1−ε)t + ε/C;
* reductions: 'sum', 'none' and 'mean' (weighted: divided by Σ w_{y_n}; probability targets:
  by the sample count). An empty or fully ignored batch gives 0/0 = NaN, as in PyTorch, and
  its gradient is 0.

Precision: float64 really is float64 -- ``jax_enable_x64`` is switched on (globally, for the
whole process) the first time this module computes anything, not at import. float16 and
bfloat16 inputs are upcast to float32 (like PyTorch's CPU/CUDA kernels, which accumulate in
float32), and the loss and gradient are rounded once to the input dtype at the end: inside the
jitted function for ``prepare()`` (what the throughput sweep times), on the host for
``loss``/``grad`` (so the accuracy sweeps compile one executable per shape for three dtypes;
the bits are the same, a test compares them). Set ``compute_in_float32 = False`` on an instance to compute 16-bit
inputs natively instead.

Compilation: the options (class axis, target kind, weight or not, ignore_index, reduction, ε)
are static -- closed over by a cached builder -- and ``jax.jit`` caches one executable per
(shape, dtype, device) of the inputs. ``prepare()`` puts the inputs on the device with
``jax.device_put`` and runs the function once, so compile time stays out of timings; the
callable it returns blocks until the result is ready. The gradient is ``jax.value_and_grad``
of the sum of the returned losses (the loss itself for 'mean'/'sum').

Memory layouts: a jax array owns its buffer, so ``jax.device_put`` copies a strided, transposed
or offset NumPy view (harness/memory_layout.py) into a dense one of its own; DLPack, the
zero-copy route, cannot take arbitrary strides (jax imports only dense row-major buffers). jax
is judged on a view's values, not on its strides; its copy is part of its timings.

Threads: XLA's CPU thread pool is fixed when the backend starts (use ``XLA_FLAGS``); it is not
changed per call. jax and optax are imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from harness.problem import Problem
from harness.registry import Implementation


@cache
def _jax():
    """Import jax/optax and enable float64 (process-wide) on first use."""
    import os

    import jax

    jax.config.update("jax_enable_x64", True)
    # Compiling dominates the accuracy sweeps (one executable per shape, dtype and option set):
    # keep compiled executables on disk so later runs reuse them. XENT_JAX_CACHE="" disables it.
    from harness.cache import default_dir

    cache_dir = os.environ.get("XENT_JAX_CACHE", str(default_dir() / "jax"))
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    import jax.numpy as jnp
    import optax

    return jax, jnp, optax


@cache
def _build(
    class_axis: int,
    ndim: int,
    num_classes: int,
    probability: bool,
    has_weight: bool,
    reduction: str,
    smoothing: bool,
    upcast: bool,
):
    """(forward, forward_and_grad), jitted, for one set of static options. ignore_index and
    label_smoothing are traced arguments, so problems that differ only in them share a
    compilation (compiling dominates the accuracy sweeps)."""
    jax, jnp, optax = _jax()
    bshape = tuple(num_classes if i == class_axis else 1 for i in range(ndim))

    def compute_dtype(dtype):
        if dtype == jnp.float64:
            return jnp.float64
        if dtype == jnp.float32 or upcast:
            return jnp.float32
        return dtype

    def losses(x, t, w, ignore_index, eps):
        """The reduced loss (or per-sample losses) in the compute dtype."""
        cdt = compute_dtype(x.dtype)
        x = x.astype(cdt)
        if has_weight:
            w = w.astype(cdt)
        if probability:
            t = t.astype(cdt)
            if smoothing:
                t = (1.0 - eps) * t + eps / num_classes  # optax.smooth_labels, with a traced eps
            if has_weight:
                t = t * w.reshape(bshape)
            per = optax.softmax_cross_entropy(x, t, axis=class_axis)
            if reduction == "none":
                return per
            total = jnp.sum(per)
            # PyTorch divides by numel / C, which is 0/0 = NaN when C = 0
            return total / (per.size if num_classes else 0) if reduction == "mean" else total

        ignored = t == ignore_index
        y = jnp.where(ignored, 0, t)
        nll = optax.softmax_cross_entropy_with_integer_labels(x, y, axis=class_axis)
        if has_weight:
            # C = 0: every target is ignored, and jnp.take refuses an empty axis
            wy = jnp.where(ignored, 0, jnp.take(w, y)) if num_classes else jnp.zeros(y.shape, cdt)
            nll = wy * nll
        else:
            wy = jnp.where(ignored, 0, 1).astype(cdt)
        nll = jnp.where(ignored, 0, nll)

        def reduce(v):
            if reduction == "none":
                return v
            total = jnp.sum(v)
            return total / jnp.sum(wy) if reduction == "mean" else total

        if not smoothing:
            return reduce(nll)
        # -Σ_c w_c log p_c: optax's cross-entropy with the weights (or ones) as "labels"
        labels = w.reshape(bshape) if has_weight else jnp.ones(bshape, cdt)
        smooth = jnp.where(ignored, 0, optax.softmax_cross_entropy(x, labels, axis=class_axis))
        return (1.0 - eps) * reduce(nll) + reduce(smooth) * (eps / num_classes)

    def forward(x, t, w, ignore_index, eps):
        return losses(x, t, w, ignore_index, eps).astype(x.dtype)

    def objective(x, t, w, ignore_index, eps):
        loss = losses(x, t, w, ignore_index, eps)
        return jnp.sum(loss), loss.astype(x.dtype)

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def forward_and_grad(x, t, w, ignore_index, eps):
        (_, loss), g = value_and_grad(x, t, w, ignore_index, eps)
        return loss, g

    return jax.jit(forward), jax.jit(forward_and_grad)


class _Jax(Implementation):
    requires = ("jax", "optax")
    #: PyTorch's options on optax's losses: its special values are optax's (a +inf logit gives
    #: +inf; an ignored row's gradient is 0 through jnp.where), docs/contracts.md
    contract = "optax"
    platform = "cpu"
    #: Upcast float16/bfloat16 to float32 inside the computation (PyTorch's behaviour).
    compute_in_float32: bool = True

    def _device(self):
        jax, _, _ = _jax()
        return jax.devices(self.platform)[0]

    def _functions(self, problem: Problem):
        return _build(
            problem.class_axis,
            problem.logits.ndim,
            problem.num_classes,
            problem.probability_target,
            problem.weight is not None,
            problem.reduction,
            problem.label_smoothing > 0,
            bool(self.compute_in_float32),
        )

    def _args(self, problem: Problem):
        jax, _, _ = _jax()
        dev = self._device()
        x = jax.device_put(problem.logits, dev)
        target = problem.target
        if not problem.probability_target:
            # (C,) logits take a 0-d target; reshape guards against a (1,) copy of it. uint8
            # class indices are widened to int64 here: in jax, `t == ignore_index` with a uint8
            # t casts the (weakly typed) ignore_index to uint8, so -100 would match class 156;
            # widened, one executable serves both index dtypes
            target = target.reshape(problem.sample_shape).astype(np.int64, copy=False)
        t = jax.device_put(target, dev)
        w = None if problem.weight is None else jax.device_put(problem.weight, dev)
        return x, t, w, problem.ignore_index, problem.label_smoothing

    # The sweeps call loss_and_grad: one jitted jax.value_and_grad (what a training step runs),
    # so each problem costs one compilation, and the accuracy cells judge that program's loss.
    # loss() alone uses the forward-only executable: XLA compiles it as another program, whose
    # loss may differ in the last bits (7 float64 ULPs seen on combo-kdim-weight-mean).
    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        _, forward_and_grad = self._functions(problem)
        loss, grad = forward_and_grad(*self._args(self._as_float32(problem)))
        with np.errstate(over="ignore"):  # float32 results beyond float16's range round to inf, as they should
            return np.asarray(loss).astype(problem.dtype), np.asarray(grad).astype(problem.dtype)

    def _as_float32(self, problem: Problem) -> Problem:
        """float16/bfloat16 problems upcast to float32 before the jitted call (exact), so one
        executable per shape serves three dtypes: the accuracy sweeps compile half as often. The
        result is the same bits as upcasting inside the function: the float32 computation is the
        same, and casting its loss (or the cotangent of the upcast, the gradient) back is the
        same round-to-nearest-even; tests/test_impl_torch_jax.py compares them bit for bit."""
        if not self.compute_in_float32 or problem.dtype.itemsize != 2:
            return problem
        import dataclasses

        f32 = np.float32
        return dataclasses.replace(
            problem,
            logits=problem.logits.astype(f32),
            weight=None if problem.weight is None else problem.weight.astype(f32),
            target=problem.target.astype(f32) if problem.probability_target else problem.target,
        )

    def loss(self, problem: Problem) -> np.ndarray:
        forward, _ = self._functions(problem)
        return np.asarray(forward(*self._args(self._as_float32(problem)))).astype(problem.dtype)

    def grad(self, problem: Problem) -> np.ndarray:
        return self.loss_and_grad(problem)[1]

    def prepare(self, problem: Problem, *, backward: bool = False) -> Callable[[], object]:
        jax, _, _ = _jax()
        forward, forward_and_grad = self._functions(problem)
        fn = forward_and_grad if backward else forward
        args = self._args(problem)
        jax.block_until_ready(fn(*args))  # compile (untimed)
        block = jax.block_until_ready

        def run():
            return block(fn(*args))

        return run


class JaxCPU(_Jax):
    """optax softmax cross-entropy + PyTorch's options, jitted on the JAX CPU backend."""

    name = "jax"
    description = "optax softmax cross-entropy with PyTorch's options, jax.jit on CPU"
    devices = ("cpu",)
    platform = "cpu"


class JaxGPU(_Jax):
    """optax softmax cross-entropy + PyTorch's options, jitted on a JAX GPU backend."""

    name = "jax-gpu"
    description = "optax softmax cross-entropy with PyTorch's options, jax.jit on GPU"
    devices = ("cuda",)  # the harness says "cuda" for NVIDIA devices (jax calls its platform "gpu")
    platform = "gpu"
    needs_gpu = True

    def device_info(self) -> dict | None:
        jax, _, _ = _jax()
        dev = self._device()
        stats = dev.memory_stats() or {}
        return {"name": dev.device_kind, "memory_bytes": stats.get("bytes_limit"),
                "library": f"jax {jax.__version__}"}

    def available(self) -> str | None:
        reason = super().available()  # requires + no visible GPU, without importing jax
        if reason:
            return reason
        try:
            import jax

            if jax.devices("gpu"):
                return None
            return "JAX reports no GPU device"
        except Exception as exc:  # no GPU backend / plugin: RuntimeError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"no JAX GPU backend (jax.devices('gpu') failed: {first})"
