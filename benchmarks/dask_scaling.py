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
   blocks, the problem scattered once); the results must be identical. Then the gradient pass
   judging one implementation gradient: ``GradJudge`` fed ``reference.blocks`` here, and
   ``DaskExecutor.judge_large`` on 1 and 2 workers; the cells must be identical.
4. The worst-case hunt (``hunt --impl numpy --dtype float32 --quantity loss --evaluations
   --hunt-rows``, default 1024, ``--smoke`` 256): rows per second of the hunt phase locally and
   on 1 and 2 workers (one branch per worker) and the tasks it sent; each timed warm, after the
   same hunt once untimed (the first run compiles numba's kernels of its paths). The branches
   search other rows than the local hunt (their seeds differ), so the overhead of a hunt task is
   measured apart, on the same rows: 8 batches of 128 uniform candidates scored one after the
   other by the hunt's Evaluator here and as tasks on one worker, (t(task) - t(here)) / batch.

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


def _hunt(evaluations: int, scheduler=None) -> dict:
    """One hunt phase (numpy, float32 loss, no baseline): its rows per second."""
    from harness import hunt

    with tempfile.TemporaryDirectory() as tmp:
        data = hunt.run(hunt.Request(impl="numpy", dtypes=["float32"], quantities=["loss"], evaluations=evaluations,
                                     out=str(Path(tmp) / "h"), baseline=False, catalogue=False, scheduler=scheduler),
                        log=lambda m: None)
    p = data["pairs"][0]
    return {"seconds": p["seconds"], "rows": p["evaluations"], "rows_per_s": round(p["evaluations"] / p["seconds"], 1),
            "rounds": len(p["convergence"]), "worst_ulp": p["worst"]}


def _batches(n: int = 8, size: int = 128) -> list:
    import numpy as np

    from harness.formats import FORMATS
    from harness.hunt.space import Space

    rng = np.random.default_rng(8)
    space = Space(FORMATS["float32"], smoothing=False)
    return [[space.uniform(rng) for _ in range(size)] for _ in range(n)]


def _task_overhead(ex, batches: list) -> dict:
    """Seconds to score ``batches`` here and as hunt tasks on ``ex``, one at a time, both warm."""
    from harness import budgets as budgets_mod
    from harness import registry
    from harness.executor import tasks
    from harness.formats import FORMATS
    from harness.hunt import distributed, search
    from harness.runner import Runner

    entry = registry.select(["numpy"])[0][0]
    spec, budget = tasks.entry_spec(entry, False), budgets_mod.load(None)[0]["float32"]
    ev = search.Evaluator(Runner(entry), FORMATS["float32"], "loss", budget)
    times, scores = {}, {}
    for where in ("here", "task"):
        for _ in range(2):  # the second time is timed: the first warms the kernels up
            t0 = time.perf_counter()
            scores[where] = [ev(b) if where == "here" else
                             ex.submit("hunt", len(b), distributed.evaluate, spec, "float32", "loss", budget, 60.0,
                                       b).result()[0] for b in batches]
            times[where] = time.perf_counter() - t0
    assert json.dumps(scores["here"]) == json.dumps(scores["task"]), "a worker scored the rows differently"
    return {"batches": len(batches), "rows": sum(map(len, batches)), "here_s": round(times["here"], 2),
            "tasks_s": round(times["task"], 2),
            "overhead_per_task_ms": round((times["task"] - times["here"]) / len(batches) * 1e3, 1)}


def _grad_pass(problem, y, ex=None) -> tuple[float, tuple]:
    """The gradient pass judging one gradient ``y``: here (reference blocks on one core) or on
    ``ex`` (DaskExecutor.judge_large, 8 row-block tasks); its seconds and the cell."""
    from harness import blockwise, reference
    from harness import budgets as budgets_mod

    budget = budgets_mod.load(None)[0]["float32"]
    j = blockwise.GradJudge(problem, y, budget)
    t0 = time.perf_counter()
    if ex is None:
        for b in reference.blocks(problem, grad=True, workers=1):
            j.add(b)
    else:
        ex.judge_large(problem, [j], block_logits=max(problem.num_classes, (problem.num_samples // 8) * problem.num_classes))
    return round(time.perf_counter() - t0, 2), j.result()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small sizes (CI): a quick float32 numpy check, 256 x 4096")
    p.add_argument("--check-args", default=None, help="arguments of the check (default: the whole default gate)")
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--cols", type=int, default=None)
    p.add_argument("--cold", action="store_true", help="an empty reference cache for each check")
    p.add_argument("--hunt-rows", type=int, default=None, help="evaluations of the hunt (default 1024; --smoke 256)")
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

    from harness import reference, results
    from harness.executor.cluster import DaskExecutor

    problem = _llm(rows, cols)
    block = max(cols, (rows // 8) * cols)  # 8 row blocks: 4 per worker on 2 workers
    reference.blocks(_llm(64, 256), grad=False).loss()  # numba's kernels loaded before any timing
    hunt_rows = a.hunt_rows or (256 if a.smoke else 1024)
    _hunt(hunt_rows)  # the same hunt once untimed: imports, and numba's kernels of every path it takes
    hunts = {"local": _hunt(hunt_rows)}
    small = _llm(rows // 4 or 1, cols)  # the gradient pass: a quarter of the rows (its reference is slower)
    grads = {}
    y = np.asarray(reference.evaluate(small).grad_hi).astype(np.float32)  # a gradient correctly rounded
    grads["local, 1 thread of reference"], want_cell = _grad_pass(small, y)
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
            grads[f"dask, {n} workers"], cell = _grad_pass(small, y, ex)
            assert results.dumps(cell) == results.dumps(want_cell), "the distributed gradient cell differs"
            _hunt(hunt_rows, ex)  # the same, untimed, on every worker
            sent = ex.submitted["hunt"]
            h = hunts[f"local:{n}"] = _hunt(hunt_rows, ex)
            h["rows_sent"], h["tasks"] = ex.submitted["hunt"] - sent, h["rounds"] * n
            assert h["rows_sent"] == h["rows"]
            if n == 1:
                hunt_task = _task_overhead(ex, _batches())
        print(f"reference {rows}x{cols} on {n} Dask workers: {ref[key]} s ({ref[f'{key} tasks']} row-block tasks); "
              f"per-task overhead {overhead[n]} ms", file=sys.stderr)
    report["per_task_overhead_ms"] = overhead
    report["reference"] = {"rows": rows, "cols": cols, "logits": rows * cols, "seconds": ref,
                           "speedup_dask_2_over_1": round(ref["dask, 1 workers"] / ref["dask, 2 workers"], 2)}
    report["gradient_pass"] = {"rows": small.num_samples, "cols": cols, "seconds": grads,
                               "speedup_dask_2_over_1": round(grads["dask, 1 workers"] / grads["dask, 2 workers"], 2)}
    h1 = hunts["local:1"]
    report["hunt"] = hunts | {"speedup_2_over_1": round(hunts["local:2"]["rows_per_s"] / h1["rows_per_s"], 2),
                              "task_overhead": hunt_task}
    for k in ("local", "local:1", "local:2"):
        print(f"hunt {hunts[k]['rows']} rows on {k}: {hunts[k]['seconds']} s, {hunts[k]['rows_per_s']} rows/s"
              + (f", {hunts[k]['tasks']} tasks" if k != "local" else ""), file=sys.stderr)
    print(f"hunt tasks on 1 worker: {hunt_task}", file=sys.stderr)
    print(f"gradient pass {small.num_samples}x{cols}: {grads}", file=sys.stderr)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1) if a.json else
          f"check speedup 2/1 workers: {report['check_speedup_2_over_1']} "
          f"({report['check_speedup_2_over_1_without_start']} without the cluster start); "
          f"reference speedup 2/1 workers: {report['reference']['speedup_dask_2_over_1']}; "
          f"per-task overhead {overhead} ms; hunt rows/s local {hunts['local']['rows_per_s']}, local:1 "
          f"{h1['rows_per_s']}, local:2 {hunts['local:2']['rows_per_s']} (x{report['hunt']['speedup_2_over_1']}, "
          f"{hunt_task['overhead_per_task_ms']} ms a task); gradient pass speedup 2/1 "
          f"{report['gradient_pass']['speedup_dask_2_over_1']}; load {report['load_before']} -> {report['load_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
