"""tinygrad: ``Tensor.sparse_categorical_crossentropy`` (class indices) and
``Tensor.cross_entropy`` (probabilities), gradient by ``Tensor.gradient``, on tinygrad's CPU device.

* class indices: ``x.sparse_categorical_crossentropy(Y, ignore_index=..., label_smoothing=ε,
  reduction=...)`` on rows with the class axis last (tinygrad's convention, a transpose for
  K-dim and unbatched inputs). Its ``ignore_index`` default is −1 and means "none": the adapter
  passes the problem's, so ``ignore_index=-1`` problems ignore nothing in tinygrad (a
  convention of tinygrad's, declared unsupported via ``supports``);
* probabilities: ``x.cross_entropy(Y, reduction=..., label_smoothing=ε)`` (class axis 1, as
  PyTorch).

tinygrad has no class weights. Its CPU device compiles kernels with clang (``$CC``): without
one on ``PATH`` ``available()`` says so, and bfloat16 is declared unsupported when that clang
has no ``__bf16`` for tinygrad's target (clang 14 has none on x86-64: "__bf16 is not supported on
this target").
"""

from __future__ import annotations

import os
import shutil
from functools import cache

import numpy as np

from harness.zoo.base import AutodiffAdapter, class_last
from harness.zoo.convert import from_tinygrad, to_tinygrad


@cache
def clang_bf16() -> str | None:
    """None when tinygrad's C compiler compiles ``__bf16`` for its CPU target, else why not."""
    import platform
    import subprocess

    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    cc = os.environ.get("CC", "clang")
    try:
        out = subprocess.run([cc, "-c", "-x", "c", "-ffreestanding", f"--target={arch}-none-unknown-elf", "-",
                              "-o", os.devnull], input=b"__bf16 f(__bf16 x) { return x; }\n", capture_output=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cc} could not be run ({type(exc).__name__})"
    if out.returncode == 0:
        return None
    lines = out.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[0].split("error: ")[-1] if lines else f"{cc} exited {out.returncode}"


class Tinygrad(AutodiffAdapter):
    """tinygrad Tensor.sparse_categorical_crossentropy / cross_entropy on CPU, Tensor.gradient."""

    name = "tinygrad"
    description = "tinygrad Tensor.sparse_categorical_crossentropy / Tensor.cross_entropy (CPU device), Tensor.gradient"
    library = "tinygrad"
    extra = "zoo-tinygrad"
    requires = ("tinygrad",)
    features = frozenset({"ignore_index", "label_smoothing", "probability_target", "kdim", "unbatched",
                          "reduction:mean", "reduction:sum", "reduction:none"})

    def available(self):
        reason = super().available()
        if reason is None and shutil.which("clang") is None:
            return "tinygrad's CPU device compiles with clang, which is not on PATH (apt-get install clang)"
        return reason

    def supports(self, problem):
        reason = super().supports(problem)
        if reason is None and not problem.probability_target and problem.ignore_index == -1:
            return "ignore_index=-1 not supported (tinygrad's -1 means 'ignore nothing')"
        if reason is None and problem.dtype.name == "bfloat16" and clang_bf16():
            return f"bfloat16 not supported by this clang (tinygrad's CPU compiler): {clang_bf16()}"
        return reason

    to_numpy = staticmethod(from_tinygrad)

    def grad_in_rows(self, problem):
        return not problem.probability_target  # cross_entropy keeps the class axis at 1

    def _run(self, problem, grad: bool):
        if problem.probability_target:
            x = to_tinygrad(np.ascontiguousarray(problem.logits), "CPU")
            loss = x.cross_entropy(to_tinygrad(problem.target, "CPU"), reduction=problem.reduction,
                                   label_smoothing=problem.label_smoothing)
            g = loss.sum().gradient(x)[0] if grad else None
            return loss, g
        rows, t = class_last(problem)
        x = to_tinygrad(rows, "CPU")
        loss = x.sparse_categorical_crossentropy(to_tinygrad(t, "CPU"), ignore_index=problem.ignore_index,
                                                 label_smoothing=problem.label_smoothing,
                                                 reduction=problem.reduction)
        g = loss.sum().gradient(x)[0] if grad else None
        return loss, g
