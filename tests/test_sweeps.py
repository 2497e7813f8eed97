"""The sweeps end to end through the CLI: verdicts, the gate, fault isolation, resume, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness import results
from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
FAULTY = str(ROOT / "tests" / "plugins" / "faulty.py")


def _run(tmp_path, *argv) -> tuple[int, dict]:
    out = tmp_path / "run"
    n = 1
    while out.exists():  # each call its own run (an --out that holds a run is refused)
        n += 1
        out = tmp_path / f"run-{n}"
    code = main([*argv, "--out", str(out)])
    return code, results.load(out)


def _failing(data, impl):
    return {(c["kind"], c["dtype"], c["scenario"]) for c in data["cells"]
            if c["impl"] == impl and c["status"] in ("fail", "error") and not c.get("known")}


def test_check_passes_on_numpy_torch_jax(tmp_path):
    code, data = _run(tmp_path, "check", "--quick", "--impl", "numpy", "--impl", "torch", "--impl", "jax")
    assert code == 0, [c for c in data["cells"] if c["status"] not in ("pass", "convention") and not c.get("known")][:3]
    rows = {r["name"]: r for r in data["implementations"]}
    assert {rows[n]["verdict"] for n in ("numpy", "torch", "jax")} == {"pass"}
    assert rows["numpy"]["counts"]["pass"] > 100 and rows["numpy"]["counts"].get("known", 0) <= 1  # pair-026: pyproject.toml
    kinds = {c["kind"] for c in data["cells"]}
    assert kinds == {"accuracy", "gradient", "special"}


def test_check_fails_on_the_canary(tmp_path):
    code, data = _run(tmp_path, "check", "--impl", "numpy-naive", "--scenario", "scale-*", "--dtype", "float32")
    assert code == 1
    failing = _failing(data, "numpy-naive")
    assert ("accuracy", "float32", "scale-100") in failing  # exp(100) overflows float32
    assert ("accuracy", "float32", "scale-0.1") not in failing  # ordinary logits are fine
    assert data["summary"]["verdict"] == "fail"


@pytest.mark.parametrize(
    ("plugin", "scenarios", "expected"),
    [
        ("WrongWeightedMean", "weight-*", ("accuracy", "float32", "weight-random-mean")),
        ("IgnoreInsideIgnored", "ignore-*", ("accuracy", "float64", "ignore-inside-sum")),
        ("NoMaxShift", "scale-*", ("accuracy", "float32", "scale-1000")),
    ],
)
def test_check_fails_on_wrong_plugins_and_passes_the_correct_one(tmp_path, plugin, scenarios, expected):
    code, data = _run(tmp_path, "check", "--impl", f"{FAULTY}:{plugin}", "--scenario", scenarios,
                      "--dtype", "float32", "--dtype", "float64", "--no-isolate")
    assert code == 1
    assert expected in _failing(data, plugin)
    code, data = _run(tmp_path, "check", "--impl", f"{FAULTY}:Correct", "--scenario", scenarios,
                      "--dtype", "float32", "--dtype", "float64", "--no-isolate")
    assert code == 0, _failing(data, "Correct")


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("Raises", "RuntimeError: this plugin always raises"),
        ("Hangs", "timed out after 3 s (killed)"),
        ("Segfaults", "crashed the interpreter (SIGSEGV)"),
        ("WrongShape", "loss: returned shape (7,), expected ()"),
    ],
)
def test_misbehaving_plugins_are_isolated(tmp_path, plugin, message):
    # Plugins loaded with --impl run isolated by default; two scenarios prove the run goes on.
    code, data = _run(tmp_path, "check", "--impl", f"{FAULTY}:{plugin}", "--scenario", "weight-random-mean",
                      "--scenario", "smoothing-0.1-sum", "--dtype", "float32", "--timeout", "3")
    assert code == 1
    loss_cells = [c for c in data["cells"] if c["kind"] == "accuracy"]
    assert len(loss_cells) == 2
    assert all(c["status"] == "error" and c["message"].startswith(message) for c in loss_cells), loss_cells
    assert data["run"]["complete"]


def test_a_plain_function_plugin_has_no_gradient(tmp_path):
    code, data = _run(tmp_path, "check", "--impl", f"{FAULTY}:bare_loss", "--scenario", "weight-random-mean",
                      "--dtype", "float64", "--no-isolate")
    cells = {c["kind"]: c for c in data["cells"]}
    assert cells["accuracy"]["status"] == "pass"
    assert cells["gradient"]["status"] == "unsupported" and "no gradient" in cells["gradient"]["message"]
    assert code == 0


def test_killed_run_resumes_without_losing_or_recomputing(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "harness", "accuracy", "--quick", "--impl", "numpy", "--impl", "torch",
            "--dtype", "float32", "--dtype", "float64", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / results.JOURNAL
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count('"type": "cell"') >= 25:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    before = [e["cell"] for e in entries if e["type"] == "cell"]
    assert 25 <= len(before)
    done = {results.cell_key(c) for c in before}
    # The results file left behind (if any flush happened) is valid JSON.
    if (out / results.RESULTS).exists():
        results.load(out)
    assert subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True).returncode in (0, 1)
    resumed = results.load(out)
    fresh_code = main(["accuracy", "--quick", "--impl", "numpy", "--impl", "torch", "--dtype", "float32",
                       "--dtype", "float64", "--out", str(tmp_path / "fresh")])
    fresh = results.load(tmp_path / "fresh")
    key = results.cell_key
    assert {key(c) for c in resumed["cells"]} == {key(c) for c in fresh["cells"]}
    statuses = {key(c): c["status"] for c in fresh["cells"]}
    assert all(statuses[key(c)] == c["status"] for c in resumed["cells"])
    assert resumed["run"]["complete"] and resumed["run"]["resumed"] == 1
    # Cells finished before the kill were not recomputed: their journal entries are unchanged.
    kept = {key(c): c for c in resumed["cells"]}
    assert all(kept[key(c)]["seconds"] == c["seconds"] for c in before if key(c) in done)
    assert fresh_code in (0, 1)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["check", "--dtype", "float8"], "--dtype: unknown dtype 'float8'"),
        (["check", "--impl", "nope"], "--impl: 'nope' is neither a registered name"),
        (["check", "--impl", "cupy"], "--impl cupy: unavailable"),
        (["check", "--scenario", "no-such-*"], "--scenario: no scenario matches 'no-such-*'"),
        (["check", "--budgets", "/nonexistent.toml"], "--budgets: file '/nonexistent.toml' does not exist"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["report", "/nonexistent/results.json"], "results: /nonexistent/results.json does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err


def test_bad_budget_file_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "b.toml"
    f.write_text("[float32]\nloss_ulps = 3\n")
    assert main(["check", "--budgets", str(f), "--impl", "numpy", "--scenario", "scale-1"]) == 2
    assert "unknown key float32.loss_ulps" in capsys.readouterr().err


def test_budget_override_makes_torch_fail_strict_ulps(tmp_path):
    # Strict budgets (no backward-stable allowance) expose torch's tiny losses returned as 0.
    f = tmp_path / "strict.toml"
    f.write_text("[float32]\nloss_ulp = 4\nloss_scaled = 0\ngrad_ulp = 4\ngrad_scaled = 0\n")
    code, data = _run(tmp_path, "accuracy", "--impl", "torch", "--impl", "numpy", "--scenario", "dominant-gap-20",
                      "--dtype", "float32", "--budgets", str(f))
    assert code == 1
    assert ("accuracy", "float32", "dominant-gap-20") in _failing(data, "torch")
    assert not _failing(data, "numpy")
    assert data["budgets"]["float32"]["loss_scaled"] == 0 and str(f) in data["budgets_source"]


def test_results_file_follows_the_schema(tmp_path):
    code, data = _run(tmp_path, "throughput", "--quick", "--impl", "numpy", "--dtype", "float32")
    assert code == 0
    assert data["schema"] == "xent-harness/results" and data["schema_version"] == 1
    assert data["run"]["complete"] and data["provenance"]["python"]
    row = next(r for r in data["throughput"] if r["pass"] == "forward")
    assert row["status"] == "ok" and row["bytes"] == row["N"] * row["C"] * 4
    assert 0 < row["gbps"] and 0 < row["fraction_of_copy"] and row["copy_gbps"] > 0
    back = next(r for r in data["throughput"] if r["pass"] == "forward+backward")
    assert back["bytes"] == 2 * row["bytes"]
    text = (tmp_path / "run" / "results.json").read_text()

    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(text, parse_constant=reject)  # strict JSON: no NaN/Infinity literals


def test_json_flag_prints_machine_output(tmp_path, capsys):
    code = main(["accuracy", "--impl", "numpy", "--scenario", "scale-1", "--dtype", "float64", "--json",
                 "--out", str(tmp_path / "j")])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["summary"]["verdict"] == "pass"


def test_list_is_fast_and_does_not_import_heavy_libraries():
    code = ("import sys, harness.cli as c; c.main(['list']); "
            "bad = [m for m in ('torch', 'jax', 'cupy', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    env = dict(os.environ)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, env=env)
    assert time.monotonic() - t0 < 10


def _big_cell(i: int) -> dict:
    hist = {"edges": [0.0, *[4.0**k for k in range(-5, 20)], float("inf")], "counts": list(range(27))}
    return {"kind": "accuracy", "impl": "x", "dtype": "float32", "scenario": f"s{i}", "status": "pass",
            "message": None, "metrics": {"ulp_max": float("nan"), "hist": hist, "worst": {"index": [i, 0]}},
            "budget": {"ulp": 4}, "seconds": 0.0}


def test_results_rewrites_cost_a_small_share_of_the_run(tmp_path, monkeypatch):
    """The promise of results.py: results.json is rewritten at most once per 20x its own cost
    (the journal is the record meanwhile), so rewrites stay a small share of the run however
    large the file grows. Measured: total rewrite time against the whole loop's time."""
    res = results.Results.open(tmp_path, {"id": "t"}, flush_seconds=0.0)
    spent = []
    real = res.flush

    def timed(**kw):
        t0 = time.perf_counter()
        real(**kw)
        spent.append(time.perf_counter() - t0)

    monkeypatch.setattr(res, "flush", timed)
    t0 = time.perf_counter()
    for i in range(2000):
        time.sleep(0.001)  # computing a cell (real ones take milliseconds)
        res.add_cell(_big_cell(i))
    elapsed = time.perf_counter() - t0
    assert len(spent) >= 2  # it does rewrite while the run goes on
    assert sum(spent) <= 0.1 * elapsed, (len(spent), sum(spent), elapsed)
    on_disk = json.loads((tmp_path / results.RESULTS).read_text())  # a valid file at all times
    assert 0 < len(on_disk["cells"]) <= 2000 and on_disk["cells"][0]["metrics"]["ulp_max"] == "nan"


def test_results_close_writes_annotations_made_after_the_sweep(tmp_path):
    res = results.Results.open(tmp_path, {"id": "t"})
    res.add_cell(_big_cell(0) | {"status": "fail"})
    res.cells[0]["known"] = "a reason"  # what sweeps.mark_known does, in place
    res.close()
    cell = json.loads((tmp_path / results.RESULTS).read_text())["cells"][0]
    assert cell["known"] == "a reason" and cell["metrics"]["hist"]["edges"][-1] == "inf"


def test_a_fused_implementation_gets_one_call_per_problem(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    monkeypatch.setenv("XENT_TEST_CALLS", str(calls))
    out = tmp_path / "run"
    rc = main(["check", "--impl", f"{FAULTY}:CountsCalls", "--scenario", "scale-1", "--scenario", "weight-random-mean",
               "--dtype", "float32", "--dtype", "float64", "--out", str(out)])
    assert rc == 0
    made = calls.read_text().split()
    cells = json.loads((out / "results.json").read_text())["cells"]
    problems = {(c["scenario"], c["dtype"]) for c in cells}
    assert set(made) == {"loss_and_grad"} and len(made) == len(problems) == 4, made
    assert {c["kind"] for c in cells} >= {"accuracy", "gradient"} and all(c["status"] == "pass" for c in cells)


def test_a_fused_call_that_returns_no_pair_is_an_error_cell(tmp_path):
    out = tmp_path / "run"
    rc = main(["check", "--impl", f"{FAULTY}:FusedNotAPair", "--scenario", "scale-1", "--dtype", "float32",
               "--out", str(out)])
    assert rc == 1
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert {c["kind"]: c["status"] for c in cells} == {"accuracy": "error", "gradient": "error"}
    assert all("(loss, grad) pair" in c["message"] for c in cells)


@pytest.mark.parametrize("name", ["numpy", "numpy-naive", "torch", "jax"])
def test_builtin_fused_calls_give_the_bits_of_separate_calls(name):
    """loss_and_grad is a shortcut, never a different answer: the same bits as loss() and grad().
    (jax: grad() is value_and_grad's, the same program; its forward-only loss() is a separate
    XLA program, equal to within a few ULPs -- the accuracy cells judge the fused one.)"""
    from harness import registry
    from harness import scenarios as S

    entry = next((e for e in registry.discover() if e.name == name), None)
    if entry is None or entry.unavailable():
        pytest.skip(f"{name} unavailable")
    impl = entry.impl
    assert impl.fused
    for scen, dtype in (("scale-1", "float32"), ("weight-random-mean", "bfloat16"), ("combo-kdim-weight-mean", "float64"),
                        ("smoothing-0.1-mean", "float16")):
        p = S.get(scen).problem(dtype)
        loss, grad = impl.loss_and_grad(p)
        for got, want in ((loss, impl.loss(p)), (grad, impl.grad(p))):
            assert got.dtype == want.dtype and got.shape == want.shape
            if name == "jax" and got is loss:
                from harness.metrics import ulp_error

                assert np.max(ulp_error(got, np.asarray(want, np.float64), 0, dtype)) <= 16, (scen, dtype)
                continue
            assert got.tobytes() == np.asarray(want).tobytes(), (name, scen, dtype)


def test_resuming_a_finished_run_calls_nothing(tmp_path, monkeypatch):
    """Scenarios without inf/NaN have no special-value cell; resume must know that from the
    journal instead of calling the implementation again to find out (counted calls)."""
    calls = tmp_path / "calls"
    monkeypatch.setenv("XENT_TEST_CALLS", str(calls))
    out = tmp_path / "run"
    argv = ["check", "--impl", f"{FAULTY}:CountsCalls", "--scenario", "scale-1", "--scenario", "masked-target",
            "--dtype", "float32", "--out", str(out)]
    rc = main(argv)
    assert rc in (0, 1)
    first = calls.read_text().split()
    data = results.load(out)
    assert first and data["not_applicable"]  # scale-1 has no special-value cell
    assert main([*argv, "--resume"]) == rc
    assert calls.read_text().split() == first  # not one more call
    assert results.load(out)["cells"] == data["cells"]
