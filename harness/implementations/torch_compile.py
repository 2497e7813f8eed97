"""``torch.compile`` of ``torch.nn.functional.cross_entropy``: inductor on the CPU, and on CUDA.

The same call as the ``torch`` built-in (every option passed straight through, the gradient by
autograd, bit-exact conversions), but through ``torch.compile(..., fullgraph=True,
dynamic=True)``: TorchDynamo captures the call, AOTAutograd derives the backward graph and
inductor generates the kernels (C++/OpenMP on the CPU, Triton on CUDA). What is judged is
therefore inductor's code, not ATen's kernels.

* **Dynamic shapes** (``dynamic=True``): sizes and ``ignore_index`` are symbolic, so one
  compilation serves every problem with the same dtype, rank, reduction, target kind, weight
  presence and ``label_smoothing`` (floats are specialised): a sweep compiles one graph per such
  combination, not one per problem (each takes seconds on a small CPU). The default,
  ``dynamic=None``, would compile the first shape statically and switch to dynamic shapes at the
  second, so a problem's kernels would depend on the problems before it.
* **No silent eager fallback**: ``fullgraph=True`` makes a graph break an error, and the
  recompile limit is raised (with ``fail_on_recompile_limit_hit``) so that a sweep never falls
  back to eager ATen after dynamo's default 8 recompilations.
* **Compile time stays out of the timing**: :meth:`prepare` runs the compiled function once
  (forward, or forward and backward) before returning the callable the throughput sweep times;
  the accuracy sweeps' ``seconds`` include compiling, which they do not claim to measure.

torch is imported lazily; ``available()`` also says when no C++ compiler is found, since the CPU
inductor needs one (``$CXX`` or ``g++``/``c++``/``clang++`` on ``PATH``).
"""

from __future__ import annotations

import os
import shutil
from functools import cache

from harness.implementations.torch_impl import TorchCPU, TorchCUDA, _torch

#: Recompilations allowed per code object (one per dtype and option set a sweep meets).
RECOMPILE_LIMIT = 1 << 20


@cache
def compiled():
    """The one compiled function (dynamo keeps one graph per guard set under it)."""
    torch, F = _torch()
    import torch._dynamo.config as dynamo_config

    for key in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                "accumulated_cache_size_limit"):
        if hasattr(dynamo_config, key):
            setattr(dynamo_config, key, RECOMPILE_LIMIT)
    if hasattr(dynamo_config, "fail_on_recompile_limit_hit"):
        dynamo_config.fail_on_recompile_limit_hit = True

    def cross_entropy(x, t, w, ignore_index: int, reduction: str, label_smoothing: float):
        return F.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)

    return torch.compile(cross_entropy, fullgraph=True, dynamic=True)


def cxx_compiler() -> str | None:
    """The C++ compiler the CPU inductor would use, or None."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx.split()[0])
    return next((p for p in map(shutil.which, ("g++", "c++", "clang++")) if p), None)


class _Compiled:
    """What the two devices share: the compiled forward, and an untimed first call."""

    opt_in = True  # compiling costs minutes over the catalogue: run it by name or in the zoo

    def _forward(self, problem, x, t, w):
        return compiled()(x, t, w, problem.ignore_index, problem.reduction, problem.label_smoothing)

    def prepare(self, problem, *, backward: bool = False):
        fn = super().prepare(problem, backward=backward)
        fn()  # compile now (forward, or forward and backward), outside the timed calls
        return fn


class TorchCompile(_Compiled, TorchCPU):
    """torch.compile(F.cross_entropy), inductor on the CPU (dynamic shapes, autograd gradient)."""

    name = "torch-compile"
    description = "torch.compile(F.cross_entropy, dynamic=True) on the CPU: inductor C++ kernels, gradient by AOTAutograd"

    def available(self) -> str | None:
        reason = super().available()
        if reason is None and cxx_compiler() is None:
            return "torch.compile's CPU inductor needs a C++ compiler (set CXX, or install g++)"
        return reason


class TorchCompileCUDA(_Compiled, TorchCUDA):
    """torch.compile(F.cross_entropy), inductor's Triton kernels on a CUDA device."""

    name = "torch-compile-cuda"
    description = "torch.compile(F.cross_entropy, dynamic=True) on CUDA: inductor Triton kernels, gradient by AOTAutograd"

    def available(self) -> str | None:
        reason = super().available()
        if reason is None:
            import importlib.util

            if importlib.util.find_spec("triton") is None:
                return "torch.compile on CUDA needs triton (python package 'triton' is not installed)"
        return reason
