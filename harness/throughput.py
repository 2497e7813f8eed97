"""The throughput sweep: time forward and forward+backward, report GB/s against a same-run copy.

Bytes follow the minimal-bytes model: a forward pass must read the logits once (N·C·b bytes);
a fused forward+backward must also write the gradient (2·N·C·b). The practical ceiling is a copy
(read + write) of the same bytes on the same device, measured in the same run, so
``fraction_of_copy`` compares like with like on a noisy machine.

Timing: ``prepare()`` moves inputs to the device and compiles (untimed); the callable it returns
synchronizes the device itself. After warm-up, each of ``repeats`` samples times enough calls to
last ``min_sample_s``; we keep the median and the IQR, and flag IQR/median > 10 % as noisy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness import registry, vocabulary
from harness.formats import FORMATS
from harness.problem import Problem
from harness.results import Results


def _table() -> dict:
    import tomllib
    from importlib import resources

    text = resources.files("harness").joinpath("scenarios.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["throughput"]


#: (N, C) grids and the dtypes timed when none is named: data, in scenarios.toml's [throughput].
_GRID = _table()
GRID = tuple(tuple(shape) for shape in _GRID["grid"])
QUICK_GRID = tuple(tuple(shape) for shape in _GRID["quick"])
DEFAULT_DTYPES = tuple(_GRID["dtypes"])
PASSES = vocabulary.PASSES
NOISY = 0.10


@dataclass
class Timing:
    median_s: float
    iqr_s: float
    repeats: int
    calls: int

    @property
    def noisy(self) -> bool:
        return self.iqr_s > NOISY * self.median_s


def measure(fn: Callable[[], object], *, repeats: int = 7, min_sample_s: float = 0.02,
            budget_s: float = 0.6) -> Timing:
    """Median and IQR of one call of ``fn`` (which must synchronize its device).

    One warm-up call (``prepare`` has already compiled), then ``repeats`` samples of enough calls
    to last ``min_sample_s`` each; slow calls get fewer samples (never under 3) so one row costs
    about ``budget_s`` (the default run times 48 rows; tracking over time is asv's job)."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(min_sample_s / once))
    repeats = max(3, min(repeats, int(budget_s / (once * calls))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls)
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return Timing(float(med), float(q3 - q1), repeats, calls)


#: The measuring child's allocator returns every block of 16 KiB or more to the OS when freed
#: (glibc's tunables; no trimming slack), so a call cannot hide working memory by reusing what
#: earlier calls freed: VmHWM - VmRSS then sees it. Timing runs with the default allocator.
MEMORY_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_TOP_PAD_": "0"}


def peak_memory(fn: Callable[[], object]) -> int | None:
    """Peak resident memory one call of ``fn`` adds, from Linux's VmHWM after resetting it
    (/proc/self/clear_refs) and trimming the allocator; None where that is not available or
    nothing was measured (a call that reuses memory it holds reads 0: unknown, never 0 B)."""
    import ctypes
    import gc

    try:
        gc.collect()
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status("VmRSS")
        fn()
        return (_status("VmHWM") - before) or None
    except OSError:
        return None


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(key)


def time_call(impl: registry.Implementation, problem: Problem, pass_: str, repeats: int) -> dict:
    """Prepare (untimed) and time one pass; a device implementation also reports its own peak
    device memory. Runs where the implementation runs: here, or in its isolated child."""
    fn = impl.prepare(problem.presented(), backward=pass_ == "forward+backward")
    t = measure(fn, repeats=repeats)
    mem = None if impl.device == "cpu" else impl.peak_memory(fn)
    return {"repeats": t.repeats, "calls": t.calls, "median_s": t.median_s, "iqr_s": t.iqr_s,
            "noisy": t.noisy, "peak_memory_bytes": mem}


def call_memory(impl: registry.Implementation, problem: Problem, pass_: str) -> int | None:
    """The peak working memory of one call beyond its inputs (run in the memory child)."""
    fn = impl.prepare(problem.presented(), backward=pass_ == "forward+backward")
    return peak_memory(fn)


def cpu_copy(nbytes: int) -> Callable[[], None]:
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def problem_for(N: int, C: int, dtype: str, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C), dtype=np.float32) * 3
    return Problem(x.astype(FORMATS[dtype].dtype), rng.integers(0, C, N))


class _Runners:
    """Per implementation: the runner that times it (in process, or its isolated child) and,
    for the CPU, the child of its own that measures peak memory (:data:`MEMORY_CHILD_ENV`)."""

    def __init__(self, isolate: bool | None, timeout: float):
        self.isolate, self.timeout = isolate, timeout
        self._by_name: dict = {}

    def __call__(self, entry: registry.Entry):
        from harness.runner import Runner, isolated

        if entry.name not in self._by_name:
            timing = Runner(entry, isolate=isolated(entry, self.isolate), timeout=self.timeout)
            memory = Runner(entry, isolate=True, timeout=self.timeout, env=MEMORY_CHILD_ENV)
            self._by_name[entry.name] = (timing, memory)
        return self._by_name[entry.name]

    def close(self):
        for pair in self._by_name.values():
            for r in pair:
                r.close()


def run(entries: list[registry.Entry], dtypes: list[str], results: Results, *, quick: bool = False,
        grid=None, repeats: int = 7, log: Callable[[str], None] = print, progress=None,
        isolate: bool | None = None, timeout: float = 60.0) -> None:
    """Time every implementation on the grid into ``results`` (rows already there are kept).
    ``isolate``/``timeout`` as for the sweeps: a plugin is timed in its own child, and a call
    past ``timeout`` (preparation included) is an error row."""
    grid = grid or (QUICK_GRID if quick else GRID)
    copies = {(c["dtype"], c["N"], c["C"]): c for c in results.data.get("copy", [])}
    nthreads = registry.default_threads()
    total = len(grid) * len(dtypes) * len(entries) * len(PASSES)
    bar = progress(total) if progress else None
    runners = _Runners(isolate, timeout)
    try:
        for N, C in grid:
            for dtype in dtypes:
                b = FORMATS[dtype].itemsize
                if (dtype, N, C) not in copies:
                    fwd_bytes = N * C * b
                    t = measure(cpu_copy(fwd_bytes), repeats=repeats)
                    copies[(dtype, N, C)] = {"device": "cpu", "dtype": dtype, "N": N, "C": C, "bytes": fwd_bytes,
                                             "median_s": t.median_s, "gbps": 2 * fwd_bytes / t.median_s / 1e9}
                    results.data["copy"] = list(copies.values())
                copy_gbps = copies[(dtype, N, C)]["gbps"]
                problem = None
                for entry in entries:
                    for pass_ in PASSES:
                        key = (entry.name, dtype, N, C, pass_)
                        if bar:
                            bar.update(1)
                        if results.has_row(key):
                            continue
                        problem = problem or problem_for(N, C, dtype)
                        results.add_row(_row(runners(entry), entry, problem, pass_, copy_gbps, nthreads, repeats))
    finally:
        runners.close()
        if bar:
            bar.close()


def _row(runners, entry: registry.Entry, problem: Problem, pass_: str, copy_gbps: float, nthreads: int,
         repeats: int) -> dict:
    from harness.runner import CallFailed, Unsupported

    impl = entry.impl
    timing, memory = runners
    N, C = problem.logits.shape
    nbytes = N * C * problem.dtype.itemsize * (1 if pass_ == "forward" else 2)
    row = {"impl": entry.name, "dtype": problem.dtype.name, "N": N, "C": C, "pass": pass_,
           "device": impl.device, "threads": nthreads, "bytes": nbytes, "status": "ok", "message": None}
    reason = impl.supports(problem)
    if pass_ == "forward+backward" and not impl.has_grad:
        reason = f"{entry.name} provides no gradient"
    if reason:
        return row | {"status": "unsupported", "message": reason}
    try:
        timed = timing.call("throughput", (problem, pass_, repeats))
    except Unsupported as exc:
        return row | {"status": "unsupported", "message": str(exc)}
    except CallFailed as exc:
        return row | {"status": "error", "message": str(exc)} | ({"detail": exc.detail} if exc.detail else {})
    mem = timed.pop("peak_memory_bytes")
    if impl.device == "cpu":
        try:
            mem = memory.call("memory", (problem, pass_))
        except (CallFailed, Unsupported):  # the timing stands; the memory is unknown
            mem = None
    gbps = nbytes / timed["median_s"] / 1e9
    return row | timed | {"gbps": gbps, "copy_gbps": copy_gbps, "fraction_of_copy": gbps / copy_gbps,
                          "peak_memory_bytes": mem}
