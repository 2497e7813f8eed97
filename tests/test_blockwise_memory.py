"""Judging a language-model problem stays within a memory bound proportional to the problem, and
the bound is tight enough to catch a full-size float64 reference gradient.

Each measurement is a fresh process (benchmarks/llm_memory.py): the sweeps' large-problem path
on the llm scenario at a given size, the numpy implementation, and a float64 NumPy stand-in for
the exact reference (same row blocks and arrays; the exact one would take minutes here). The
fixed overhead (interpreter, thread scratch, one reference block, one chunk's temporaries) is
measured on a tiny problem in the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Peak memory is VmHWM of /proc/self/status (ru_maxrss of a child carries its parent's peak).
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
SCRIPT = ROOT / "benchmarks" / "llm_memory.py"
#: What may grow with the problem besides the 3x: the exact-quantile values (up to 32 MB) and
#: allocator slack.
SLACK = 64 << 20


def _env() -> dict:
    # two threads for the implementation, so its scratch does not grow with the machine
    return {**os.environ, "XENT_NUM_THREADS": "2"}


def _measure(*args: str) -> dict:
    r = subprocess.run([sys.executable, str(SCRIPT), "--json", "--reference", "fake", "--block-logits",
                        str(1 << 18), *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["status"] == {"accuracy": "pass", "gradient": "pass"}, m["status"]
    return m


def _growth(m: dict) -> int:
    return m["peak_rss_bytes"] - m["baseline_rss_bytes"]


def test_judging_uses_less_than_three_times_the_logits():
    fixed = _growth(_measure("--rows", "64", "--cols", "4096"))
    big = _measure("--rows", "2048", "--cols", "8192")  # 16.8 million logits, 67 MB in float32
    bound = 3 * big["logits_bytes"] + fixed + SLACK
    assert _growth(big) < bound, (_growth(big) / 2**20, bound / 2**20, fixed / 2**20)
    # the control: the same run holding the reference's blocks (the float64 gradient, 4x the
    # float32 logits, plus its bounds) must break the bound, or the test proves nothing
    held = _measure("--rows", "2048", "--cols", "8192", "--materialize")
    assert _growth(held) > bound, (_growth(held) / 2**20, bound / 2**20)


def test_generating_the_logits_is_frugal():
    """The llm generator draws float32 row blocks into the dtype's array: building the problem
    costs the array and Problem's own copy of it (2x), not a float64 array (2x more)."""
    code = """
import json
from pathlib import Path
from harness import scenarios as S
def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
s0 = S.get("llm-512x128256")
s = S.Scenario(name="x", family="llm", why="x", kind="llm", params=S._freeze({**s0.params, "shape": [2048, 8192]}),
               dtypes=("float32",), seed=1)
base = status("VmRSS")
p = s.problem("float32")
print(json.dumps({"growth": status("VmHWM") - base, "logits": p.logits.nbytes}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["growth"] < 2 * m["logits"] + (40 << 20), (m["growth"] / 2**20, m["logits"] / 2**20)
