"""The worst-case hunt on Dask (harness.hunt.distributed, ``hunt --scheduler``): on a LocalCluster
of 2 workers it finds the narrow planted bug (tests/plugins/narrow_bug.py) and its cases replay
in ``check --cases``; it is deterministic for a fixed seed, evaluation count and branch count;
it resumes from its journal and refuses another cluster size; a tcp:// address searches the
same; a failing worker task is one line, exit code 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness import cli, executor, hunt
from tests.plugins import narrow_bug
from tests.test_hunt import NARROW, _json, _timeless

pytestmark = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="Dask distributed is not installed (pip install 'xent-harness[dask]')")


def _quiet(_msg):
    pass


@pytest.fixture(autouse=True)
def _found_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("XENT_FOUND", str(tmp_path / "no-found-cases"))


@pytest.fixture(scope="module")
def cluster():
    from harness.executor.cluster import DaskExecutor

    ex = DaskExecutor.local(2, log=_quiet)
    ex.client.wait_for_workers(2, timeout=60)
    yield ex
    ex.close()


@pytest.fixture
def via_cli(cluster, monkeypatch):
    """``--scheduler local:2`` on the CLI served by the module's cluster (no second one)."""
    asked = []

    def borrowed(spec, log=print):
        asked.append(spec)
        return executor._Borrowed(cluster)

    monkeypatch.setattr(executor, "open_executor", borrowed)
    return asked


def _hunt(out: Path, *args: str, scheduler: str = "local:2") -> int:
    return cli.main(["hunt", "--out", str(out), "--no-catalogue", "--scheduler", scheduler, *args])


def _records(out: Path) -> list[dict]:
    return [json.loads(s) for s in (out / "journal.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def narrow(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("dask-hunt") / "narrow"
    before = cluster.submitted["hunt"]
    data = hunt.run(hunt.Request(impl=NARROW, dtypes=["float32"], evaluations=256, top=3, out=str(out),
                                 catalogue=False, scheduler=cluster), log=_quiet)
    return out, data, cluster.submitted["hunt"] - before


def test_the_distributed_hunt_finds_the_narrow_bug(narrow):
    out, data, sent = narrow
    assert sent == 2 * (256 + 256)  # both pairs, hunt and baseline: every row went to a worker
    assert data["executor"]["kind"] == "dask" and data["executor"]["workers"] == 2
    for p in data["pairs"]:
        best = p["top"][0]
        assert narrow_bug.LO <= best["features"]["top2_gap"] <= narrow_bug.HI
        assert best["score"]["budget"] > 1 and best["cell"]["status"] == "fail"  # confirmed as a sweep cell
        assert abs(best["score"]["y"] - best["score"]["ref"]) == pytest.approx(narrow_bug.ERROR, rel=1e-3)
        assert p["evaluations"] == p["evaluated"] == p["baseline"]["evaluations"] == 256
        assert float(p["baseline"]["worst"]) < 1e6 < float(p["worst"])
    recs = _records(out)
    assert recs[0]["header"]["branches"] == 2
    assert {r["phase"] for r in recs[1:]} == {"hunt.b0", "hunt.b1", "baseline.b0", "baseline.b1"}
    # both branches searched, each its own rows (independent seeds)
    rows = {b: [json.dumps(c, sort_keys=True) for r in recs[1:] if r["branch"] == b for c in r["candidates"]]
            for b in (0, 1)}
    assert rows[0] and rows[1] and not set(rows[0]) & set(rows[1])


def test_the_distributed_hunts_cases_replay_in_check(narrow, tmp_path, capsys):
    cases = narrow[0] / "cases"
    capsys.readouterr()
    assert cli.main(["check", "--impl", NARROW, "--cases", str(cases), "--out", str(tmp_path / "a")]) == 1
    assert "outside budget" in capsys.readouterr().out
    assert cli.main(["check", "--impl", "numpy", "--cases", str(cases), "--out", str(tmp_path / "b")]) == 0


ARGS = ("--impl", "numpy-naive", "--dtype", "bfloat16", "--quantity", "loss", "--top", "2", "--seed", "3")


def test_the_distributed_hunt_is_deterministic_and_resumes(cluster, via_cli, tmp_path):
    assert _hunt(tmp_path / "a", *ARGS, "--evaluations", "96") == 0
    assert via_cli == ["local:2"]
    data = hunt.run(hunt.Request(impl="numpy-naive", dtypes=["bfloat16"], quantities=["loss"], evaluations=96, top=2,
                                 seed=3, out=str(tmp_path / "b"), catalogue=False, scheduler=cluster), log=_quiet)
    a = (tmp_path / "a" / "journal.jsonl").read_text()
    assert a == (tmp_path / "b" / "journal.jsonl").read_text()
    assert _timeless(_json(tmp_path / "a")) == _timeless(data)
    # an interrupted run (64 rows) resumed to 96 evaluates only the rest and ends at the same place
    assert _hunt(tmp_path / "r", *ARGS, "--evaluations", "64", "--no-baseline") == 0
    assert _hunt(tmp_path / "r", *ARGS, "--evaluations", "96", "--no-baseline", "--resume") == 0
    resumed = _json(tmp_path / "r")["pairs"][0]
    assert (resumed["evaluated"], resumed["replayed"], resumed["evaluations"]) == (32, 64, 96)
    assert _timeless({"pairs": [resumed]})["pairs"][0]["top"] == _timeless(data)["pairs"][0]["top"]


def test_resume_on_another_cluster_size_is_refused(cluster, tmp_path, monkeypatch, capsys):
    assert hunt.run(hunt.Request(impl="numpy-naive", dtypes=["bfloat16"], quantities=["loss"], evaluations=8,
                                 out=str(tmp_path / "r"), catalogue=False, baseline=False, scheduler=cluster),
                    log=_quiet)

    class ThreeWorkers:  # the same cluster, seen as one of 3 workers: other branches
        def __getattr__(self, name):
            return getattr(cluster, name)

        def n_workers(self):
            return 3

    monkeypatch.setattr(executor, "open_executor", lambda spec, log=print: executor._Borrowed(ThreeWorkers()))
    capsys.readouterr()
    assert _hunt(tmp_path / "r", "--impl", "numpy-naive", "--dtype", "bfloat16", "--quantity", "loss",
                 "--evaluations", "16", "--no-baseline", "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err


def test_a_failing_branch_is_one_line_exit_2(cluster, via_cli, tmp_path, capsys):
    def plant(on: bool) -> None:  # on a worker (a local function: sent by value)
        from harness.hunt import search

        if on:
            search.Evaluator._saved_call = search.Evaluator.__call__

            def fail(self, cands):
                raise MemoryError("planted: the worker ran out of memory")

            search.Evaluator.__call__ = fail
        elif hasattr(search.Evaluator, "_saved_call"):
            search.Evaluator.__call__ = search.Evaluator._saved_call
            del search.Evaluator._saved_call

    cluster.client.run(plant, True)
    try:
        capsys.readouterr()
        assert _hunt(tmp_path / "f", *ARGS, "--evaluations", "32") == 2
    finally:
        cluster.client.run(plant, False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "hunt bfloat16/loss: branch " in err and "failed on a Dask worker: MemoryError: planted" in err


def test_bad_scheduler_is_one_line(tmp_path, capsys):
    assert cli.main(["hunt", "--impl", "numpy", "--evaluations", "1", "--out", str(tmp_path / "o"),
                     "--scheduler", "dask:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scheduler" in err
    assert not (tmp_path / "o").exists()


def test_a_tcp_scheduler_address_searches_the_same(cluster, tmp_path):
    """``--scheduler tcp://HOST:PORT`` connects a client to a running scheduler (here the module's
    LocalCluster's): the same branches, so the same journal as through the borrowed cluster."""
    assert cluster.address.startswith("tcp://")
    assert _hunt(tmp_path / "tcp", *ARGS, "--evaluations", "48", "--no-baseline", scheduler=cluster.address) == 0
    assert _json(tmp_path / "tcp")["executor"] | {"local": None} == {
        "kind": "dask", "scheduler": cluster.address, "local": None, "workers": 2, "threads": 2, "resources": {}}
    hunt.run(hunt.Request(impl="numpy-naive", dtypes=["bfloat16"], quantities=["loss"], evaluations=48, top=2, seed=3,
                          out=str(tmp_path / "here"), catalogue=False, baseline=False, scheduler=cluster), log=_quiet)
    assert (tmp_path / "tcp" / "journal.jsonl").read_text() == (tmp_path / "here" / "journal.jsonl").read_text()
    assert len(cluster.workers()) == 2  # the hunt closed its client, not the cluster
