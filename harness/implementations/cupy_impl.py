"""A hand-written CUDA softmax cross-entropy, compiled at run time through CuPy's NVRTC.

The kernels live in ``kernels/xent.cu`` (its header comment explains the numerics): one pass
over each row with an online (max, sum-of-exp) whose sum leaves out the max's own term, so
``-log p_t = (m - x_t) + log1p(s)`` keeps the digits of tiny losses; the gradient is written by
the same kernel in a second sweep, with the target class computed without cancellation.

Which kernel runs is chosen from the shape (see :func:`plan_launch`):

* ``group``   C up to 128 packs of 16 bytes: G = 1..32 lanes of a warp per row;
* ``block``   larger C: one block of 64..512 threads per row;
* ``split``   huge C with fewer rows than SMs: several blocks per row, three kernels;
* ``strided`` K-dim (N, C, d1, ...) with d1*...*dk >= 32 and C <= 256: one thread per row,
  reading the logits in place; other K-dim shapes are transposed to rows on the device first
  (and the gradient back), inside the timed call.

Forward-only kernels read the logits once; the fused forward+backward kernels also write the
gradient. 'mean' and 'sum' are reduced on the device in double, deterministically; the fused
'mean' over index targets first runs ``xent_weight_sum`` (it reads only the targets) because
the gradient needs the denominator. Nothing synchronises with the host inside a call.

CuPy is imported lazily. The kernels are compiled with NVRTC directly (``cupy.cuda.nvrtc``)
rather than with ``cupy.RawModule``, because RawModule appends ``-ftz=true`` after the user's
options (the last one wins), and flushing subnormals to zero would destroy the tiny
probabilities, gradients and losses the harness measures. All 49 kernels of a dtype are built
at once (about 10 s, on the first use of that dtype, outside the timed call) and cached in
memory and in ``$XENT_HARNESS_KERNEL_CACHE`` (default ``~/.cache/xent-harness/cupy``).

For a real GPU: :func:`kernel_attributes` / :func:`local_size_bytes` report registers and local
memory (spills) of the loaded kernels; :func:`compile_report` gives ptxas' view of an NVRTC build
for any architecture without a GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from harness.implementations._degenerate import degenerate_result
from harness.problem import Problem
from harness.registry import Implementation, no_gpu_reason
from harness.runner import one_line

KERNEL_PATH = Path(__file__).with_name("kernels") / "xent.cu"

#: CUDA type name and elements per 16-byte pack, per dtype name.
CUDA_TYPES: dict[str, tuple[str, int]] = {
    "float16": ("half_t", 8),
    "bfloat16": ("bfloat16_t", 8),
    "float32": ("float", 4),
    "float64": ("double", 2),
}
#: NVRTC options. No -ftz / fast math: subnormals matter here (see the module docstring).
NVRTC_OPTIONS: tuple[str, ...] = (
    "-std=c++17",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--fmad=true",
)

# Launch policy (see plan_launch).
GROUP_THREADS = 256
GROUP_MAX_PACKS = 128  # 32 lanes x 4 packs kept in registers
BLOCK_MIN_THREADS = 64
BLOCK_MAX_THREADS = 512  # __launch_bounds__(512) in xent_block
PACKS_PER_THREAD = 4  # packs each thread keeps in registers in the fused row kernels
STRIDED_MIN_D = 32
STRIDED_MAX_C = 256
SPLIT_MIN_PACKS = 4096
SPLIT_PACKS_PER_BLOCK = 1024
SPLIT_THREADS = 256
THREADS_PER_SM = 2048


# ---------------------------------------------------------------------------------------------
# Source and name expressions
# ---------------------------------------------------------------------------------------------
def _b(flag: bool) -> str:
    return "true" if flag else "false"


def row_kernel_name(layout: str, dtype: str, vec: int, mode: int, backward: bool) -> str:
    t = CUDA_TYPES[dtype][0]
    if layout == "strided":
        return f"xent_strided<{t}, {mode}, {_b(backward)}>"
    return f"xent_{layout}<{t}, {vec}, {mode}, {_b(backward)}>"


def split_kernel_names(dtype: str, vec: int, mode: int, backward: bool) -> list[str]:
    t = CUDA_TYPES[dtype][0]
    names = [
        f"xent_split_stats<{t}, {vec}, {mode}>",
        f"xent_split_finish<{t}, {mode}, {_b(backward)}>",
    ]
    if backward:
        names.append(f"xent_split_grad<{t}, {vec}, {mode}>")
    return names


def weight_sum_name(dtype: str) -> str:
    return f"xent_weight_sum<{CUDA_TYPES[dtype][0]}>"


def all_name_expressions(dtypes=tuple(CUDA_TYPES)) -> list[str]:
    """Every kernel instantiation the implementation can launch."""
    names: list[str] = []
    for dt in dtypes:
        vw = CUDA_TYPES[dt][1]
        for vec in (1, vw):
            for mode in (0, 1, 2):
                for bwd in (False, True):
                    names.append(row_kernel_name("group", dt, vec, mode, bwd))
                    names.append(row_kernel_name("block", dt, vec, mode, bwd))
                names += [n for n in split_kernel_names(dt, vec, mode, True) if "finish" not in n]
        for mode in (0, 1, 2):
            for bwd in (False, True):
                names.append(row_kernel_name("strided", dt, 1, mode, bwd))
                names.append(split_kernel_names(dt, 1, mode, bwd)[1])
        names.append(weight_sum_name(dt))
    return names


def kernel_source() -> tuple[str, list[str]]:
    """The CUDA source and the name expressions of every kernel instantiation it provides."""
    return KERNEL_PATH.read_text(encoding="utf-8"), all_name_expressions()


# ---------------------------------------------------------------------------------------------
# Launch policy (pure Python: testable without a GPU)
# ---------------------------------------------------------------------------------------------
def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@dataclass(frozen=True)
class LaunchPlan:
    layout: str  # "group", "block", "split" or "strided"
    transpose: bool  # K-dim logits moved to (M, C) rows on the device first
    vec: int  # elements per access: 16 // itemsize, or 1
    threads: int  # threads per block of the main (row or split) kernels
    grid: int  # blocks of the row kernel, or of xent_split_stats / _grad
    group: int = 0  # lanes per row ("group")
    splits: int = 0  # blocks per row ("split")
    chunk: int = 0  # packs per split block ("split")
    finish_grid: int = 0  # blocks of xent_split_finish ("split")

    @property
    def reduce_grid(self) -> int:
        """Blocks of the kernel that reduces the loss over rows (partials it needs)."""
        return self.finish_grid if self.layout == "split" else self.grid


def plan_launch(
    rows: int, classes: int, inner: int, itemsize: int, sms: int, aligned: bool
) -> LaunchPlan:
    """Choose the kernel and its launch shape.

    rows = M (samples), classes = C, inner = D (product of the K-dim spatial sizes, 1 for 2-D
    logits), itemsize of the element type, sms = multiprocessors, aligned = every base pointer
    is 16-byte aligned.
    """
    if rows < 1 or classes < 1:
        raise ValueError("plan_launch needs at least one row and one class")
    sms = max(1, int(sms))
    if inner > 1 and inner >= STRIDED_MIN_D and classes <= STRIDED_MAX_C:
        grid = min(math.ceil(rows / GROUP_THREADS), sms * (THREADS_PER_SM // GROUP_THREADS))
        return LaunchPlan("strided", False, 1, GROUP_THREADS, max(1, grid))
    transpose = inner > 1
    vw = 16 // itemsize
    vec = vw if (aligned and classes % vw == 0) else 1
    packs = classes // vec
    if packs <= GROUP_MAX_PACKS:
        g = min(32, _pow2_at_least(math.ceil(packs / PACKS_PER_THREAD)))
        rows_per_block = (GROUP_THREADS // 32) * (32 // g)
        grid = min(math.ceil(rows / rows_per_block), sms * (THREADS_PER_SM // GROUP_THREADS))
        return LaunchPlan("group", transpose, vec, GROUP_THREADS, max(1, grid), group=g)
    if rows < sms and packs >= SPLIT_MIN_PACKS:
        splits = min(math.ceil(2 * sms / rows), math.ceil(packs / SPLIT_PACKS_PER_BLOCK))
        if splits >= 2:
            chunk = math.ceil(packs / splits)
            splits = math.ceil(packs / chunk)  # no empty chunk
            return LaunchPlan(
                "split",
                transpose,
                vec,
                SPLIT_THREADS,
                rows * splits,
                splits=splits,
                chunk=chunk,
                finish_grid=math.ceil(rows / (SPLIT_THREADS // 32)),
            )
    threads = min(
        BLOCK_MAX_THREADS,
        max(BLOCK_MIN_THREADS, _pow2_at_least(math.ceil(packs / PACKS_PER_THREAD))),
    )
    grid = min(rows, sms * max(1, THREADS_PER_SM // threads))
    return LaunchPlan("block", transpose, vec, threads, grid)


def kernel_mode(problem: Problem) -> int:
    """0: index targets, 1: index targets with label smoothing, 2: probability targets."""
    if problem.probability_target:
        return 2
    return 1 if problem.label_smoothing > 0 else 0


# ---------------------------------------------------------------------------------------------
# Compilation (NVRTC through cupy.cuda.nvrtc) with an in-process and an on-disk cache
# ---------------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    """$XENT_HARNESS_KERNEL_CACHE, else ``cupy/`` in the harness's cache directory (XENT_CACHE)."""
    env = os.environ.get("XENT_HARNESS_KERNEL_CACHE")
    if env:
        return Path(env)
    from harness.cache import default_dir

    return default_dir() / "cupy"


def nvrtc_arch_option(
    compute_capability: str | int, supported: list[int] | None = None
) -> tuple[str, str]:
    """``(-arch option, 'cubin' | 'ptx')`` for a device, given NVRTC's supported archs."""
    cc = int(compute_capability)
    if supported is None:
        from cupy.cuda import nvrtc

        supported = list(nvrtc.getSupportedArchs())
    if cc in supported:
        return f"-arch=sm_{cc}", "cubin"
    lower = [a for a in supported if a <= cc]
    return f"-arch=compute_{max(lower) if lower else min(supported)}", "ptx"


def nvrtc_compile(
    names: list[str] | tuple[str, ...],
    arch_option: str,
    *,
    extra_options: tuple[str, ...] = (),
    source: str | None = None,
) -> tuple[bytes, dict[str, str], str]:
    """Compile ``names`` with NVRTC: (cubin or PTX bytes, name expression -> lowered name,
    program log). Needs the NVRTC library but no GPU."""
    from cupy.cuda import nvrtc

    src = KERNEL_PATH.read_text(encoding="utf-8") if source is None else source
    prog = nvrtc.createProgram(src, "xent.cu", (), ())
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        options = [*NVRTC_OPTIONS, arch_option, *extra_options]
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"NVRTC failed to compile xent.cu ({exc}):\n{log}") from None
        log = nvrtc.getProgramLog(prog)
        mapping = {n: nvrtc.getLoweredName(prog, n) for n in names}
        binary = nvrtc.getCUBIN(prog) if arch_option.startswith("-arch=sm_") else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if isinstance(binary, str):
        binary = binary.encode()
    return binary, mapping, log


def parse_ptxas_log(log: str) -> dict[str, dict[str, int]]:
    """``-Xptxas -v`` output -> {mangled kernel name: registers, stack, spill_stores, spill_loads}.

    Works for nvcc's and NVRTC's (``--ptxas-options=-v``) logs.
    """
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
            out[current] = {}
            continue
        if current is None:
            continue
        m = re.search(
            r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line
        )
        if m:
            out[current].update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current]["registers"] = int(m[1])
    return out


def compile_report(
    arch: str | int = 90, names: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Registers / stack / spills of every kernel as ptxas reports them for sm_<arch> when
    NVRTC builds it (no GPU needed). Keys are the name expressions."""
    names = list(all_name_expressions() if names is None else names)
    _, mapping, log = nvrtc_compile(
        names, f"-arch=sm_{int(arch)}", extra_options=("--ptxas-options=-v",)
    )
    by_lowered = parse_ptxas_log(log)
    return {n: by_lowered.get(mapping[n], {}) for n in names}


@cache
def _device_info(device_id: int) -> tuple[str, int]:
    import cupy

    dev = cupy.cuda.Device(device_id)
    return str(dev.compute_capability), int(dev.attributes["MultiProcessorCount"])


_MODULES: dict[tuple, tuple[object, dict[str, object]]] = {}


def load_kernels(names: tuple[str, ...]) -> dict[str, object]:
    """Compiled ``cupy.cuda.function.Function`` objects for ``names`` on the current device."""
    import cupy
    from cupy.cuda import function, nvrtc

    device_id = cupy.cuda.Device().id
    key = (device_id, tuple(sorted(set(names))))
    hit = _MODULES.get(key)
    if hit is not None:
        return hit[1]
    cc, _ = _device_info(device_id)
    arch_option, kind = nvrtc_arch_option(cc)
    source = KERNEL_PATH.read_text(encoding="utf-8")
    names_sorted = list(key[1])
    digest = hashlib.sha256(
        "\0".join(
            [source, *NVRTC_OPTIONS, arch_option, repr(nvrtc.getVersion()), *names_sorted]
        ).encode()
    ).hexdigest()[:32]
    cache_dir = _cache_dir()
    bin_path, map_path = cache_dir / f"{digest}.{kind}", cache_dir / f"{digest}.json"
    binary = mapping = None
    try:
        if bin_path.is_file() and map_path.is_file():
            binary = bin_path.read_bytes()
            mapping = json.loads(map_path.read_text())
    except (OSError, ValueError):
        binary = mapping = None
    if binary is None or mapping is None or set(mapping) != set(names_sorted):
        binary, mapping, _ = nvrtc_compile(names_sorted, arch_option, source=source)
        try:  # best effort: a read-only home only costs a recompile next time
            cache_dir.mkdir(parents=True, exist_ok=True)
            for path, data in ((bin_path, binary), (map_path, json.dumps(mapping).encode())):
                fd, tmp = tempfile.mkstemp(dir=cache_dir)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
        except OSError:
            pass
    module = function.Module()
    module.load(binary)
    kernels = {n: module.get_function(mapping[n]) for n in names_sorted}
    _MODULES[key] = (module, kernels)
    return kernels


def kernel_attributes() -> dict[str, dict[str, int]]:
    """For every kernel compiled so far in this process: registers, local (spill) memory,
    static shared memory and the largest block it can launch, as the driver reports them."""
    import cupy

    drv = cupy.cuda.driver
    attrs = {
        "num_regs": drv.CU_FUNC_ATTRIBUTE_NUM_REGS,
        "local_size_bytes": drv.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
        "shared_size_bytes": drv.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
        "max_threads_per_block": drv.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
    }
    out: dict[str, dict[str, int]] = {}
    for _, kernels in _MODULES.values():
        for name, fn in kernels.items():
            out[name] = {k: int(drv.funcGetAttribute(a, fn.ptr)) for k, a in attrs.items()}
    return out


def local_size_bytes() -> dict[str, int]:
    """Local memory (register spills, stack) per compiled kernel; 0 everywhere is the goal."""
    return {n: a["local_size_bytes"] for n, a in kernel_attributes().items()}


# ---------------------------------------------------------------------------------------------
# One problem on the device
# ---------------------------------------------------------------------------------------------
def _storage_dtype(dtype_name: str) -> np.dtype:
    """How an element type travels to the device (bfloat16 as its 16-bit pattern)."""
    return np.dtype(np.uint16) if dtype_name == "bfloat16" else np.dtype(dtype_name)


def _clamp_int64(v: int) -> int:
    return max(-(2**63), min(2**63 - 1, int(v)))


def _pointer(arr) -> int:
    data = arr.data
    return data.ptr if hasattr(data, "ptr") else arr.ctypes.data


class _Run:
    """A problem uploaded once, with its workspace and kernels; ``launch()`` enqueues one
    forward (or forward+backward) on the current stream.

    ``xp`` (array module), ``loader`` (name expressions -> launchable kernels) and ``sms`` default
    to CuPy, :func:`load_kernels` and the current device; the tests substitute a host emulation
    of the kernels to exercise this launch code without a GPU.
    """

    def __init__(self, problem: Problem, backward: bool, *, xp=None, loader=None, sms=None):
        if xp is None:
            import cupy as xp
        cp = self.cp = xp
        self.problem = problem
        self.backward = backward
        dt = problem.dtype.name
        self.dtype_name = dt
        self.store = _storage_dtype(dt)
        logits = problem.logits
        C = problem.num_classes
        if logits.ndim == 1:
            N, D = 1, 1
        else:
            N = logits.shape[0]
            D = int(np.prod(logits.shape[2:], dtype=np.int64)) if logits.ndim > 2 else 1
        self.N, self.C, self.D = N, C, D
        self.M = M = N * D
        self.mode = kernel_mode(problem)
        red = problem.reduction
        self.reduction = {"none": 0, "sum": 1, "mean": 2}[red]
        self.empty = M == 0 or C == 0  # nothing to launch: PyTorch's fixed results
        if self.empty:
            return
        eps = problem.label_smoothing
        self.om, self.eoc = 1.0 - eps, eps / C

        def up(a: np.ndarray):
            return cp.asarray(np.ascontiguousarray(a).view(self.store))

        self.x = up(logits)
        self.tidx = (
            None
            if problem.probability_target
            else cp.asarray(problem.target.reshape(-1).astype(np.int64))
        )
        self.tprob = up(problem.target) if problem.probability_target else None
        self.w = None if problem.weight is None else up(problem.weight)

        if sms is None:
            _, sms = _device_info(cp.cuda.Device().id)
        ptrs = [_pointer(a) for a in (self.x, self.tprob, self.w) if a is not None]
        aligned = all(p % 16 == 0 for p in ptrs)
        self.plan = plan = plan_launch(M, C, D, problem.dtype.itemsize, sms, aligned)

        acc = np.float64 if dt == "float64" else np.float32
        self.out = cp.empty((M,) if self.reduction == 0 else (1,), dtype=self.store)
        self.grad = cp.empty(logits.shape, dtype=self.store) if backward else None
        if plan.transpose:
            self.x_rows = cp.empty((M, C), dtype=self.store)
            self.tprob_rows = cp.empty((M, C), dtype=self.store) if self.tprob is not None else None
            self.grad_rows = cp.empty((M, C), dtype=self.store) if backward else None
        self.den_needed = backward and self.reduction == 2 and self.mode != 2
        self.den_grid = max(1, min(math.ceil(M / 256), sms * 4))
        self.partials = cp.zeros(2 * max(plan.reduce_grid, self.den_grid), dtype=np.float64)
        self.counter = cp.zeros(1, dtype=np.uint32)
        self.den_counter = cp.zeros(1, dtype=np.uint32)
        self.den = cp.zeros(1, dtype=np.float64)
        self.scale_const = (1.0 / M) if (self.reduction == 2 and self.mode == 2) else 1.0
        if plan.layout == "split":
            self.ws = cp.empty(4 * M * plan.splits, dtype=acc)
            self.rowinfo = cp.empty(4 * M, dtype=acc) if backward else None
            self.rowtgt = cp.empty(M, dtype=np.int64) if backward else None

        if plan.layout == "split":
            names = split_kernel_names(dt, plan.vec, self.mode, backward)
        else:
            names = [row_kernel_name(plan.layout, dt, plan.vec, self.mode, backward)]
        if self.den_needed:
            names.append(weight_sum_name(dt))
        self.names = names
        if loader is None:
            # one NVRTC build per dtype (49 kernels, about 10 s, then cached in memory and on
            # disk) instead of one per launch configuration: sweeps touch many of them
            self.kernels = load_kernels(tuple(all_name_expressions((dt,))))
        else:
            self.kernels = loader(tuple(names))

    # -- the launches --------------------------------------------------------------------------
    def launch(self):
        """Enqueue the computation; returns (loss, grad) device arrays (grad None for forward)."""
        cp = self.cp
        if self.empty:
            return None, None
        plan, dt = self.plan, self.dtype_name
        i64, f64, i32 = np.int64, np.float64, np.int32
        M, C = self.M, self.C
        x, tprob, grad = self.x, self.tprob, self.grad
        if plan.transpose:  # (N, C, D) -> (N, D, C) rows
            cp.copyto(
                self.x_rows.reshape(self.N, self.D, C),
                cp.moveaxis(x.reshape(self.N, C, self.D), 1, 2),
            )
            x = self.x_rows
            if tprob is not None:
                cp.copyto(
                    self.tprob_rows.reshape(self.N, self.D, C),
                    cp.moveaxis(tprob.reshape(self.N, C, self.D), 1, 2),
                )
                tprob = self.tprob_rows
            grad = self.grad_rows
        ignore = i64(_clamp_int64(self.problem.ignore_index))
        den_ptr = None
        if self.den_needed:
            self.kernels[weight_sum_name(dt)](
                (self.den_grid,),
                (256,),
                (
                    self.tidx,
                    self.w,
                    i64(M),
                    i64(C),
                    ignore,
                    self.partials,
                    self.den_counter,
                    self.den,
                ),
            )
            den_ptr = self.den
        common = (
            x,
            self.tidx,
            tprob,
            self.w,
            grad,
            self.out,
            i64(M),
            i64(C),
            ignore,
            f64(self.om),
            f64(self.eoc),
            i32(self.reduction),
            den_ptr,
            f64(self.scale_const),
            self.partials,
            self.counter,
        )
        if plan.layout == "split":
            stats, finish = split_kernel_names(dt, plan.vec, self.mode, self.backward)[:2]
            self.kernels[stats](
                (plan.grid,),
                (plan.threads,),
                (
                    x,
                    tprob,
                    self.w,
                    i64(M),
                    i64(C),
                    f64(self.om),
                    f64(self.eoc),
                    i64(plan.splits),
                    i64(plan.chunk),
                    self.ws,
                ),
            )
            self.kernels[finish](
                (plan.finish_grid,),
                (SPLIT_THREADS,),
                (*common, i64(plan.splits), self.ws, self.rowinfo, self.rowtgt),
            )
            if self.backward:
                self.kernels[split_kernel_names(dt, plan.vec, self.mode, True)[2]](
                    (plan.grid,),
                    (plan.threads,),
                    (
                        x,
                        tprob,
                        self.w,
                        grad,
                        i64(M),
                        i64(C),
                        f64(self.om),
                        f64(self.eoc),
                        i64(plan.splits),
                        i64(plan.chunk),
                        self.rowinfo,
                        self.rowtgt,
                    ),
                )
        else:
            aux = {"group": plan.group, "strided": self.D, "block": 0}[plan.layout]
            name = row_kernel_name(plan.layout, dt, plan.vec, self.mode, self.backward)
            self.kernels[name]((plan.grid,), (plan.threads,), (*common, i64(aux)))
        if plan.transpose and self.backward:  # (N, D, C) rows -> (N, C, D)
            cp.copyto(
                self.grad.reshape(self.N, C, self.D),
                cp.moveaxis(self.grad_rows.reshape(self.N, self.D, C), 2, 1),
            )
        return self.out, self.grad

    # -- results on the host -------------------------------------------------------------------
    def _host(self, arr) -> np.ndarray:
        to_host = getattr(self.cp, "asnumpy", np.array)
        a = to_host(arr)
        return a.view(self.problem.dtype) if self.dtype_name == "bfloat16" else a

    def loss_host(self) -> np.ndarray:
        p = self.problem
        if self.empty:
            return degenerate_result(p)[0]
        return self._host(self.out).reshape(p.output_shape)

    def grad_host(self) -> np.ndarray:
        p = self.problem
        if self.empty:
            return degenerate_result(p)[1]
        return self._host(self.grad).reshape(p.logits.shape)


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
        return {"name": name, "memory_bytes": int(props["totalGlobalMem"]),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "multiprocessors": int(props["multiProcessorCount"]), "driver": rt.driverGetVersion(),
                "cuda": rt.runtimeGetVersion(), "library": f"cupy {cupy.__version__}"}

    def _run(self, problem: Problem, backward: bool) -> _Run:
        import cupy

        run = _Run(problem, backward)
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

        run = _Run(problem, backward)  # uploads, allocates and compiles: untimed
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
