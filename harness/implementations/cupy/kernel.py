"""The registry's ``cupy`` implementation: :class:`CupyKernel`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

from harness.implementations.cupy.names import KERNEL_PATH
from harness.implementations.cupy.run import DeviceRun
from harness.problem import Problem
from harness.registry import Implementation, no_gpu_reason
from harness.runner import one_line


class CupyKernel(Implementation):
    """Hand-written CUDA kernel (online softmax, fused forward+backward) compiled with NVRTC."""

    name = "cupy"
    description = (
        "hand-written CUDA kernel via CuPy/NVRTC: one-pass online softmax with log1p-accurate "
        "loss, fused forward+backward"
    )
    devices = ("cuda",)
    requires = ("cupy",)

    def available(self) -> str | None:
        if importlib.util.find_spec("cupy") is None:
            return "python package 'cupy' is not installed (pip install cupy-cuda12x)"
        # a machine visibly without an NVIDIA GPU is told apart without importing cupy, so that
        # listing implementations stays fast
        no_gpu = no_gpu_reason()
        if no_gpu:
            return no_gpu
        try:
            import cupy
        except Exception as exc:  # a broken install must not crash the listing
            return f"cupy failed to import: {one_line(exc)}"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return f"no usable CUDA device: {one_line(exc)}"
        if count < 1:
            return "no CUDA device found"
        try:
            from cupy.cuda import nvrtc

            nvrtc.getVersion()
        except Exception as exc:
            return f"NVRTC (the CUDA runtime compiler) is not available: {one_line(exc)}"
        return None

    def device_info(self) -> dict | None:
        import cupy

        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device().id
        props = rt.getDeviceProperties(dev)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return {
            "name": name,
            "memory_bytes": int(props["totalGlobalMem"]),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "multiprocessors": int(props["multiProcessorCount"]),
            "driver": rt.driverGetVersion(),
            "cuda": rt.runtimeGetVersion(),
            "library": f"cupy {cupy.__version__}",
        }

    def _run(self, problem: Problem, backward: bool) -> DeviceRun:
        import cupy

        run = DeviceRun(problem, backward)
        run.launch()
        cupy.cuda.get_current_stream().synchronize()
        return run

    def loss(self, problem: Problem) -> np.ndarray:
        return self._run(problem, backward=False).loss_host()

    def grad(self, problem: Problem) -> np.ndarray:
        return self._run(problem, backward=True).grad_host()

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Both results of one fused launch."""
        run = self._run(problem, backward=True)
        return run.loss_host(), run.grad_host()

    def prepare(self, problem: Problem, *, backward: bool = False) -> Callable[[], object]:
        import cupy

        run = DeviceRun(problem, backward)  # uploads, allocates, compiles, packs: untimed
        stream = cupy.cuda.get_current_stream()

        def timed():
            out = run.launch()
            stream.synchronize()
            return out

        return timed

    def describe(self) -> dict:
        d = super().describe()
        d["kernel"] = str(KERNEL_PATH.name)
        return d
