"""Campaigns on Dask (harness.executor): the same cells as a local run, the reference computed
once, isolated faulty plugins, a worker killed mid-run, a client killed and resumed.

One LocalCluster of 2 worker processes serves the module (starting one costs a few seconds).
The tests without Dask (the one-line error, ``import harness``) run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import campaign, executor, results
from harness.cache import ReferenceCache

ROOT = Path(__file__).resolve().parent.parent
FAULTY = str(ROOT / "tests" / "plugins" / "faulty.py")
#: A small subset: every problem family of the quick gate in one dtype (26 problems).
SUBSET = {"quick": True, "dtypes": ["float32"]}
FEW = ["scale-1e-06", "weight-zeros-mean", "smoothing-0.1-none"]


def _request(out, **kw):
    base = {"kinds": campaign.CHECK, "impls": ["numpy"], "out": out, "argv": [], "reports": out.parent,
            "force": True}
    return campaign.Request(**(base | kw))


def _quiet(_msg):
    pass


def _cells(data) -> dict:
    """Per cell key: what must not depend on where the cell was computed (timings and the
    elapsed time in a crash's message aside); metrics as JSON, where NaN equals NaN."""
    return {results.cell_key(c): (c["status"], re.sub(r"after [0-9.]+ s", "after T s", c["message"] or ""),
                                  results.dumps(c["metrics"]), c["budget"]) for c in data["cells"]}


# -- without Dask --------------------------------------------------------------------------------


def test_parse_scheduler():
    assert executor.parse("local") == ("local", 2)
    assert executor.parse("local:3") == ("local", 3)
    assert executor.parse("local[4]") == ("local", 4)
    assert executor.parse("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "10.0.0.5:8786", "dask", "tcp://"):
        with pytest.raises(executor.ExecutorError, match="--scheduler"):
            executor.parse(bad)


_NO_DASK = "import sys; sys.modules['dask'] = sys.modules['distributed'] = None\n"


def test_without_dask_import_and_local_executor_work():
    code = _NO_DASK + (
        "import harness, harness.campaign, harness.sweeps, harness.executor as ex\n"
        "e = ex.open_executor(None)\n"
        "print(list(e.map(abs, [-1, -2])), e.describe()['kind'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(0, 1), (1, 2)] local"


def test_scheduler_without_dask_is_a_one_line_error(tmp_path):
    code = _NO_DASK + ("from harness import cli\n"
                       f"sys.exit(cli.main(['check', '--quick', '--impl', 'numpy', '--out', {str(tmp_path / 'r')!r}, "
                       "'--scheduler', 'local:2']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'xent-harness[dask]'" in lines[0], out.stderr
    assert not (tmp_path / "r").exists()  # refused before a run directory was made


def test_bad_scheduler_is_a_one_line_error(tmp_path, capsys):
    from harness import cli

    assert cli.main(["check", "--impl", "numpy", "--out", str(tmp_path / "r"), "--scheduler", "dask:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scheduler" in err[0] and "tcp://HOST:8786" in err[0]


def _daemon_starts_a_child(queue):
    import multiprocessing as mp

    from harness.executor import tasks

    tasks._allow_children()
    child = mp.get_context("spawn").Process(target=abs, args=(-1,))
    child.start()
    child.join(30)
    queue.put(child.exitcode)


def test_a_daemonic_worker_may_start_the_isolated_child():
    """A `dask worker` started without DASK_DISTRIBUTED__WORKER__DAEMON=False is a daemonic
    process, which multiprocessing forbids to have children; the task lifts the flag."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_daemon_starts_a_child, args=(queue,), daemon=True)
    proc.start()
    assert queue.get(timeout=60) == 0
    proc.join(30)


# -- on a LocalCluster ---------------------------------------------------------------------------

dask_only = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                               reason="Dask distributed is not installed (pip install 'xent-harness[dask]')")


@pytest.fixture(scope="module")
def cluster():
    from harness.executor.cluster import DaskExecutor

    ex = DaskExecutor.local(2, log=_quiet)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The subset's cells computed locally (the warm default cache), for comparison."""
    out = tmp_path_factory.mktemp("local") / "run"
    impls = ["numpy", f"{FAULTY}:Correct"]
    return campaign.run(_request(out, impls=impls, **SUBSET), log=_quiet).data


def _picked() -> list:
    """The subset's scenarios as a check picks them (no large or full-space ones)."""
    from harness import scenarios

    return [s for s in scenarios.select(None, quick=True, dtypes=["float32"]) if not {"large", "full"} & set(s.tags)]


def _workers(cluster) -> set:
    cluster.client.wait_for_workers(2, timeout=60)
    return set(cluster.workers())


@dask_only
def test_same_cells_as_local_and_reference_computed_once(cluster, local_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XENT_CACHE", str(tmp_path / "cache"))  # empty: every reference on the workers
    impls = ["numpy", f"{FAULTY}:Correct"]
    before = dict(cluster.submitted)
    data = campaign.run(_request(tmp_path / "dask", impls=impls, scheduler=cluster, **SUBSET), log=_quiet).data
    problems = len(_picked())
    assert _cells(data) == _cells(local_run)
    assert sorted(map(tuple, data["not_applicable"])) == sorted(map(tuple, local_run["not_applicable"]))
    assert data["run"]["executor"]["kind"] == "dask" and data["run"]["executor"]["workers"] == 2
    sent = cluster.submitted["reference"] - before.get("reference", 0)
    assert sent == problems  # each problem once, although two implementations need it
    assert cluster.submitted["cells"] - before.get("cells", 0) == 2 * problems
    cache = ReferenceCache()  # XENT_CACHE: the client wrote what the workers returned
    assert all(cache.load(s.problem("float32")) is not None for s in _picked())
    # a second campaign on the same cache sends no reference at all
    mark = cluster.submitted["reference"]
    again = campaign.run(_request(tmp_path / "again", scheduler=cluster, **SUBSET), log=_quiet).data
    assert cluster.submitted["reference"] == mark
    assert {k: v for k, v in _cells(again).items()} == {k: v for k, v in _cells(local_run).items() if k[1] == "numpy"}


@dask_only
def test_faulty_plugins_are_error_cells_and_the_workers_survive(cluster, tmp_path):
    alive = _workers(cluster)
    impls = [f"{FAULTY}:Raises", f"{FAULTY}:Segfaults", f"{FAULTY}:Hangs"]
    data = campaign.run(_request(tmp_path / "faulty", impls=impls, scenarios=FEW, dtypes=["float32"],
                                 scheduler=cluster, timeout=2), log=_quiet).data
    by = {(c["kind"], c["impl"], c["scenario"]): c for c in data["cells"]}
    for s in FEW:
        assert "always raises" in by["accuracy", "Raises", s]["message"]
        assert "SIGSEGV" in by["accuracy", "Segfaults", s]["message"]
        assert "timed out after 2 s" in by["accuracy", "Hangs", s]["message"]
        for impl in ("Raises", "Segfaults", "Hangs"):
            assert by["accuracy", impl, s]["status"] == "error"
            assert by["gradient", impl, s]["status"] == "pass"  # its grad is right, and still judged
    assert set(cluster.workers()) == alive  # the same two worker processes: none died


@dask_only
@pytest.mark.slow
def test_a_crash_without_isolation_is_an_error_cell(cluster, tmp_path):
    """A non-isolated plugin that kills its worker: Dask retries the task on other workers and
    gives up after ``allowed-failures``; the cells say so and the campaign finishes."""
    data = campaign.run(_request(tmp_path / "crash", impls=[f"{FAULTY}:Segfaults"], scenarios=["scale-1e-06"],
                                 dtypes=["float32"], scheduler=cluster, isolate=False), log=_quiet).data
    cell = next(c for c in data["cells"] if c["kind"] == "accuracy")
    assert cell["status"] == "error" and "killed the Dask workers" in cell["message"]
    assert len(_workers(cluster)) == 2  # the nannies restarted them


class _KillOnFirst:
    """A progress bar that kills (SIGKILL) a worker process busy with tasks at the first cell
    that finds one (cells made on the client, such as those not applicable, can come first)."""

    def __init__(self, cluster):
        self.cluster, self.killed = cluster, None

    def __call__(self, total):
        return self

    def update(self, n):
        if self.killed is None:
            client = self.cluster.client
            busy = [w for w, tasks in client.processing().items() if tasks]
            if not busy:
                return
            pids = client.run(os.getpid, workers=busy[:1])
            self.killed = (busy[0], len(client.processing()[busy[0]]))
            os.kill(pids[busy[0]], signal.SIGKILL)

    def close(self):
        pass


@dask_only
@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(cluster, local_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XENT_CACHE", str(tmp_path / "cache"))
    # one cell a task: when the first cell comes back, other tasks are still queued or running
    monkeypatch.setattr(cluster, "cells_per_task", 1)
    _workers(cluster)
    killer = _KillOnFirst(cluster)
    data = campaign.run(_request(tmp_path / "killed", impls=["numpy", f"{FAULTY}:Correct"], scheduler=cluster,
                                 **SUBSET), log=_quiet, progress=killer).data
    assert killer.killed is not None, "no worker was ever busy at a cell: the test could not kill one mid-run"
    assert killer.killed[1] >= 1  # it had tasks when it died
    assert _cells(data) == _cells(local_run)  # its tasks were retried elsewhere
    assert killer.killed[0] not in cluster.workers()  # it really died (a new process took its place)


def _journal_keys(out: Path) -> set:
    keys = set()
    for line in (out / results.JOURNAL).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut by the kill
        if entry.get("type") == "cell":
            keys.add(results.cell_key(entry["cell"]))
        elif entry.get("type") == "not_applicable":
            keys.add(tuple(entry["key"]))
    return keys


@dask_only
@pytest.mark.slow
def test_a_client_killed_midway_resumes_without_recomputing(cluster, local_run, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    impls = ["numpy", f"{FAULTY}:Correct"]
    argv = ["check", "--quick", "--dtype", "float32", "--impl", impls[0], "--impl", impls[1], "--out", str(out),
            "--scheduler", "local:2"]
    env = os.environ | {"XENT_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", *argv], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / results.JOURNAL).exists() and len(_journal_keys(out)) >= 12:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its LocalCluster's processes
        proc.wait(30)
    done = _journal_keys(out)
    monkeypatch.setenv("XENT_CACHE", str(cache))
    picked = _picked()
    cached = {s.name for s in picked if ReferenceCache().load(s.problem("float32")) is not None}
    before = dict(cluster.submitted)
    data = campaign.run(_request(out, impls=impls, scheduler=cluster, resume=True, force=False, **SUBSET),
                        log=_quiet).data
    assert _cells(data) == _cells(local_run)
    final = {results.cell_key(c) for c in data["cells"]} | {tuple(k) for k in data["not_applicable"]}
    redo = {(k[1], k[2], k[3]) for k in final - done}  # (impl, dtype, scenario) with a cell missing
    assert 0 < len(redo) < 2 * len(picked)
    assert cluster.submitted["cells"] - before.get("cells", 0) == len(redo)
    pairs = {(s, d) for _, d, s in redo}
    assert cluster.submitted["reference"] - before.get("reference", 0) == len({s for s, _ in pairs} - cached)


@dask_only
@pytest.mark.parametrize("options", [{"reduction": "mean", "weight": True}, {"reduction": "none", "label_smoothing": 0.1}])
def test_a_large_loss_in_row_blocks_equals_the_local_one(cluster, options):
    """DaskExecutor.reference_loss: rows split over the workers, reduced on the client; the
    same double-doubles (and precision) as the reference's own blocked pass in this process."""
    import numpy as np

    from harness import reference
    from harness.problem import Problem

    rng = np.random.default_rng(16)
    N, C = 300, 512
    x = (rng.standard_normal((N, C)) * 30).astype(np.float32)
    x[5, 7] = np.float32(80.0)  # a dominant logit: a tiny loss on one row
    t = rng.integers(0, C, N)
    weight = rng.uniform(0.5, 2, C).astype(np.float32) if options.pop("weight", False) else None
    problem = Problem(x, t, weight=weight, **options)
    before = cluster.submitted["rows"]
    got = cluster.reference_loss(problem, block_logits=64 * C)  # 5 blocks of 64 rows
    assert cluster.submitted["rows"] - before == 5
    want = reference.blocks(problem, grad=False, workers=1).loss()
    np.testing.assert_array_equal(got.loss_hi, want.loss_hi)
    np.testing.assert_array_equal(got.loss_lo, want.loss_lo)
    assert (got.bits, got.unresolved) == (want.bits, want.unresolved)


@dask_only
@pytest.mark.slow
def test_a_device_implementation_runs_only_where_a_worker_has_a_gpu(cluster, tmp_path, monkeypatch):
    """Placement: its tasks ask for GPU=1. On workers without the resource its cells are error
    cells at once (no task waits forever); on a worker with it they are the usual cells."""
    from harness.executor.cluster import DaskExecutor

    spec = f"{ROOT / 'tests' / 'plugins' / 'device.py'}:NeedsCuda"
    kw = {"impls": ["numpy", spec], "scenarios": FEW, "dtypes": ["float32"]}
    assert not cluster.has_resource("GPU")
    data = campaign.run(_request(tmp_path / "nogpu", scheduler=cluster, **kw), log=_quiet).data
    mine = [c for c in data["cells"] if c["impl"] == "NeedsCuda"]
    assert mine and all(c["status"] == "error" and "resource GPU" in c["message"] for c in mine)
    assert all(c["status"] == "pass" for c in data["cells"] if c["impl"] == "numpy")

    asked = []
    with DaskExecutor.local(1, log=_quiet, resources={"GPU": 1}) as gpu:
        submit = gpu.submit

        def recording(kind, count, fn, *args, resources=None):
            asked.append((kind, args[0]["name"] if kind == "cells" else None, resources))
            return submit(kind, count, fn, *args, resources=resources)

        monkeypatch.setattr(gpu, "submit", recording)
        data = campaign.run(_request(tmp_path / "gpu", scheduler=gpu, **kw), log=_quiet).data
    assert all(r == {"GPU": 1} for _, name, r in asked if name == "NeedsCuda")
    assert any(name == "NeedsCuda" for _, name, _ in asked)
    assert all(r is None for _, name, r in asked if name != "NeedsCuda")
    assert all(c["status"] in ("pass", "unsupported") for c in data["cells"] if c["impl"] == "NeedsCuda")


@dask_only
@pytest.mark.slow
def test_large_problems_take_their_loss_from_row_blocks_on_the_cluster(cluster, tmp_path, monkeypatch):
    """The large-problem path (blockwise, on the client) with its loss reference in row-block
    tasks: the same accuracy cells as a local run. The threshold is lowered so that a few small
    scenarios take that path (the real ones are 65 M logits and more)."""
    _large_path_local_and_on_the_cluster(cluster, tmp_path, monkeypatch, ("accuracy",), "rows")


def _large_path_local_and_on_the_cluster(cluster, tmp_path, monkeypatch, kinds, counter):
    """Three small scenarios through the large-problem path (the threshold lowered; the real
    ones are 65 M logits and more), locally and with the cluster: the same cells, and the
    cluster got at least one ``counter`` task per large problem."""
    from harness import cache as cache_mod
    from harness import scenarios

    monkeypatch.setattr(cache_mod, "BLOCKWISE_LOGITS", 1 << 12)
    kw = {"kinds": kinds, "scenarios": ["scale-1e-06", "weight-zeros-mean", "smoothing-0.1-none"],
          "dtypes": ["float32"]}
    monkeypatch.setenv("XENT_CACHE", str(tmp_path / "local-cache"))
    here = campaign.run(_request(tmp_path / "local", **kw), log=_quiet).data
    monkeypatch.setenv("XENT_CACHE", str(tmp_path / "dask-cache"))
    before = cluster.submitted[counter]
    there = campaign.run(_request(tmp_path / "dask", scheduler=cluster, **kw), log=_quiet).data
    large = [s for s in scenarios.select(kw["scenarios"], dtypes=["float32"]) if cache_mod.is_large(s.size)]
    assert large, "no scenario took the large path: lower the threshold"
    assert cluster.submitted[counter] - before >= len(large)
    assert _cells(there) == _cells(here) and len(here["cells"]) == 3 * len(kinds)


@dask_only
@pytest.mark.parametrize("exact_quantiles", [None, 1000])
def test_a_large_gradient_judged_in_row_blocks_equals_the_local_one(cluster, exact_quantiles):
    """DaskExecutor.judge_large: the gradient pass in row blocks on the workers, each judging its
    rows of the held gradients; the cells equal the local blockwise judge's, bit for bit, with
    exact quantiles and (a small allowance) with the sketch's."""
    import numpy as np

    from harness import blockwise, reference
    from harness import budgets as budgets_mod
    from harness.problem import Problem

    rng = np.random.default_rng(17)
    N, C = 300, 512
    x = (rng.standard_normal((N, C)) * 30).astype(np.float32)
    x[5, 7] = np.float32(80.0)
    problem = Problem(x, rng.integers(0, C, N), reduction="mean", label_smoothing=0.05)
    exact = reference.evaluate(problem, workers=1)
    good = np.asarray(exact.grad_hi).astype(np.float32)
    bad = good.copy()
    bad[::7] = np.nextafter(bad[::7], np.float32(np.inf))  # a few ULPs off on some rows ...
    bad[11, 3] += np.float32(1e-3)                          # ... and one far outside the budget
    budget = budgets_mod.load(None)[0]["float32"]
    kw = {} if exact_quantiles is None else {"exact_quantiles": exact_quantiles}
    judges = [blockwise.GradJudge(problem, y, budget, **kw) for y in (good, bad)]
    before = cluster.submitted["grads"]
    loss, nonfinite = cluster.judge_large(problem, judges, block_logits=64 * C)  # 5 tasks of 64 rows
    assert cluster.submitted["grads"] - before == 5
    for j, y in zip(judges, (good, bad), strict=True):
        want = blockwise.judge_grad(problem, y, reference.blocks(problem, grad=True, workers=1), budget, **kw)
        assert results.dumps(j.result()) == results.dumps(want)
        assert ("quantiles_approx" in want[2]) == (exact_quantiles is not None)
    assert judges[0].result()[0] == "pass" and judges[1].result()[0] == "fail"
    local = reference.blocks(problem, grad=False, workers=1).loss()
    np.testing.assert_array_equal(loss.loss_hi, local.loss_hi)
    np.testing.assert_array_equal(loss.loss_lo, local.loss_lo)
    assert nonfinite is False


@dask_only
@pytest.mark.slow
def test_large_gradients_are_judged_on_the_cluster_with_the_same_cells(cluster, tmp_path, monkeypatch):
    """The large-problem path with --scheduler: the gradient pass and its judging in row-block
    tasks; the same accuracy and gradient cells as a local run (threshold lowered as above)."""
    _large_path_local_and_on_the_cluster(cluster, tmp_path, monkeypatch, ("accuracy", "gradient"), "grads")


@dask_only
@pytest.mark.slow
def test_a_failing_reference_task_is_one_line_exit_2_and_loses_nothing(cluster, tmp_path, monkeypatch, capsys):
    import numpy as np

    from harness import cli
    from harness.problem import Problem

    def _plant_reference_failure(on: bool) -> None:
        """On a worker (a local function, which cloudpickle sends by value): make the reference
        raise (``on``) or restore it, where the tasks look it up at call time (Dask caches the
        task functions themselves)."""
        from harness import reference

        if on:
            saved = (reference.evaluate, reference.blocks)

            def fail(*args, **kwargs):
                raise MemoryError("planted: the worker ran out of memory")

            reference._saved_for_test = saved
            reference.evaluate = reference.blocks = fail
        elif hasattr(reference, "_saved_for_test"):
            reference.evaluate, reference.blocks = reference._saved_for_test
            del reference._saved_for_test

    monkeypatch.setenv("XENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(executor, "open_executor", lambda spec, log=print: executor._Borrowed(cluster))
    # one problem's reference is cached: its cells need no worker reference
    assert campaign.run(_request(tmp_path / "first", scenarios=FEW[:1], dtypes=["float32"], scheduler=cluster),
                        log=_quiet).verdict == "pass"
    out = tmp_path / "run"
    argv = ["check", "--impl", "numpy", "--dtype", "float32", "--out", str(out), "--scheduler", "local:2"]
    argv += [a for s in FEW for a in ("--scenario", s)]
    cluster.client.run(_plant_reference_failure, True)
    try:
        capsys.readouterr()
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert "failed on a Dask worker: MemoryError: planted" in err[0]
        assert all(f"{s}/float32" in err[0] for s in FEW[1:]) and "--resume" in err[0]
        # the large path: the loss in row blocks names its problem too
        x = np.zeros((8, 4), np.float32)
        with pytest.raises(executor.TaskError, match="of big/float32 failed on a Dask worker: MemoryError"):
            cluster.reference_loss(Problem(x, np.zeros(8, np.int64)), name="big/float32", block_logits=8)
    finally:
        cluster.client.run(_plant_reference_failure, False)
    done = _journal_keys(out)
    assert {k[3] for k in done} == {FEW[0]}  # the cached problem's cells were recorded, none lost
    data = campaign.run(_request(out, scenarios=FEW, dtypes=["float32"], scheduler=cluster, resume=True,
                                 force=False), log=_quiet).data
    assert {c["scenario"] for c in data["cells"]} == set(FEW) and data["summary"]
    assert all(c["status"] == "pass" for c in data["cells"])


_PLANTED_CLI = '''
import sys
from harness import cli, executor
from harness.executor.cluster import DaskExecutor

def plant():  # defined in __main__: cloudpickle sends it by value
    from harness import reference

    def fail(*args, **kwargs):
        raise MemoryError("planted: the worker ran out of memory")

    reference.evaluate = fail

ex = DaskExecutor.local(1, log=lambda m: None)
ex.client.run(plant)
executor.open_executor = lambda spec, log=print: executor._Borrowed(ex)
try:
    code = cli.main(sys.argv[1:])
finally:
    ex.close()
sys.exit(code)
'''


@dask_only
@pytest.mark.slow
def test_a_failing_reference_task_prints_one_line_in_all(tmp_path):
    """The whole process's stderr, the LocalCluster's worker processes included (their logs are
    silenced below CRITICAL): the harness's one line and nothing else."""
    argv = ["check", "--impl", "numpy", "--dtype", "float32", "--scenario", FEW[0], "--out", str(tmp_path / "r"),
            "--scheduler", "local:1"]
    env = os.environ | {"XENT_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", _PLANTED_CLI, *argv], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{FEW[0]}/float32 failed on a Dask worker: MemoryError: planted" in lines[0], out.stderr
