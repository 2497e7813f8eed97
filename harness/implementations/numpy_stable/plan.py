"""Everything about one problem that does not depend on running it: the row views, the options
that pick the formulas, the tiling into blocks and column tiles, and the scratch buffers."""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from harness.formats import compute_dtype
from harness.implementations.numpy_stable.rounding import F64
from harness.implementations.numpy_stable.run import run_plan
from harness.implementations.numpy_stable.threads import thread_pool
from harness.problem import Problem

#: Bytes of compute-dtype data per block of rows. Larger blocks mean fewer NumPy calls, whose
#: fixed cost (~1-2 us each, plus a GIL hand-off between threads, several us on a VM) is what
#: blocks amortize; the working set (the block and its exponentials) still fits a shared L3.
#: Measured on 2 cores: 4 MiB blocks beat 1 MiB (and 256 KiB by far) for every shape.
DEFAULT_TILE_BYTES = 1 << 22
#: Longest row handled whole; longer rows are cut into column tiles of at most this many.
DEFAULT_MAX_TILE_COLS = 1 << 18
#: With fewer than 4 rows per thread, rows of at least twice this are split by columns too.
MIN_COLS_PER_THREAD = 4096
#: Fewest elements worth a thread (a hand-off to the pool costs tens of microseconds).
DEFAULT_MIN_TASK_ELEMS = 1 << 15


@dataclass(slots=True)
class Tiling:
    """How rows and columns are cut into the pieces the threads claim."""

    column_tiles: int  # column tiles per row (1: whole rows)
    column_bounds: list[tuple[int, int]]
    split_columns: bool  # too few rows per thread: the threads claim column tiles
    block_rows: int  # rows per block
    tile_tasks: list[tuple[int, int, int]]  # (first row, end row, column tile), split_columns
    row_chunks: list[tuple[int, int]]  # (first row, end row), otherwise
    tasks: int  # threads used
    pool: ThreadPoolExecutor | None


@dataclass(slots=True)
class Scratch:
    """Per-task buffers of block_rows x tile width (index ``slot`` = the task)."""

    exps: list[np.ndarray]  # exponentials, where the gradient cannot hold them
    converted: list[np.ndarray | None]  # 16-bit logits converted to float32
    float64_tmp: list[list[np.ndarray] | None]  # shifted exponentials, made on first use
    float16_tmp: list[list[np.ndarray] | None]  # uint32 of the float16 rounding, first use
    coefficients: list[np.ndarray | None]  # b = w ((1 - eps) t + eps / C), probability targets
    shifted: list[np.ndarray | None]  # d = x - m, for the dot products
    flat_index: list[np.ndarray]  # flat indices into a block
    row_index: np.ndarray  # 0 .. block_rows - 1
    row_starts: np.ndarray  # row_index * tile width


@dataclass(slots=True)
class Plan:
    """One problem prepared to run; :meth:`run` is the timed part."""

    problem: Problem
    logits: np.ndarray  # (rows, classes), C-contiguous
    logits_flat: np.ndarray
    targets: np.ndarray
    rows: int
    classes: int
    input_dtype: np.dtype
    dtype: np.dtype  # the compute dtype (float32 for 16-bit inputs)
    converts: bool  # input_dtype != dtype
    probability_targets: bool
    smoothing: float  # label smoothing eps
    reduction: str
    ignore_index: int
    weight64: np.ndarray | None  # class weights in float64
    weight: np.ndarray | None  # class weights in the compute dtype
    dtype_max: float
    dtype_tiny: float
    unshifted_limit: float  # exp(x) for x <= this cannot overflow, nor can a sum of C of them
    row_offsets: np.ndarray  # row * classes
    ones: np.ndarray
    target_removed: bool  # index targets, no smoothing: the target-removed tail first
    class_weights: np.ndarray | None  # smoothing with index targets: w (ones if unweighted)
    class_weight_total: float  # W = sum_c w_c
    tile_class_weight: np.ndarray | None  # W of each column tile
    tiling: Tiling
    scratch: Scratch

    @property
    def col_parallel(self) -> bool:
        return self.tiling.split_columns

    def run(self, backward: bool):
        return run_plan(self, backward)


def make_plan(
    problem: Problem, num_threads: int, tile_elems: int, max_tile_cols: int,
    min_task_elems: int = DEFAULT_MIN_TASK_ELEMS,
) -> Plan:
    x, t = problem.rows()
    x = np.ascontiguousarray(x)
    t = np.ascontiguousarray(t)
    M, C = x.shape
    f = compute_dtype(problem.format)
    converts = problem.dtype != f
    prob = problem.probability_target
    eps = float(problem.label_smoothing)
    w = problem.weight
    w64 = None if w is None else w.astype(F64)
    info = np.finfo(f)
    fmax = float(info.max)
    tiling, width = _tiling(M, C, num_threads, tile_elems, max_tile_cols, min_task_elems)
    scratch = _scratch(tiling, width, f, converts, prob, eps, w is not None, problem.reduction)
    dots = prob or eps > 0
    class_weights, weight_total, tile_weight = None, 0.0, None
    if not prob and eps > 0:
        class_weights = w64 if w64 is not None else np.ones(C)
        tile_weight = np.array([class_weights[lo:hi].sum() for lo, hi in tiling.column_bounds])
        weight_total = float(class_weights.sum())
    return Plan(
        problem=problem, logits=x, logits_flat=x.reshape(-1), targets=t, rows=M, classes=C,
        input_dtype=problem.dtype, dtype=f, converts=converts, probability_targets=prob,
        smoothing=eps, reduction=problem.reduction, ignore_index=problem.ignore_index,
        weight64=w64, weight=None if w is None else w.astype(f), dtype_max=fmax,
        dtype_tiny=float(info.tiny), unshifted_limit=math.log(fmax) - math.log(C) - 1.0,
        row_offsets=np.arange(M, dtype=np.int64) * C, ones=np.ones(M),
        target_removed=not dots, class_weights=class_weights, class_weight_total=weight_total,
        tile_class_weight=tile_weight, tiling=tiling, scratch=scratch,
    )


def _tiling(M, C, num_threads, tile_elems, max_tile_cols, min_task_elems) -> tuple[Tiling, int]:
    T = max(1, min(int(num_threads), M * C // max(1, min_task_elems)))
    K = max(1, -(-C // max(1, max_tile_cols)))
    # too few rows to balance over the threads (M < 4T): split the classes too
    split_columns = T > 1 and M < 4 * T and C >= 2 * MIN_COLS_PER_THREAD
    if split_columns:
        K = max(K, min(-(-4 * T // M), C // MIN_COLS_PER_THREAD))
    bounds = [C * j // K for j in range(K + 1)]
    column_bounds = list(itertools.pairwise(bounds))
    width = max(hi - lo for lo, hi in column_bounds)
    B = max(1, tile_elems // width)
    # Work is cut into chunks that the threads claim one at a time (dynamic scheduling): a
    # thread slowed down by other work on its core takes fewer, instead of holding everyone
    # up with a fixed half.
    if split_columns:
        B = max(1, min(B, M))
        tile_tasks = [(r0, min(M, r0 + B), j) for r0 in range(0, M, B) for j in range(K)]
        tasks = min(T, len(tile_tasks))
        row_chunks = []
    else:
        B = max(1, min(B, -(-M // T))) if M else 1
        nblocks = -(-M // B) if M else 1
        # guided: each chunk takes 1/(2T) of the blocks left, so the last ones are single
        # blocks and the threads finish together
        sizes, left = [], nblocks
        while left > 0:
            size = left if T == 1 else max(1, -(-left // (2 * T)))
            sizes.append(size)
            left -= size
        edges = [min(M, B * b) for b in itertools.accumulate([0, *sizes])]
        row_chunks = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]
        tasks = max(1, min(T, len(row_chunks)))
        tile_tasks = []
    pool = thread_pool(tasks) if tasks > 1 else None
    tiling = Tiling(
        column_tiles=K, column_bounds=column_bounds, split_columns=split_columns,
        block_rows=B, tile_tasks=tile_tasks, row_chunks=row_chunks, tasks=tasks, pool=pool,
    )
    return tiling, width


def _scratch(tiling, width, f, converts, prob, eps, weighted, reduction) -> Scratch:
    nt, B = tiling.tasks, tiling.block_rows
    # b needs its own buffer unless it is the targets themselves
    needs_b = prob and (eps > 0 or weighted or converts or reduction == "mean")
    dots = prob or eps > 0
    return Scratch(
        exps=[np.empty((B, width), f) for _ in range(nt)],
        converted=[np.empty((B, width), f) if converts else None for _ in range(nt)],
        float64_tmp=[None] * nt,
        float16_tmp=[None] * nt,
        coefficients=[np.empty((B, width), f) if needs_b else None for _ in range(nt)],
        shifted=[np.empty((B, width), f) if dots else None for _ in range(nt)],
        flat_index=[np.empty(B, np.int64) for _ in range(nt)],
        row_index=np.arange(B),
        row_starts=np.arange(B, dtype=np.int64) * width,
    )
