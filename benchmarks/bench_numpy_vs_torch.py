"""NumPy (``numpy`` built-in) vs torch CPU ``F.cross_entropy``: forward and forward+backward.

    .venv/bin/python benchmarks/bench_numpy_vs_torch.py [--threads N] [--rounds R]

Both sides use the same number of threads (``NumpyStable(num_threads=N)`` and
``torch.set_num_threads(N)``; default: what NumpyStable uses, XENT_NUM_THREADS or the CPU
count). Float32 logits ~ N(0, 1), int64 targets, reduction 'mean'. Timed:

* numpy forward: the callable of ``NumpyStable.prepare(problem)`` (rows, tiling and scratch
  prepared once, untimed); numpy forward+backward: ``prepare(problem, backward=True)``, one fused
  pass computing the loss and the gradient;
* torch forward: ``F.cross_entropy(x, t)``; torch forward+backward: ``x.grad = None;
  F.cross_entropy(x, t).backward()`` (the forward included).

The four are measured in interleaved rounds (each round times every one of them over a few
calls), so slow drifts of the machine hit them alike; the table gives the median over rounds
of the time per call and the ratio torch_time / numpy_time (>= 1: numpy at least as fast).
Each timed batch (about 60 ms of back-to-back calls, the steady state of a training loop) is
preceded by one untimed call: torch's OpenMP workers keep spinning on the cores for a while
after a call, which would otherwise slow down whatever runs next. The load average is printed
before and after: on a shared machine, a run with other work in it is not to be trusted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from harness.implementations.numpy_stable import NumpyStable
from harness.problem import Problem
from harness.registry import default_threads as default_num_threads

SHAPES = ((4096, 1024), (256, 32768), (32, 262144))


def per_call(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def bench_shape(M: int, C: int, threads: int, rounds: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, C), dtype=np.float32)
    t = rng.integers(0, C, M)
    problem = Problem(x, t)
    impl = NumpyStable(num_threads=threads)
    np_fwd = impl.prepare(problem)
    np_bwd = impl.prepare(problem, backward=True)

    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    xg = xt.clone().requires_grad_(True)

    def torch_fwd():
        return F.cross_entropy(xt, tt)

    def torch_bwd():
        xg.grad = None
        F.cross_entropy(xg, tt).backward()
        return xg.grad

    # sanity: same loss and gradient (float32: a few ulps)
    loss_ref = float(torch_fwd())
    assert abs(float(np_fwd()) - loss_ref) <= 1e-5 * abs(loss_ref), "numpy and torch disagree"
    torch_bwd()
    np.testing.assert_allclose(np_bwd(), xg.grad.numpy(), rtol=1e-4, atol=1e-9)

    fns = {"torch fwd": torch_fwd, "numpy fwd": np_fwd, "torch fwd+bwd": torch_bwd, "numpy fwd+bwd": np_bwd}
    for fn in fns.values():  # warm up: page faults, thread pools, caches
        for _ in range(3):
            fn()
    # calls per batch: about 60 ms of each
    number = {name: max(3, int(0.06 / per_call(fn, 3))) for name, fn in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # untimed: absorbs the previous one's spinning threads
            times[name].append(per_call(fn, number[name]))
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=default_num_threads())
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    load0 = os.getloadavg()
    print(f"threads: numpy {args.threads}, torch {torch.get_num_threads()}; torch {torch.__version__}, "
          f"numpy {np.__version__}; {os.cpu_count()} CPUs; float32, reduction='mean'")
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    header = f"{'shape (N, C)':>16} | {'pass':<8} | {'torch ms':>9} | {'numpy ms':>9} | {'torch/numpy':>11}"
    print(header)
    print("-" * len(header))
    worst = float("inf")
    for M, C in SHAPES:
        times = bench_shape(M, C, args.threads, args.rounds, args.seed)
        for label, key in (("fwd", "fwd"), ("fwd+bwd", "fwd+bwd")):
            tt = statistics.median(times[f"torch {key}"])
            tn = statistics.median(times[f"numpy {key}"])
            ratio = tt / tn
            worst = min(worst, ratio)
            print(f"{f'({M}, {C})':>16} | {label:<8} | {tt * 1e3:9.3f} | {tn * 1e3:9.3f} | {ratio:11.2f}")
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"smallest ratio: {worst:.2f} ({'numpy at least as fast everywhere' if worst >= 1 else 'torch faster somewhere'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
