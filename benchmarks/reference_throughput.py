"""Throughput of the exact reference: logits per second for loss + gradient, every value
carrying >= 106 correct bits and correctly rounded to the four formats (the Ziv test included),
for the fast first pass and for the MPFR path, measured in the same run on the same machine.

    python benchmarks/reference_throughput.py [--rows N] [--classes C] [--mpfr-rows N] [--smoke]

Rows: ordinary float32/bfloat16/float16/float64 logits (normal, sigma = 4), and hard rows:
tiny losses (the target 30 above the rest), huge gaps (one logit 1e4 above), wide exponent
ranges (|x| from 1e-30 to 1e3, float64). The MPFR path is timed on --mpfr-rows rows of the
same problem (it is ~1000x slower); the ratio compares logits per second.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from harness import reference
from harness.formats import FORMATS
from harness.problem import Problem


def make(kind: str, rows: int, classes: int, dtype: str, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, classes), dtype=np.float32) * 4
    t = rng.integers(0, classes, rows)
    if kind == "tiny-loss":
        x[np.arange(rows), t] = x.max(axis=1) + 30
    elif kind == "huge-gap":
        x[np.arange(rows), t] = 1e4
    elif kind == "wide-range":
        x = (np.sign(x) * 10.0 ** rng.uniform(-30, 3, x.shape)).astype(np.float64)
    return Problem(x.astype(FORMATS[dtype].dtype), t)


def rate(problem: Problem, *, fast: bool, workers: int) -> tuple[float, float, int]:
    """(logits/s, fraction of fast-eligible rows handed to MPFR, unresolved)."""
    old = reference.FAST
    reference.FAST = fast
    try:
        t0 = time.perf_counter()
        ev = reference.blocks(problem, workers=workers, reuse=True)  # judged block by block
        for _ in ev:
            pass
        ex = ev.loss()
        dt = time.perf_counter() - t0
    finally:
        reference.FAST = old
    tried = ev.fast_rows + ev.fallback
    return problem.logits.size / dt, (ev.fallback / tried if tried else 0.0), ex.unresolved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=32768)
    ap.add_argument("--mpfr-rows", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI runs this)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.classes, args.mpfr_rows = 16, 256, 4
    cases = [("normal", d) for d in ("float32", "bfloat16", "float16", "float64")]
    cases += [("tiny-loss", "float32"), ("huge-gap", "float32"), ("wide-range", "float64")]
    # warm-up: numba compiles (or loads its cache) once
    rate(make("normal", 4, 64, "float32"), fast=True, workers=args.workers)
    print(f"reference, loss + gradient, {args.workers} worker(s), {args.rows} x {args.classes} "
          f"(MPFR path on {args.mpfr_rows} rows):")
    print(f"{'rows':12s} {'dtype':9s} {'N':>5s} {'fast logits/s':>15s} {'MPFR logits/s':>14s} {'ratio':>7s} {'fallback':>9s}")
    for kind, dtype in cases:
        # wide-range rows put gradient entries in float64's subnormal range, which the fast pass
        # leaves to MPFR (see docs/reference.md): they are timed on fewer rows
        n = args.rows if kind != "wide-range" else max(args.mpfr_rows, 1)
        fr, fb, un = rate(make(kind, n, args.classes, dtype), fast=True, workers=args.workers)
        mr, _, _ = rate(make(kind, args.mpfr_rows, args.classes, dtype), fast=False, workers=args.workers)
        print(f"{kind:12s} {dtype:9s} {n:5d} {fr:15,.0f} {mr:14,.0f} {fr / mr:7.1f} {fb:9.2%}"
              + (f"  ({un} unresolved)" if un else ""))


if __name__ == "__main__":
    main()
