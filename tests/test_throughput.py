"""The throughput sweep (harness.throughput), unit by unit: the grid as data, the timer, rows,
the same-run copy and resume."""

from __future__ import annotations

import tomllib
from pathlib import Path

from harness import registry, results, throughput

ROOT = Path(__file__).resolve().parent.parent


def test_the_grid_is_the_catalogues_data():
    table = tomllib.loads((ROOT / "harness" / "scenarios.toml").read_text())["throughput"]
    assert throughput.GRID == tuple(map(tuple, table["grid"]))
    assert throughput.QUICK_GRID == tuple(map(tuple, table["quick"]))
    assert throughput.DEFAULT_DTYPES == tuple(table["dtypes"])
    # LLM-like vocabularies, each 4-8.4 M logits (what the table's comment promises)
    assert all(4 << 20 <= n * c <= 8 << 20 for n, c in throughput.GRID)


def test_measure_takes_the_median_of_repeats_within_the_budget():
    calls = []
    t = throughput.measure(lambda: calls.append(1), repeats=5, min_sample_s=0.001, budget_s=0.2)
    assert t.repeats == 5 and t.calls >= 1 and len(calls) == 1 + 5 * t.calls
    assert 0 < t.median_s < 0.01 and t.iqr_s >= 0
    slow = throughput.measure(lambda: __import__("time").sleep(0.05), repeats=7, budget_s=0.1)
    assert slow.repeats == 3 and slow.calls == 1  # slow calls get fewer samples, never under 3


class _Counting(registry.Implementation):
    name = "counting"
    prepared = 0

    def loss(self, problem):
        import numpy as np

        return np.zeros(problem.output_shape, problem.dtype)

    def prepare(self, problem, *, backward=False):
        type(self).prepared += 1
        return super().prepare(problem, backward=backward)


def test_rows_copy_and_resume(tmp_path):
    entry = registry.Entry(name="counting", origin="test", impl=_Counting())
    grid = ((8, 16), (4, 32))
    res = results.Results.open(tmp_path, {"id": "t"})
    throughput.run([entry], ["float32"], res, grid=grid, repeats=3, log=lambda m: None)
    rows = {(r["N"], r["C"], r["pass"]): r for r in res.rows}
    assert set(rows) == {(n, c, p) for n, c in grid for p in throughput.PASSES}
    fwd = rows[8, 16, "forward"]
    assert fwd["status"] == "ok" and fwd["bytes"] == 8 * 16 * 4 and fwd["gbps"] > 0
    assert fwd["fraction_of_copy"] == fwd["gbps"] / fwd["copy_gbps"]
    assert rows[8, 16, "forward+backward"]["status"] == "unsupported"  # no gradient
    assert {(c["N"], c["C"]) for c in res.data["copy"]} == set(grid)
    res.close()
    before = _Counting.prepared
    again = results.Results.open(tmp_path, {"id": "t"}, resume=True)
    throughput.run([entry], ["float32"], again, grid=grid, repeats=3, log=lambda m: None)
    assert _Counting.prepared == before  # nothing re-timed
