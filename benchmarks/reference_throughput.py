"""Throughput of the exact reference: logits per second for loss + gradient, every value
carrying >= 106 correct bits and correctly rounded to the four formats (the Ziv test included).

    python benchmarks/reference_throughput.py [--workers N] [--rows N] [--classes C] [--dtype D]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from harness import reference
from harness.formats import FORMATS
from harness.problem import Problem


def measure(rows: int, classes: int, dtype: str, workers: int, seed: int = 0) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, classes)) * 4).astype(FORMATS[dtype].dtype)
    p = Problem(x, rng.integers(0, classes, rows))
    t0 = time.perf_counter()
    ex = reference.evaluate(p, workers=workers)
    dt = time.perf_counter() - t0
    return x.size / dt, ex.bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=1024)
    ap.add_argument("--dtype", default="float32", choices=list(FORMATS))
    args = ap.parse_args()
    print(f"reference, loss + gradient, {args.rows} x {args.classes} {args.dtype}:")
    for w in sorted({1, args.workers}):
        rate, bits = measure(args.rows, args.classes, args.dtype, w)
        print(f"  {w} worker(s): {rate:12,.0f} logits/s  (max working precision {bits} bits)")


if __name__ == "__main__":
    main()
