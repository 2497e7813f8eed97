"""Peak memory and time of judging one language-model problem, blockwise, in a fresh process.

    python benchmarks/llm_memory.py [--rows 8192 --cols 128256] [--dtype float32] [--impl numpy]
                                    [--reference real|fake] [--materialize] [--json]

A child process runs the sweeps' own large-problem path (``harness.sweeps.run`` on the ``llm``
scenario at the given size, the accuracy and gradient cells of one implementation): build the
logits (float32 row blocks), call the implementation's loss and gradient, one pass of the
reference in row blocks judging the gradient block by block, the loss cell. It reports the
wall time of each step and its peak resident memory (VmHWM, else ``ru_maxrss``) relative to the logits'
own size; the bound to meet is 3x (4.2 GB of float32 logits at 8192 x 128256 -> under 12.6 GB).

``--reference fake`` replaces the exact reference by float64 NumPy (same blocks, same arrays,
no MPFR): it measures the judge's memory at sizes the exact reference would take long for.
``--materialize`` keeps every reference block until the pass ends (as a whole-array judge
would hold the full float64 gradient): the control that shows the measurement catches it.
CI runs ``--rows 64 --cols 4096``; the full-size run is ``--rows 8192 --cols 128256``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status(key: str) -> int:
    """A memory figure of /proc/self/status (bytes; Linux), 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss() -> int:
    """Current resident set (bytes)."""
    return _status("VmRSS")


def _peak() -> int:
    """Peak resident set (bytes) of this process: VmHWM, the high-water mark of this address
    space. (ru_maxrss would do, but Linux carries the parent's peak into a child across exec:
    run from a big process, it reports the parent's size.) ru_maxrss where /proc is missing."""
    hwm = _status("VmHWM")
    if hwm:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


class _FakeBlocks:
    """reference.Blocks' interface on float64 NumPy: the gradient of each row block (hi; lo and
    bound 0) and the loss; for memory measurements only (its values are not correctly rounded)."""

    def __init__(self, problem, *, grad=True, workers=None, block_logits=None, **_):
        import numpy as np

        from harness import reference

        self.problem, self.grad = problem, grad
        C = problem.num_classes
        M = problem.num_samples if problem.logits.ndim > 1 else 1
        per = max(1, (block_logits or reference.BLOCK_LOGITS) // max(C, 1))
        self.slices = [slice(a, min(M, a + per)) for a in range(0, M, per)]
        self.losses = np.zeros(M)
        _, t = problem.rows()
        self.kept = t != problem.ignore_index
        self.denom = max(int(self.kept.sum()), 1)

    def __iter__(self):
        import numpy as np

        from harness import reference

        x2d, t = self.problem.rows()
        for rows in self.slices:
            x = np.asarray(x2d[rows], np.float64)
            m = x.max(axis=1, keepdims=True)
            e = np.exp(x - m)
            s = e.sum(axis=1, keepdims=True)
            kept = self.kept[rows]
            tt = np.where(kept, t[rows], 0)
            r = np.arange(x.shape[0])
            self.losses[rows] = np.where(kept, (np.log(s[:, 0]) + m[:, 0]) - x[r, tt], 0.0)
            if self.grad:
                e /= s
                e[r, tt] -= 1.0
                e[~kept] = 0.0
                e /= self.denom
                yield reference.GradBlock(rows, e, np.zeros_like(e), np.zeros_like(e))

    def loss(self):
        import numpy as np

        from harness import reference

        for _ in self:
            pass
        return reference.Exact(np.array(self.losses.sum() / self.denom), np.array(0.0))


class _Materialized:
    """Wraps a Blocks: holds every block until the pass ends (the full-size float64 gradient)."""

    def __init__(self, inner):
        self.inner, self.held = inner, []

    def __iter__(self):
        for b in self.inner:
            self.held.append(b)
            yield b

    def loss(self):
        return self.inner.loss()


def child(args) -> dict:
    from harness import budgets, cache, reference, registry, scenarios, sweeps
    from harness.results import Results

    entries, _ = registry.select([args.impl])
    base = _rss()
    cache.BLOCKWISE_LOGITS = 1  # the blockwise path whatever the size (the smoke size is small)
    if args.reference == "fake" or args.materialize:
        real = reference.blocks

        def blocks(problem, **kw):
            kw.setdefault("block_logits", args.block_logits)
            b = _FakeBlocks(problem, **kw) if args.reference == "fake" else real(problem, **kw)
            return _Materialized(b) if args.materialize else b

        reference.blocks = blocks
    s0 = scenarios.get("llm-8192x128256")
    params = {**s0.params, "shape": [args.rows, args.cols]}
    s = scenarios.Scenario(name=f"llm-{args.rows}x{args.cols}", family=s0.family, why=s0.why, kind=s0.kind,
                           params=scenarios._freeze(params), dtypes=(args.dtype,), seed=s0.seed)
    logs: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = sweeps.Plan(entries, [s], [args.dtype], budgets.load()[0], kinds=("accuracy", "gradient"),
                           workers=args.workers, isolate=False, cache=cache.ReferenceCache(Path(tmp) / "cache"))
        res = Results.open(Path(tmp) / "out", {"id": "llm-memory"}, resume=False)
        t0 = time.perf_counter()
        sweeps.run(plan, res, log=logs.append)
        total = time.perf_counter() - t0
        res.close()
        cells = {c["kind"]: c for c in res.cells}
        for c in res.cells:  # a failing cell says why (the budgets follow the measured space)
            if c["status"] != "pass":
                print(f"  {c['kind']}: {c['message']}", file=sys.stderr)
    text = "\n".join(logs)
    gen = re.search(r"built in ([0-9.]+) s", text)
    ref = re.search(r"\(blockwise, [0-9,]+ logits\) in ([0-9.]+) s; judged \d+ gradients in ([0-9.]+) s", text)
    itemsize = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[args.dtype]
    logits = args.rows * args.cols * itemsize
    peak = _peak()
    return {
        "rows": args.rows, "cols": args.cols, "dtype": args.dtype, "impl": args.impl,
        "reference": args.reference, "materialize": args.materialize,
        "logits_bytes": logits, "baseline_rss_bytes": base, "peak_rss_bytes": peak,
        "peak_over_logits": peak / logits, "growth_over_logits": (peak - base) / logits,
        "generate_s": float(gen.group(1)) if gen else None,
        "impl_loss_s": cells.get("accuracy", {}).get("seconds"),
        "impl_grad_s": cells.get("gradient", {}).get("seconds"),
        "reference_s": float(ref.group(1)) if ref else None,
        "judge_s": float(ref.group(2)) if ref else None,
        "total_s": total,
        "status": {k: c["status"] for k, c in cells.items()},
        "log": logs,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--cols", type=int, default=128256)
    p.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32", "float64"])
    p.add_argument("--impl", default="numpy")
    p.add_argument("--reference", default="real", choices=["real", "fake"])
    p.add_argument("--block-logits", type=int, default=None,
                   help="logits per reference block (default: reference.BLOCK_LOGITS)")
    p.add_argument("--workers", type=int, default=None, help="reference processes (default: all cores)")
    p.add_argument("--materialize", action="store_true", help="hold every reference block (the control)")
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *(argv if argv is not None else sys.argv[1:])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        return r.returncode
    sys.stderr.write(r.stderr)  # the child's word on failing cells
    m = json.loads(r.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(m))
        return 0
    gb = 1e9
    print(f"llm {m['rows']} x {m['cols']} {m['dtype']}, {m['impl']}, reference {m['reference']}"
          + (" (materialized)" if m["materialize"] else ""))
    print(f"  logits              {m['logits_bytes'] / gb:8.3f} GB")
    print(f"  peak RSS            {m['peak_rss_bytes'] / gb:8.3f} GB = {m['peak_over_logits']:.2f} x logits "
          f"(growth over the {m['baseline_rss_bytes'] / gb:.3f} GB interpreter: {m['growth_over_logits']:.2f} x)")

    def sec(v):
        return "       -" if v is None else f"{v:8.1f} s"

    print(f"  generate            {sec(m['generate_s'])}")
    print(f"  implementation      {sec(m['impl_loss_s'])} loss, {sec(m['impl_grad_s']).strip()} gradient")
    print(f"  reference (blocks)  {sec(m['reference_s'])}")
    print(f"  judging             {sec(m['judge_s'])}")
    print(f"  total               {sec(m['total_s'])}   cells: {m['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
