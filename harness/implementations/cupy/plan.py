"""Which kernel runs and its launch shape, chosen from the problem's shape (pure Python)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.problem import Problem

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
WEIGHT_SUM_THREADS = 256  # xent_weight_sum's block


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@dataclass(frozen=True, slots=True)
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


def weight_sum_grid(rows: int, sms: int) -> int:
    """Blocks of xent_weight_sum (WEIGHT_SUM_THREADS each, grid-stride over the targets)."""
    return max(1, min(math.ceil(rows / WEIGHT_SUM_THREADS), sms * 4))


def kernel_mode(problem: Problem) -> int:
    """0: index targets, 1: index targets with label smoothing, 2: probability targets."""
    if problem.probability_target:
        return 2
    return 1 if problem.label_smoothing > 0 else 0
