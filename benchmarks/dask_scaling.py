"""Scaling of campaigns on Dask (harness.executor): a ``check`` on 1 and 2 local workers against
the local executor, the per-task overhead, and the reference of an LLM-sized problem split in
row blocks over the workers.

    python benchmarks/dask_scaling.py [--smoke] [--check-args "..."] [--rows 2048 --cols 32768]
                                      [--cold] [--json]

1. ``check``: the same campaign (default: the whole default gate, every built-in; ``--smoke``:
   ``--quick --dtype float32 --impl numpy``) run locally, on ``local:1`` and on ``local:2``;
   the wall time of each (the LocalCluster's start included, and reported apart) and the
   speedup of 2 workers over 1. ``--cold`` gives each run an empty reference cache (the
   references are then computed too: locally in a pool, on the cluster as tasks).
2. Per-task overhead: 200 trivial tasks (``abs`` of an int) through ``Executor.map`` on each
   cluster: the round trip a task costs, client to worker and back.
3. The loss reference of one ``--rows`` x ``--cols`` float32 problem (default 2048 x 32768,
   67 M logits; ``--smoke``: 256 x 4096): ``reference.blocks(...).loss()`` in this process
   with 1 and 2 pool workers, and ``DaskExecutor.reference_loss`` on 1 and 2 workers (8 row
   blocks, the problem scattered once); the results must be identical.

Speed targets belong here, not in the tests. On a machine shared with other jobs the times are
noisy: the report prints the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(args: list[str], scheduler: str | None, cache: str | None) -> dict:
    """One ``xent-harness check`` in a fresh process: its wall time and, on Dask, the cluster's
    start (from its log line)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "harness", "check", *args, "--out", str(Path(tmp) / "run")]
        if scheduler:
            cmd += ["--scheduler", scheduler]
        env = os.environ | ({"XENT_CACHE": cache} if cache else {})
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if out.returncode not in (0, 1):
            raise SystemExit(f"check failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
        start = None
        for line in out.stdout.splitlines():
            if line.startswith("dask: LocalCluster") and " started in " in line:
                start = float(line.split(" started in ")[1].split()[0])
        data = json.loads((Path(tmp) / "run" / "results.json").read_text())
        return {"scheduler": scheduler or "local executor", "wall_s": round(wall, 2), "cluster_start_s": start,
                "cells": len(data["cells"]), "verdict": data["summary"]["verdict"]}


def _overhead(ex, n: int = 200) -> float:
    t0 = time.perf_counter()
    got = dict(ex.map(abs, range(-n, 0)))
    assert sorted(got.values()) == list(range(1, n + 1))
    return (time.perf_counter() - t0) / n


def _llm(rows: int, cols: int):
    import numpy as np

    from harness.problem import Problem

    rng = np.random.default_rng(2048)
    x = (rng.standard_normal((rows, cols), dtype=np.float32) * 4).astype(np.float32)
    return Problem(x, rng.integers(0, cols, rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small sizes (CI): a quick float32 numpy check, 256 x 4096")
    p.add_argument("--check-args", default=None, help="arguments of the check (default: the whole default gate)")
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--cols", type=int, default=None)
    p.add_argument("--cold", action="store_true", help="an empty reference cache for each check")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    check_args = shlex.split(a.check_args if a.check_args is not None
                             else ("--quick --dtype float32 --impl numpy" if a.smoke else ""))
    rows = a.rows or (256 if a.smoke else 2048)
    cols = a.cols or (4096 if a.smoke else 32768)
    report: dict = {"cores": os.cpu_count(), "load_before": os.getloadavg(), "check_args": check_args}

    # 1. check
    runs = []
    for scheduler in (None, "local:1", "local:2"):
        with tempfile.TemporaryDirectory() as cache:
            runs.append(_check(check_args, scheduler, cache if a.cold else None))
        print(f"check {' '.join(check_args) or '(default gate)'} on {runs[-1]['scheduler']}: {runs[-1]['wall_s']} s "
              f"(cluster start {runs[-1]['cluster_start_s']} s), {runs[-1]['cells']} cells", file=sys.stderr)
    assert len({r["cells"] for r in runs}) == 1, "the executors made different numbers of cells"
    report["check"] = runs
    one, two = runs[1]["wall_s"], runs[2]["wall_s"]
    report["check_speedup_2_over_1"] = round(one / two, 2)
    excl = [(r["wall_s"] - (r["cluster_start_s"] or 0)) for r in runs[1:]]
    report["check_speedup_2_over_1_without_start"] = round(excl[0] / excl[1], 2)

    # 2 and 3 on in-process clusters
    import numpy as np

    from harness import reference
    from harness.executor.cluster import DaskExecutor

    problem = _llm(rows, cols)
    block = max(cols, (rows // 8) * cols)  # 8 row blocks: 4 per worker on 2 workers
    reference.blocks(_llm(64, 256), grad=False).loss()  # numba's kernels loaded before any timing
    ref = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        want = reference.blocks(problem, grad=False, workers=workers).loss()
        ref[f"local pool, {workers} workers"] = round(time.perf_counter() - t0, 2)
        print(f"reference {rows}x{cols} locally, {workers} pool workers: {ref[f'local pool, {workers} workers']} s",
              file=sys.stderr)
    overhead = {}
    for n in (1, 2):
        with DaskExecutor.local(n, log=lambda m: None, resources={}) as ex:
            ex.reference_loss(_llm(64, 256))  # each worker's imports and numba kernels, untimed
            ex.reference_loss(_llm(64, 256))
            ex.submitted.clear()
            overhead[n] = round(_overhead(ex) * 1e3, 3)
            t0 = time.perf_counter()
            got = ex.reference_loss(problem, block_logits=block)
            key = f"dask, {n} workers"
            ref[key] = round(time.perf_counter() - t0, 2)
            ref[f"{key} tasks"] = ex.submitted["rows"]
            assert np.array_equal(got.loss_hi, want.loss_hi) and np.array_equal(got.loss_lo, want.loss_lo)
        print(f"reference {rows}x{cols} on {n} Dask workers: {ref[key]} s ({ref[f'{key} tasks']} row-block tasks); "
              f"per-task overhead {overhead[n]} ms", file=sys.stderr)
    report["per_task_overhead_ms"] = overhead
    report["reference"] = {"rows": rows, "cols": cols, "logits": rows * cols, "seconds": ref,
                           "speedup_dask_2_over_1": round(ref["dask, 1 workers"] / ref["dask, 2 workers"], 2)}
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1) if a.json else
          f"check speedup 2/1 workers: {report['check_speedup_2_over_1']} "
          f"({report['check_speedup_2_over_1_without_start']} without the cluster start); "
          f"reference speedup 2/1 workers: {report['reference']['speedup_dask_2_over_1']}; "
          f"per-task overhead {overhead} ms; load {report['load_before']} -> {report['load_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
