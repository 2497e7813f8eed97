"""What the hunt's strategies buy over uniform sampling, and how fast a hunt evaluates:
for each implementation and dtype x quantity, the worst error the hunt finds in N rows next to
the worst of N uniform rows (the same baseline ``xent-harness hunt`` reports), and rows per
minute.

    python benchmarks/hunt_vs_random.py [--impl NAME ...] [--dtype D ...] [--evaluations N]
                                        [--seeds K] [--smoke]

Targets (printed as PASS/MISS, exit 1 on a miss, so CI catches a regression):
* the hunt finds the narrow bug of tests/plugins/narrow_bug.py (an error only where the top-two
  gap of a float32 row lies in [87, 87.5]) in every seed, the uniform baseline in none;
* a search evaluates >= 1,000 rows per minute of wall time (the reference is batched per
  (C, smoothing) group: one implementation call and one reference call per group).

``--smoke``: the narrow bug only, 128 rows, one seed (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from harness import hunt

ROOT = Path(__file__).resolve().parent.parent
NARROW = f"{ROOT / 'tests' / 'plugins' / 'narrow_bug.py'}:NarrowBug"
RATE_TARGET = 1000.0  # rows per minute


def one(impl: str, dtypes: list[str], evaluations: int, seed: int, objective: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = hunt.run(hunt.Request(impl=impl, dtypes=dtypes, evaluations=evaluations, seed=seed, top=1,
                                     out=str(Path(tmp) / "h"), catalogue=False, objective=objective),
                        log=lambda m: None)
        wall = time.perf_counter() - t0
    rows = []
    for p in data["pairs"]:
        rows.append({"impl": impl, "pair": f"{p['dtype']}/{p['quantity']}", "seed": seed, "hunt": float(p["worst"]),
                     "uniform": float(p["baseline"]["worst"]), "rate": 60.0 * p["evaluations"] / max(p["seconds"], 1e-9),
                     "wall": wall})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", action="append")
    ap.add_argument("--dtype", action="append")
    ap.add_argument("--evaluations", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.evaluations, args.seeds = 128, 1
    ok = True
    print(f"{'implementation':14s} {'pair':16s} {'seed':>4s} {'hunt worst':>12s} {'uniform worst':>14s} {'rows/min':>9s}")
    narrow = [r for s in range(args.seeds) for r in one(NARROW, ["float32"], args.evaluations, s, "budget")]
    for r in narrow:
        print(f"{'narrow-bug':14s} {r['pair']:16s} {r['seed']:4d} {r['hunt']:12.4g} {r['uniform']:14.4g} {r['rate']:9.0f}")
    found = all(r["hunt"] > 1 for r in narrow)
    missed_by_uniform = all(r["uniform"] <= 1 for r in narrow)
    print(f"{'PASS' if found else 'MISS'}: the hunt finds the narrow bug (budget ratio > 1) in every seed")
    print(f"{'PASS' if missed_by_uniform else 'MISS'}: uniform sampling of the same rows does not")
    ok &= found and missed_by_uniform
    if not args.smoke:
        for impl in args.impl or ["numpy-naive", "torch", "jax"]:
            for s in range(args.seeds):
                for r in one(impl, args.dtype or ["float32", "bfloat16"], args.evaluations, s, "ulp"):
                    print(f"{impl:14s} {r['pair']:16s} {r['seed']:4d} {r['hunt']:12.4g} {r['uniform']:14.4g} {r['rate']:9.0f}")
                    narrow.append(r)
    rate = min(r["rate"] for r in narrow)
    fast = math.isfinite(rate) and rate >= RATE_TARGET
    print(f"{'PASS' if fast else 'MISS'}: slowest search {rate:.0f} rows/min (target >= {RATE_TARGET:.0f})")
    ok &= fast
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
