"""Shared helpers of the asv benchmarks (no benchmarks here)."""

from __future__ import annotations

import os
from pathlib import Path

CPU_IMPLS = ("numpy", "torch", "jax")
GPU_IMPLS = ("torch-cuda", "jax-gpu", "cupy")


def _gpu_visible() -> bool:
    """False when this machine visibly has no NVIDIA GPU (harness.registry's check: it imports
    no GPU library)."""
    from harness.registry import no_gpu_reason

    return no_gpu_reason() is None


#: Implementations benchmarked: the CPU built-ins, plus the GPU ones where an NVIDIA device is
#: visible (elsewhere they would only add skipped n/a rows and seconds of setup to every run).
#: XENT_ASV_IMPLS (comma-separated registry names or MODULE:ATTR specs) replaces the list.
#: The list is the benchmarks' first parameter: keep it fixed on a machine, or its history breaks.
DEFAULT_IMPLS = CPU_IMPLS + (GPU_IMPLS if _gpu_visible() else ())
IMPLS = tuple(s.strip() for s in os.environ.get("XENT_ASV_IMPLS", "").split(",") if s.strip()) or DEFAULT_IMPLS
DTYPES = ("float16", "bfloat16", "float32", "float64")

#: The golden references of this checkout (the installed package may have none next to it).
REFERENCES = Path(os.environ.get("XENT_REFERENCES") or Path(__file__).resolve().parents[2] / "references")


def implementation(name: str):
    """The implementation called ``name``, or NotImplementedError (asv: skipped) with why."""
    from harness import registry

    try:
        if name in registry.BUILTINS:
            entry = next(e for e in registry.discover() if e.name == name)
            reason = entry.unavailable()
            if reason:
                raise NotImplementedError(f"{name}: {reason}")
            return entry.impl
        return registry.get(name)
    except registry.ImplementationError as exc:
        raise NotImplementedError(str(exc)) from None


def random_problem(N: int, C: int, dtype: str, seed: int = 0):
    """The throughput sweep's problem (normal logits of scale 3, random class-index targets)."""
    from harness.throughput import problem_for

    return problem_for(N, C, dtype, seed)
