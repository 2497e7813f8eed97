"""The campaign API (harness.campaign): a run and its one verdict, without the CLI."""

from __future__ import annotations

import json

import pytest

from harness import campaign, registry


def _req(tmp_path, **kw) -> campaign.Request:
    base = dict(kinds=campaign.CHECK, impls=["numpy"], scenarios=["scale-1"], dtypes=["float32"],
                out=tmp_path / "run", argv=["check"])
    return campaign.Request(**(base | kw))


def test_a_campaign_runs_and_owns_its_verdict(tmp_path):
    done = campaign.run(_req(tmp_path), log=lambda m: None)
    assert not done.interrupted and done.verdict == "pass"
    on_disk = json.loads((done.out / "results.json").read_text())
    assert on_disk["summary"]["verdict"] == "pass" and on_disk["run"]["complete"]
    assert {c["kind"] for c in on_disk["cells"]} == {"accuracy", "gradient"}
    assert [r["verdict"] for r in on_disk["implementations"]] == ["pass"]
    assert (done.out / "report.html").exists() and (done.out / "summary.md").exists()


def test_a_default_directory_is_copied_to_latest(tmp_path):
    done = campaign.run(_req(tmp_path, out=None, reports=tmp_path / "reports"), log=lambda m: None)
    assert done.out.parent == tmp_path / "reports" and done.out.name.startswith("2")
    latest = tmp_path / "reports" / "latest" / "results.json"
    assert json.loads(latest.read_text())["cells"] == json.loads((done.out / "results.json").read_text())["cells"]


@pytest.mark.parametrize("bad, fragment", [
    ({"dtypes": ["float8"]}, "--dtype: unknown dtype 'float8'"),
    ({"scenarios": ["no-such-scenario"]}, "no-such-scenario"),
    ({"impls": ["no-such-impl"]}, "no-such-impl"),
    ({"budgets": "/nonexistent/budgets.toml"}, "budgets"),
    ({"resume": True, "out": None}, "--resume: no earlier run"),
])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, bad, fragment):
    req = _req(tmp_path, reports=tmp_path / "reports", **bad)
    with pytest.raises(campaign.CampaignError) as exc:
        campaign.run(req, log=lambda m: None)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "reports").exists()


def _row(name, verdict, canary=False):
    return {"name": name, "verdict": verdict, "canary": canary}


def test_the_roll_up():
    cells = [{"impl": "a", "status": "pass"}, {"impl": "b", "status": "fail", "known": "why"},
             {"impl": "c", "status": "error"}]
    s = campaign.summary([_row("a", "pass"), _row("c", "error")], cells, [{"status": "error"}])
    assert s["verdict"] == "fail" and s["failing"] == ["c"] and s["throughput_errors"] == 1
    assert s["counts"] == {"pass": 1, "fail": 0, "error": 1, "unsupported": 0, "known": 1, "convention": 0}
    # a canary that fails is expected in a default run, judged like any other when named
    rows = [_row("a", "pass"), _row("n", "fail", canary=True)]
    assert campaign.summary(rows, [], [])["verdict"] == "pass"
    assert campaign.summary(rows, [], [], canaries_expected=False)["verdict"] == "fail"


def test_implementation_rows_order_fail_over_error_over_pass():
    entries = [e for e in registry.discover() if e.name == "numpy"]
    cells = [{"impl": "numpy", "status": s} for s in ("pass", "error", "fail")]
    assert campaign.implementation_rows(entries, [], cells)[0]["verdict"] == "fail"
    assert campaign.implementation_rows(entries, [], cells[:2])[0]["verdict"] == "error"
    assert campaign.implementation_rows(entries, [], cells[:1])[0]["verdict"] == "pass"
    known = [{"impl": "numpy", "status": "fail", "known": "a reason"}]
    row = campaign.implementation_rows(entries, [], known)[0]
    assert row["verdict"] == "pass" and row["counts"]["known"] == 1


def test_the_vocabulary_agrees_with_the_modules_that_use_it():
    from harness import budgets, formats, sweeps, throughput, vocabulary

    assert vocabulary.DTYPES == tuple(formats.DTYPE_NAMES)
    assert vocabulary.KINDS == sweeps.KINDS and vocabulary.PASSES == throughput.PASSES
    assert set(vocabulary.BUDGET_KEYS) == set(budgets.KEYS) == {"loss_ulp", "loss_scaled", "grad_ulp", "grad_scaled"}
    assert [vocabulary.quantity(k) for k in ("accuracy", "gradient")] == ["loss", "grad"]
    assert [vocabulary.kind(q) for q in ("loss", "grad")] == ["accuracy", "gradient"]
    assert vocabulary.budget_of({"float32": {"grad_ulp": 4, "grad_scaled": 64, "loss_ulp": 2, "loss_scaled": 8}},
                                "float32", "grad") == {"ulp": 4, "scaled": 64}
    assert vocabulary.cell_id({"impl": "i", "dtype": "d", "kind": "k", "scenario": "s"}) == "i/d/k/s"


def test_the_vocabulary_is_standard_library_only():
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[1] / "harness" / "vocabulary.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


class _FakeGPU:
    """A plugin that says it runs on a CUDA device (it computes on the host: a stand-in)."""

    devices = ("cuda",)
    dtypes = ("float32",)

    def loss(self, logits, target, **kw):
        import numpy as np

        from harness.implementations.numpy_stable import NumpyStable
        from harness.problem import Problem

        return NumpyStable().loss(Problem(np.asarray(logits), np.asarray(target), **kw))

    def device_info(self):
        return {"name": "Fake H200", "memory_bytes": 1 << 37}


def test_a_device_implementations_info_reaches_the_provenance(tmp_path, monkeypatch):
    from harness import registry

    class Impl(registry.FunctionImplementation):
        def device_info(self):
            return self._obj.device_info()

    monkeypatch.setattr(registry, "load_spec", lambda spec: Impl(_FakeGPU(), "fake-gpu", spec))
    monkeypatch.setattr(registry, "check_spec", lambda spec: None)
    done = campaign.run(_req(tmp_path, impls=["x:y"], kinds=("accuracy",), isolate=False), log=lambda m: None)
    assert done.data["provenance"]["gpu"] == {"name": "Fake H200", "memory_bytes": 1 << 37}
    assert registry.Implementation().device_info() is None and registry.Implementation().peak_memory(lambda: 0) is None


def test_filters_that_leave_nothing_to_judge_are_a_usage_error(tmp_path, capsys):
    """A gate that judged nothing must not pass (scale-10 is not in the quick subset)."""
    from harness.cli import main

    with pytest.raises(campaign.CampaignError, match="nothing to judge: --scenario scale-10, --quick, --dtype float32"):
        campaign.run(_req(tmp_path, scenarios=["scale-10"], quick=True), log=lambda m: None)
    assert not (tmp_path / "run").exists()
    rc = main(["check", "--impl", "numpy", "--dtype", "float32", "--scenario", "scale-10", "--quick",
               "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to judge" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("field, value, fragment", [
    ("timeout", 0, "--timeout: must be a positive number"), ("timeout", -1.0, "--timeout"),
    ("timeout", float("nan"), "--timeout"), ("timeout", float("inf"), "--timeout"),
    ("workers", 0, "--workers: must be a positive integer"), ("workers", -3, "--workers"),
])
def test_numeric_options_are_checked(tmp_path, field, value, fragment):
    with pytest.raises(campaign.CampaignError, match=fragment):
        campaign.run(_req(tmp_path, **{field: value}), log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_workers_above_the_cores_are_capped_with_a_note(tmp_path):
    import os

    said = []
    done = campaign.run(_req(tmp_path, workers=100000), log=said.append)
    assert done.verdict == "pass" and f"--workers 100000: capped at this machine's {os.cpu_count()} cores" in said


def test_out_onto_a_run_is_refused_without_resume_or_force(tmp_path):
    first = campaign.run(_req(tmp_path), log=lambda m: None)
    cells = json.loads((first.out / "results.json").read_text())["cells"]
    with pytest.raises(campaign.CampaignError, match="holds a run; --resume continues it, --force replaces it"):
        campaign.run(_req(tmp_path, scenarios=["scale-100"]), log=lambda m: None)
    assert json.loads((first.out / "results.json").read_text())["cells"] == cells  # untouched
    replaced = campaign.run(_req(tmp_path, scenarios=["scale-100"], force=True), log=lambda m: None)
    assert {c["scenario"] for c in replaced.data["cells"]} == {"scale-100"}
    (tmp_path / "afile").write_text("x")
    with pytest.raises(campaign.CampaignError, match="is a file"):
        campaign.run(_req(tmp_path, out=tmp_path / "afile"), log=lambda m: None)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(campaign, "_timestamp", lambda: "20261202T000000Z")
    req = _req(tmp_path, out=None, reports=tmp_path / "reports")
    outs = [campaign.out_dir(req) for _ in range(3)]
    assert [o.name for o in outs] == ["20261202T000000Z", "20261202T000000Z-2", "20261202T000000Z-3"]
    assert all(o.is_dir() for o in outs)


@pytest.mark.parametrize("change, flag", [
    ({"dtypes": ["float64"]}, "--dtype (float32 then, float64 now)"),
    ({"scenarios": ["scale-100"]}, "--scenario (scale-1 then, scale-100 now)"),
    ({"impls": ["torch"]}, "--impl (numpy then, torch now)"),
    ({"kinds": ("accuracy",)}, "the command"),
    ({"include_large": True}, "--include-large (off then, on now)"),
])
def test_resume_with_other_arguments_is_refused_naming_them(tmp_path, change, flag):
    first = campaign.run(_req(tmp_path), log=lambda m: None)
    before = (first.out / "results.json").read_text()
    with pytest.raises(campaign.CampaignError, match=r"--resume: .* was started with other arguments: ") as exc:
        campaign.run(_req(tmp_path, resume=True, **change), log=lambda m: None)
    assert flag in str(exc.value) and "\n" not in str(exc.value)
    assert (first.out / "results.json").read_text() == before  # untouched


def test_resume_from_the_journal_alone_and_past_malformed_lines(tmp_path):
    """Killed before the first rewrite of results.json: the journal's first line holds the run;
    a line without its keys is redone, never a traceback."""
    first = campaign.run(_req(tmp_path), log=lambda m: None)
    cells = {(c["kind"], c["scenario"]) for c in first.data["cells"]}
    (first.out / "results.json").unlink()
    with open(first.out / "cells.jsonl", "a") as fh:
        fh.write('{"type": "cell", "cell": {"kind": "accuracy"}}\n[1, 2]\n{"type": "throughput", "row": 5}\n')
    again = campaign.run(_req(tmp_path, resume=True), log=lambda m: None)
    assert again.verdict == "pass" and {(c["kind"], c["scenario"]) for c in again.data["cells"]} == cells
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "cells.jsonl").write_text('{"type": "cell"}\n')
    with pytest.raises(campaign.CampaignError, match="journal does not say which run"):
        campaign.run(_req(tmp_path, out=tmp_path / "bare", resume=True), log=lambda m: None)
