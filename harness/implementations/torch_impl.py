"""PyTorch's ``torch.nn.functional.cross_entropy``: the contract itself, on CPU and CUDA.

Every option is passed straight through (class weights, ``ignore_index``, reductions, label
smoothing, probability targets, K-dim and unbatched inputs); the gradient comes from autograd.
All four dtypes run natively: float16 and bfloat16 arrays cross into torch bit-exactly (a
bfloat16 array travels as its 16-bit pattern, int16 in NumPy and torch, then is re-viewed as
``torch.bfloat16``), and results come back the same way. If one of torch's kernels does not
support a dtype on a device, the exception propagates from :meth:`loss` / :meth:`grad` and the
harness records it.

torch is imported lazily (inside methods), so importing this module stays cheap and works
without torch. The CPU thread count is ``threads`` (default: the environment variable
``XENT_NUM_THREADS``, else ``os.cpu_count()``), applied with ``torch.set_num_threads`` before
every run so comparisons with multi-threaded NumPy code are fair.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import ml_dtypes
import numpy as np

from harness.problem import Problem
from harness.registry import Implementation, default_threads

_BF16 = np.dtype(ml_dtypes.bfloat16)


@cache
def _torch():
    import torch
    import torch.nn.functional as F

    return torch, F


def to_torch(arr: np.ndarray, device: str = "cpu"):
    """A NumPy array as a torch tensor on ``device``, bit-exact for every supported dtype.

    On the CPU without a copy: the tensor shares the array's memory with its strides and
    offset (``torch.from_numpy`` takes any positive strides), so torch sees the layout the
    harness hands over (a Fortran-ordered, channels-last, strided or offset view; see
    harness/memory_layout.py). The harness's arrays are read-only; torch has no read-only
    tensors and warns, which is silenced here: nothing in this module writes to its inputs
    (``cross_entropy`` and autograd read them; the gradient is a new tensor). Negative strides,
    which torch refuses, are copied. ``.to(device)`` copies to another device (keeping a dense
    layout's strides, making a strided one contiguous: torch's ``preserve_format``)."""
    import warnings

    torch, _ = _torch()
    arr = np.asarray(arr)
    if any(s < 0 for s in arr.strides):
        arr = np.array(arr, order="C", copy=True)  # 0-d stays 0-d
    bf16 = arr.dtype == _BF16
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        # bfloat16 by its bits: a same-itemsize view, on both sides, for any strides
        t = torch.from_numpy(arr.view(np.int16) if bf16 else arr)
    if bf16:
        t = t.view(torch.bfloat16)
    return t.to(device)


def to_numpy(t) -> np.ndarray:
    """A torch tensor as a NumPy array (bfloat16 -> ml_dtypes.bfloat16, bit-exact)."""
    torch, _ = _torch()
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BF16).copy()
    return t.numpy().copy()


class _Torch(Implementation):
    requires = ("torch",)

    def __init__(self, threads: int | None = None):
        self.threads = default_threads() if threads is None else int(threads)

    # -- helpers -----------------------------------------------------------------------------
    def _set_threads(self) -> None:
        torch, _ = _torch()
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _tensors(self, problem: Problem):
        x = to_torch(problem.logits, self.device)  # torch's device names are the harness's
        target = problem.target
        if not problem.probability_target:
            # (C,) logits take a 0-d target; reshape guards against a (1,) copy of it
            target = target.reshape(problem.sample_shape)
        t = to_torch(target, self.device)
        w = None if problem.weight is None else to_torch(problem.weight, self.device)
        return x, t, w

    def _sync(self) -> None:
        pass

    @staticmethod
    def _forward(problem: Problem, x, t, w):
        _, F = _torch()
        return F.cross_entropy(
            x,
            t,
            weight=w,
            ignore_index=problem.ignore_index,
            reduction=problem.reduction,
            label_smoothing=problem.label_smoothing,
        )

    def _runner(self, problem: Problem, backward: bool) -> Callable[[], object]:
        torch, _ = _torch()
        self._set_threads()
        x, t, w = self._tensors(problem)
        sync = self._sync
        forward = self._forward
        if not backward:

            def run():
                with torch.no_grad():
                    out = forward(problem, x, t, w)
                sync()
                return out

            return run

        # d(sum of outputs)/dx: the seed is ones of the loss' shape (a scalar 1 for mean/sum),
        # allocated once; autograd.grad returns a fresh gradient, so nothing accumulates.
        seed = torch.ones(problem.output_shape, dtype=x.dtype, device=x.device)

        def run_backward():
            xr = x.detach().requires_grad_(True)
            out = forward(problem, xr, t, w)
            (g,) = torch.autograd.grad(out, xr, grad_outputs=seed)
            sync()
            return out.detach(), g

        return run_backward

    # -- the Implementation API ----------------------------------------------------------------
    def loss(self, problem: Problem) -> np.ndarray:
        return to_numpy(self._runner(problem, backward=False)())

    def grad(self, problem: Problem) -> np.ndarray:
        return to_numpy(self._runner(problem, backward=True)()[1])

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        loss, grad = self._runner(problem, backward=True)()
        return to_numpy(loss), to_numpy(grad)

    def prepare(self, problem: Problem, *, backward: bool = False) -> Callable[[], object]:
        run = self._runner(problem, backward)
        threads = self.threads
        torch, _ = _torch()

        def timed():
            if threads and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            return run()

        return timed

    def describe(self) -> dict:
        d = super().describe()
        d["threads"] = self.threads
        return d


class TorchCPU(_Torch):
    """torch.nn.functional.cross_entropy on the CPU (autograd gradient)."""

    name = "torch"
    description = "torch.nn.functional.cross_entropy on the CPU, gradient by autograd"
    devices = ("cpu",)


class TorchCUDA(_Torch):
    """torch.nn.functional.cross_entropy on a CUDA device (autograd gradient)."""

    name = "torch-cuda"
    description = "torch.nn.functional.cross_entropy on CUDA, gradient by autograd"
    devices = ("cuda",)
    needs_gpu = True

    def available(self) -> str | None:
        reason = super().available()  # requires + no visible GPU, without importing torch
        if reason:
            return reason
        try:
            torch, _ = _torch()
            if torch.cuda.is_available():
                return None
            if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
                return f"torch {torch.__version__} is built without CUDA"
            return "torch sees no CUDA device (torch.cuda.is_available() is False)"
        except Exception as exc:  # a broken install must not crash the listing
            return f"torch CUDA check failed: {type(exc).__name__}: {exc}".splitlines()[0]

    def _sync(self) -> None:
        torch, _ = _torch()
        torch.cuda.synchronize()

    def device_info(self) -> dict | None:
        torch, _ = _torch()
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return {"name": props.name, "memory_bytes": int(props.total_memory),
                "compute_capability": f"{props.major}.{props.minor}",
                "multiprocessors": int(props.multi_processor_count), "cuda": torch.version.cuda,
                "library": f"torch {torch.__version__}"}

    def peak_memory(self, fn: Callable[[], object]) -> int | None:
        torch, _ = _torch()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        return max(0, int(torch.cuda.max_memory_allocated()) - before)
