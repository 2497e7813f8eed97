"""Every script under benchmarks/ runs once at a smoke size, so none can rot unseen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: script -> arguments giving a run of a few seconds. A new script must be added here.
SMOKE = {
    "benchmarks/reference_throughput.py": ["--smoke"],
    "benchmarks/bench_numpy_vs_torch.py": ["--rounds", "1"],
    "benchmarks/llm_memory.py": ["--rows", "64", "--cols", "4096"],
    "benchmarks/fastpath_kernels.py": ["--rows", "64", "--cols", "4096", "--repeat", "1"],
    "benchmarks/hunt_vs_random.py": ["--smoke"],  # ~1 min
    "benchmarks/dask_scaling.py": ["--smoke"],  # ~35 s; needs the dask extra (in `all`)
}


def test_every_script_is_smoke_tested():
    scripts = {str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*.py")}
    assert scripts == set(SMOKE), "add the new script (and its smoke arguments) to SMOKE"


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_script_runs(script):
    r = subprocess.run([sys.executable, str(ROOT / script), *SMOKE[script]], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.strip(), "the script printed nothing"
