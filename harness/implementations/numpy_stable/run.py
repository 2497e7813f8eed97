"""The timed part: one run of a plan, its work handed to the threads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.implementations.numpy_stable import column_tiles, rows, whole_rows
from harness.implementations.numpy_stable.state import new_state
from harness.implementations.numpy_stable.threads import run_parallel

if TYPE_CHECKING:
    from harness.implementations.numpy_stable.plan import Plan


def run_plan(plan: Plan, backward: bool):
    M, tiling = plan.rows, plan.tiling
    with np.errstate(all="ignore"):
        st = new_state(plan, backward)
        if M and tiling.split_columns:
            rows.target_logits(plan, st, 0, M)

            def tiles(fn):
                todo = iter(tiling.tile_tasks)  # shared: each next() hands one tile to one thread

                def work(slot):
                    for r0, r1, j in todo:
                        fn(plan, st, r0, r1, j, slot)

                run_parallel([(lambda i=i: work(i)) for i in range(tiling.tasks)], tiling.pool)

            def phases(first, second, combine):
                tiles(first)
                ok = combine(plan, st, 0, M)
                if ok is not False and backward:
                    tiles(second)
                return ok

            if not (
                plan.target_removed
                and phases(
                    column_tiles.target_removed_sums,
                    column_tiles.target_removed_scale,
                    column_tiles.target_removed_combine,
                )
            ):
                st.row.max_shifted[:] = True
                phases(
                    column_tiles.max_shift_sums,
                    column_tiles.max_shift_scale,
                    column_tiles.max_shift_combine,
                )
            rows.finish_rows(plan, st, 0, M)
        elif M:
            kernel = whole_rows.whole_rows if tiling.column_tiles == 1 else column_tiles.tiled_rows
            todo = iter(tiling.row_chunks)  # shared: each next() hands one chunk to one thread

            def work(slot):
                for lo, hi in todo:
                    rows.target_logits(plan, st, lo, hi)
                    kernel(plan, st, lo, hi, slot)
                    rows.finish_rows(plan, st, lo, hi)

            run_parallel([(lambda i=i: work(i)) for i in range(tiling.tasks)], tiling.pool)
        loss = rows.reduce(plan, st)
        grad = None
        if backward:
            grad = st.grad
            if not plan.probability_targets and st.coef.torch_style_grad:
                grad = rows.torch_style_grad(plan, st)
            grad = plan.problem.unrows(grad)
    return loss, grad
