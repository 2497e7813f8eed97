"""One problem on the device: its arrays, its workspace and its planned kernel launches.

:class:`DeviceRun` uploads a problem once, allocates what the launches need and builds every
launch (kernel, grid, block, parameter structs) up front, outside the timed call;
:meth:`DeviceRun.launch` only enqueues them on the current stream (nothing synchronises with the
host). ``xp`` (array module), ``loader`` (name expressions -> launchable kernels) and ``sms``
default to CuPy, :func:`~harness.implementations.cupy.build.load_kernels` and the current device;
the tests substitute a host emulation of the kernels to exercise this code without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.implementations._degenerate import degenerate_result
from harness.implementations.cupy.build import device_properties, load_kernels
from harness.implementations.cupy.names import (
    all_name_expressions,
    row_kernel_name,
    split_kernel_names,
    weight_sum_name,
)
from harness.implementations.cupy.params import OPTIONS, REDUCE, SHAPE, SPLIT, TENSORS, address
from harness.implementations.cupy.plan import (
    SPLIT_THREADS,
    WEIGHT_SUM_THREADS,
    LaunchPlan,
    kernel_mode,
    plan_launch,
    weight_sum_grid,
)
from harness.problem import Problem

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}  # Options.reduction


def storage_dtype(dtype_name: str) -> np.dtype:
    """How an element type travels to the device (bfloat16 as its 16-bit pattern)."""
    return np.dtype(np.uint16) if dtype_name == "bfloat16" else np.dtype(dtype_name)


def _clamp_int64(v: int) -> int:
    return max(-(2**63), min(2**63 - 1, int(v)))


@dataclass(frozen=True, slots=True)
class Sizes:
    """The logits as (N, C, D): N samples, C classes, D = d1*...*dk (1 for 2-D or 1-D logits)."""

    N: int
    C: int
    D: int

    @property
    def M(self) -> int:
        """Rows: one per sample and spatial position."""
        return self.N * self.D

    @classmethod
    def of(cls, problem: Problem) -> Sizes:
        logits = problem.logits
        if logits.ndim == 1:
            return cls(1, problem.num_classes, 1)
        D = int(np.prod(logits.shape[2:], dtype=np.int64)) if logits.ndim > 2 else 1
        return cls(logits.shape[0], problem.num_classes, D)


@dataclass(slots=True)
class DeviceArrays:
    """The problem on the device and its results (the loss, and the gradient when backward)."""

    x: Any
    tidx: Any | None  # index targets as (M,) int64
    tprob: Any | None  # probability targets
    w: Any | None
    out: Any = None  # (M,) for 'none', else (1,)
    grad: Any | None = None


@dataclass(slots=True)
class Workspace:
    """What the launches use besides the problem, allocated once and reused by every launch."""

    partials: Any  # 2 doubles per block of the reducing kernel (or of xent_weight_sum)
    counter: Any  # the row reduction's ticket (the last block resets it to 0)
    den_counter: Any  # xent_weight_sum's ticket
    den: Any  # sum_n w_{y_n}, from xent_weight_sum
    x_rows: Any | None = None  # transposed K-dim: the logits as (M, C) rows
    tprob_rows: Any | None = None
    grad_rows: Any | None = None
    ws: Any | None = None  # split: 4 partial statistics per (row, chunk)
    rowinfo: Any | None = None  # split, backward: 4 gradient coefficients per row
    rowtgt: Any | None = None  # split, backward: the target class per row


@dataclass(frozen=True, slots=True)
class Launch:
    """One kernel launch: the kernel's name expression, 1-D grid and block, its parameters."""

    name: str
    grid: int
    block: int
    args: tuple


class DeviceRun:
    """A problem uploaded once, with its workspace and launches; ``launch()`` enqueues one
    forward (or forward+backward) on the current stream."""

    __slots__ = (
        "arrays",
        "backward",
        "empty",
        "kernels",
        "launches",
        "mode",
        "plan",
        "problem",
        "reduction",
        "sizes",
        "store",
        "work",
        "xp",
    )

    def __init__(self, problem: Problem, backward: bool, *, xp=None, loader=None, sms=None):
        if xp is None:
            import cupy as xp
        self.xp = xp
        self.problem = problem
        self.backward = backward
        self.store = storage_dtype(problem.dtype.name)
        self.sizes = n = Sizes.of(problem)
        self.mode = kernel_mode(problem)
        self.reduction = REDUCTIONS[problem.reduction]
        self.empty = n.M == 0 or n.C == 0  # nothing to launch: PyTorch's fixed results
        self.plan: LaunchPlan | None = None
        self.arrays = self.work = None
        self.launches: tuple[Launch, ...] = ()
        self.kernels: dict[str, Any] = {}
        if self.empty:
            return
        self.arrays = self._upload()
        if sms is None:
            _, sms = device_properties(xp.cuda.Device().id)
        a = self.arrays
        aligned = all(address(v) % 16 == 0 for v in (a.x, a.tprob, a.w) if v is not None)
        self.plan = plan_launch(n.M, n.C, n.D, problem.dtype.itemsize, sms, aligned)
        self.work = self._allocate(sms)
        self.launches = self._launches(sms)
        if loader is None:
            # one NVRTC build per dtype (49 kernels, about 10 s, then cached in memory and on
            # disk) instead of one per launch configuration: sweeps touch many of them
            self.kernels = load_kernels(tuple(all_name_expressions((problem.dtype.name,))))
        else:
            self.kernels = loader(tuple(s.name for s in self.launches))

    # -- set-up (untimed) ----------------------------------------------------------------------
    def _upload(self) -> DeviceArrays:
        p, xp = self.problem, self.xp

        def up(a: np.ndarray):
            # the kernels index C-ordered rows: a strided, transposed or offset view
            # (harness/memory_layout.py) is made contiguous here, on the host, explicitly;
            # cupy.asarray alone would keep a Fortran-ordered (N, C) array Fortran-ordered
            return xp.asarray(np.ascontiguousarray(a).view(self.store))

        prob = p.probability_target
        return DeviceArrays(
            x=up(p.logits),
            tidx=None if prob else xp.asarray(p.target.reshape(-1).astype(np.int64)),
            tprob=up(p.target) if prob else None,
            w=None if p.weight is None else up(p.weight),
        )

    def _allocate(self, sms: int) -> Workspace:
        xp, a, plan, n = self.xp, self.arrays, self.plan, self.sizes
        M, C = n.M, n.C
        a.out = xp.empty((M,) if self.reduction == 0 else (1,), dtype=self.store)
        a.grad = xp.empty(self.problem.logits.shape, dtype=self.store) if self.backward else None
        rows = {}
        if plan.transpose:
            rows["x_rows"] = xp.empty((M, C), dtype=self.store)
            if a.tprob is not None:
                rows["tprob_rows"] = xp.empty((M, C), dtype=self.store)
            if self.backward:
                rows["grad_rows"] = xp.empty((M, C), dtype=self.store)
        grids = max(plan.reduce_grid, weight_sum_grid(M, sms))
        work = Workspace(
            partials=xp.zeros(2 * grids, dtype=np.float64),
            counter=xp.zeros(1, dtype=np.uint32),
            den_counter=xp.zeros(1, dtype=np.uint32),
            den=xp.zeros(1, dtype=np.float64),
            **rows,
        )
        if plan.layout == "split":
            acc = np.float64 if self.problem.dtype.name == "float64" else np.float32
            work.ws = xp.empty(4 * M * plan.splits, dtype=acc)
            if self.backward:
                work.rowinfo = xp.empty(4 * M, dtype=acc)
                work.rowtgt = xp.empty(M, dtype=np.int64)
        return work

    def _launches(self, sms: int) -> tuple[Launch, ...]:
        """The kernels in launch order, with their parameter structs."""
        p, a, w, plan, n = self.problem, self.arrays, self.work, self.plan, self.sizes
        dt, mode, bwd = p.dtype.name, self.mode, self.backward
        rows = plan.transpose  # the kernels read (M, C) rows that launch() fills first
        tensors = TENSORS.pack(
            x=w.x_rows if rows else a.x,
            tidx=a.tidx,
            tprob=w.tprob_rows if rows else a.tprob,
            w=a.w,
            grad=w.grad_rows if rows else a.grad,
            out=a.out,
        )
        shape = SHAPE.pack(M=n.M, C=n.C, D=n.D if plan.layout == "strided" else 1)
        eps = p.label_smoothing
        options = OPTIONS.pack(
            ignore_index=_clamp_int64(p.ignore_index),
            om=1.0 - eps,
            eoc=eps / n.C,
            reduction=self.reduction,
        )
        den_needed = bwd and self.reduction == 2 and mode != 2
        reduce = REDUCE.pack(
            partials=w.partials,
            counter=w.counter,
            den=w.den if den_needed else None,
            scale=(1.0 / n.M) if (self.reduction == 2 and mode == 2) else 1.0,
        )
        problem_args = (tensors, shape, options)
        out: list[Launch] = []
        if den_needed:
            den = REDUCE.pack(partials=w.partials, counter=w.den_counter, den=w.den, scale=1.0)
            grid = weight_sum_grid(n.M, sms)
            out.append(Launch(weight_sum_name(dt), grid, WEIGHT_SUM_THREADS, (*problem_args, den)))
        if plan.layout == "split":
            split = SPLIT.pack(
                splits=plan.splits, chunk=plan.chunk, ws=w.ws, rowinfo=w.rowinfo, rowtgt=w.rowtgt
            )
            stats, finish, *grad = split_kernel_names(dt, plan.vec, mode, bwd)
            out.append(Launch(stats, plan.grid, plan.threads, (*problem_args, split)))
            out.append(
                Launch(finish, plan.finish_grid, SPLIT_THREADS, (*problem_args, reduce, split))
            )
            out += [Launch(g, plan.grid, plan.threads, (*problem_args, split)) for g in grad]
        else:
            lanes = (np.int32(plan.group),) if plan.layout == "group" else ()
            name = row_kernel_name(plan.layout, dt, plan.vec, mode, bwd)
            out.append(Launch(name, plan.grid, plan.threads, (*problem_args, reduce, *lanes)))
        return tuple(out)

    # -- the launches --------------------------------------------------------------------------
    def launch(self):
        """Enqueue the computation; returns (loss, grad) device arrays (grad None for forward)."""
        if self.empty:
            return None, None
        xp, a, w, n = self.xp, self.arrays, self.work, self.sizes
        N, C, D = n.N, n.C, n.D
        if self.plan.transpose:  # (N, C, D) -> (N, D, C) rows
            xp.copyto(w.x_rows.reshape(N, D, C), xp.moveaxis(a.x.reshape(N, C, D), 1, 2))
            if a.tprob is not None:
                xp.copyto(
                    w.tprob_rows.reshape(N, D, C), xp.moveaxis(a.tprob.reshape(N, C, D), 1, 2)
                )
        for step in self.launches:
            self.kernels[step.name]((step.grid,), (step.block,), step.args)
        if self.plan.transpose and self.backward:  # (N, D, C) rows -> (N, C, D)
            xp.copyto(a.grad.reshape(N, C, D), xp.moveaxis(w.grad_rows.reshape(N, D, C), 2, 1))
        return a.out, a.grad

    # -- results on the host -------------------------------------------------------------------
    def _host(self, arr) -> np.ndarray:
        to_host = getattr(self.xp, "asnumpy", np.array)
        a = to_host(arr)
        return a.view(self.problem.dtype) if self.problem.dtype.name == "bfloat16" else a

    def loss_host(self) -> np.ndarray:
        p = self.problem
        if self.empty:
            return degenerate_result(p)[0]
        return self._host(self.arrays.out).reshape(p.output_shape)

    def grad_host(self) -> np.ndarray:
        p = self.problem
        if self.empty:
            return degenerate_result(p)[1]
        return self._host(self.arrays.grad).reshape(p.logits.shape)
