"""``xent-harness repro RESULTS CELL`` (harness/repro.py): the .npz holds the exact inputs and the
reference, and the standalone script -- run in a subprocess where xent-harness cannot be
imported -- reproduces the wrong value and prints the true one, checked against torch float64
and against the wrong plugin called here; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import cli, repro, scenarios

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "tests/plugins/faulty.py:WrongWeightedMean"
TORCH_OVERFLOW = "torch/float16/accuracy/scale-10000"  # pyproject.toml's known float16 'mean' overflow
PLUGIN_CELL = "WrongWeightedMean/float32/accuracy/weight-zeros-mean"
CANARY_CELL = "numpy-naive/float32/accuracy/exp-overflow-float32-above"
JAX_CELL = "jax/float32/special/posinf-one"  # known: optax gives +inf where PyTorch gives NaN


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One check run with the failing cells the tests reproduce (the campaign diagnoses them and
    writes their reproducers too)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("repro") / "run"
    impls = ["torch", "numpy-naive", PLUGIN]
    scen = ["scale-10000", "weight-zeros-mean", "exp-overflow-float32-above"]
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401

        impls.append("jax")
        scen.append("posinf-one")
    except ImportError:
        pass
    argv = ["check", *(a for i in impls for a in ("--impl", i)), *(a for s in scen for a in ("--scenario", s)),
            "--dtype", "float16", "--dtype", "float32", "--out", str(out)]
    cwd = os.getcwd()
    os.chdir(ROOT)  # the plugin's spec is relative to the repository
    try:
        assert cli.main(argv) == 1
    finally:
        os.chdir(cwd)
    return out


def _repro(run_dir, cell, tmp_path, capsys, *extra) -> tuple[int, str]:
    code = cli.main(["repro", str(run_dir / "results.json"), cell, "-o", str(tmp_path), *extra])
    return code, capsys.readouterr().out


def _script(tmp_path, cell) -> Path:
    return tmp_path / f"{repro.slug(dict(zip(('impl', 'dtype', 'kind', 'scenario'), repro.parse_cell(cell), strict=True)))}.py"


#: Run a script with xent-harness unimportable: it must need NumPy and the library only.
_STANDALONE = ("import runpy, sys; sys.modules['harness'] = None; "
               "runpy.run_path(sys.argv[1], run_name='__main__')")


def _run_script(path: Path, *, standalone: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    args = ["-c", _STANDALONE, str(path)] if standalone else [str(path)]
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or path.parent)


def _line(out: str, label: str) -> str:
    return next(x for x in out.splitlines() if x.strip().startswith(label)).split(label, 1)[1].strip()


def test_the_torch_float16_mean_overflow_reproduces_standalone(run, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    code, out = _repro(run, TORCH_OVERFLOW, tmp_path, capsys)
    assert code == 0 and "REPRODUCED: 1 of 1 values outside the budget" in out
    assert "diagnosis: matches: the mean's sum accumulated in the input dtype" in out
    problem = scenarios.get("scale-10000").problem("float16")
    z = np.load(_script(tmp_path, TORCH_OVERFLOW).with_suffix(".npz"))
    assert z["logits"].dtype == np.float16 and np.array_equal(z["logits"].view(np.uint16), problem.logits.view(np.uint16))
    assert np.array_equal(z["target"], problem.target) and str(z["reduction"]) == "mean"
    assert str(z["digest"]) == problem.digest and float(z["output"]) == np.inf
    # the true value, independently: torch in float64 on the same logits, rounded to float16
    exact64 = torch.nn.functional.cross_entropy(torch.from_numpy(problem.logits).double(),
                                                torch.from_numpy(problem.target)).item()
    true = float(np.float16(exact64))
    assert float(z["reference"]) == true and float(z["reference_hi"]) == pytest.approx(exact64, rel=1e-12)
    done = _run_script(_script(tmp_path, TORCH_OVERFLOW))
    assert done.returncode == 1, done.stderr
    assert "torch.nn.functional.cross_entropy (torch " in done.stdout
    assert _line(done.stdout, "returned:") == "inf"
    assert _line(done.stdout, "true value:").startswith(f"{true!r}  (correctly rounded to float16")
    assert _line(done.stdout, "error:").startswith("inf ULP")
    assert "REPRODUCED: 1 of 1 values outside the budget" in done.stdout


def test_a_wrong_plugins_reproducer_prints_its_value_and_the_true_one(run, tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from tests.plugins import faulty

    monkeypatch.chdir(ROOT)
    code, out = _repro(run, PLUGIN_CELL, tmp_path, capsys)
    assert code == 0 and "diagnosis: matches: mean divided by N" in out
    problem = scenarios.get("weight-zeros-mean").problem("float32")
    wrong = float(faulty.WrongWeightedMean().loss(problem.logits, problem.target, weight=problem.weight))
    exact64 = torch.nn.functional.cross_entropy(torch.from_numpy(problem.logits).double(),
                                                torch.from_numpy(problem.target),
                                                weight=torch.from_numpy(problem.weight).double()).item()
    done = _run_script(_script(tmp_path, PLUGIN_CELL), cwd=tmp_path.parent)  # from elsewhere: the path is absolute
    assert done.returncode == 1, done.stderr
    assert "the plugin tests/plugins/faulty.py:WrongWeightedMean" in done.stdout
    assert _line(done.stdout, "returned:") == repr(wrong)
    assert _line(done.stdout, "true value:").startswith(repr(float(np.float32(exact64))))
    text = _script(tmp_path, PLUGIN_CELL).read_text()
    assert "xent-harness's diagnosis: matches: mean divided by N" in text and "import harness" not in text


@pytest.mark.parametrize("cell, standalone", [(CANARY_CELL, False), (JAX_CELL, True), (TORCH_OVERFLOW, True)])
def test_each_script_computes_what_the_harness_measured(run, tmp_path, capsys, cell, standalone):
    """The script's implementation() gives the same bits as the harness's adapter did (the
    numpy-naive canary is xent-harness's own: its library is xent-harness)."""
    if cell == JAX_CELL:
        pytest.importorskip("optax")
    code, _ = _repro(run, cell, tmp_path, capsys)
    assert code == 0
    script = _script(tmp_path, cell)
    driver = ("import runpy, sys, numpy as np\n"
              + ("sys.modules['harness'] = None\n" if standalone else "")
              + "ns = runpy.run_path(sys.argv[1], run_name='repro')\n"
              "y, what = ns['implementation']()\n"
              "out = ns['d']['output']\n"
              "print('SAME' if np.array_equal(np.asarray(y).reshape(out.shape), out, equal_nan=True) else 'DIFFERENT', what)\n")
    done = subprocess.run([sys.executable, "-c", driver, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("SAME"), done.stdout


def test_the_campaign_wrote_reproducers_for_the_cells_it_diagnosed(run):
    data = json.loads((run / "results.json").read_text())
    diagnosed = [c for c in data["cells"] if c.get("diagnosis")]
    assert {f"{c['impl']}/{c['dtype']}/{c['kind']}/{c['scenario']}" for c in diagnosed} >= {TORCH_OVERFLOW, PLUGIN_CELL}
    for c in diagnosed:
        script = run / c["diagnosis"]["repro"]
        assert script.is_file() and script.with_suffix(".npz").is_file()
    torch_cell = next(c for c in diagnosed if c["impl"] == "torch")
    assert torch_cell["diagnosis"]["matches"][0]["name"] == "sum-in-dtype" and torch_cell["known"]
    # the summary's known failures say it too, and the report links the reproducer
    assert "(diagnosis: matches: the mean's sum accumulated in the input dtype" in (run / "summary.md").read_text()
    assert f'href="{torch_cell["diagnosis"]["repro"]}"' in (run / "report.html").read_text()


def test_a_cell_that_no_longer_fails_is_not_reproduced(run, tmp_path, capsys):
    data = json.loads((run / "results.json").read_text())
    cell = next(c for c in data["cells"] if (c["impl"], c["dtype"], c["kind"], c["scenario"])
                == ("torch", "float32", "accuracy", "weight-zeros-mean"))
    assert cell["status"] == "pass"
    cell["status"] = "fail"  # as if torch had failed there once
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(data))
    code, out = _repro(tmp_path / "r", "torch/float32/accuracy/weight-zeros-mean", tmp_path / "out", capsys)
    assert code == 1 and "not reproduced" in out
    assert _run_script(_script(tmp_path / "out", "torch/float32/accuracy/weight-zeros-mean")).returncode == 0


def _edited(run, tmp_path, edit) -> Path:
    data = json.loads((run / "results.json").read_text())
    edit(data)
    d = tmp_path / "edited"
    d.mkdir(exist_ok=True)
    (d / "results.json").write_text(json.dumps(data))
    return d


def _seed(data):
    next(s for s in data["scenarios"] if s["name"] == "scale-10000")["seed"] += 1


def _digest(data):
    next(c for c in data["cells"] if c.get("diagnosis") and c["scenario"] == "scale-10000")["diagnosis"]["digest"] = "0" * 64


@pytest.mark.parametrize("cell, edit, fragment", [
    ("torch/float16/scale-10000", None, "CELL must be IMPL/DTYPE/KIND/SCENARIO"),
    ("torch/float8/accuracy/scale-10000", None, "unknown dtype 'float8'"),
    ("torch/float16/accuracy/no-such-scenario", None, "no cell torch/float16/accuracy/no-such-scenario"),
    ("torch/float32/accuracy/weight-zeros-mean", None, "is pass; reproducers are for failing cells"),
    (TORCH_OVERFLOW, _seed, "had seed"),
    (TORCH_OVERFLOW, _digest, "digest"),
])
def test_bad_input_is_one_line_exit_2(run, tmp_path, capsys, cell, edit, fragment):
    where = run if edit is None else _edited(run, tmp_path, edit)
    code = cli.main(["repro", str(where), cell, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and fragment in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_not_a_results_file_and_a_plugin_missing_from_here_are_one_line(run, tmp_path, capsys, monkeypatch):
    bogus = tmp_path / "x.json"
    bogus.write_text("{}")
    assert cli.main(["repro", str(bogus), TORCH_OVERFLOW]) == 2
    assert "not an xent-harness results file" in capsys.readouterr().err
    assert cli.main(["repro", str(run), TORCH_OVERFLOW, "--timeout", "-1"]) == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # the plugin's relative spec does not resolve from here
    assert cli.main(["repro", str(run), PLUGIN_CELL, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "run repro in the directory the run was started from" in err and "\n" not in err


def test_the_tolerance_is_the_budget_per_element():
    """Hand-derived: float32, budgets 4 ULP or 64 scaled units: a loss of 1.5 (ulp 2^-23) with
    scale s is allowed max(4 * 2^-23, 64 * 2^-24 * s)."""
    from harness.problem import Problem

    problem = Problem(np.array([[0.0, 0.0, 0.0]], np.float32), np.array([0]), reduction="none")
    from harness.budgets import scales

    s = float(scales(problem, "loss").reshape(-1)[0])
    budgets = {"float32": {"loss_ulp": 4, "loss_scaled": 64, "grad_ulp": 4, "grad_scaled": 64}}
    tol = repro.tolerance(problem, "loss", np.array([1.5]), np.array([0.0]), budgets)
    assert tol.tolist() == [max(4 * 2.0**-23, 64 * 2.0**-24 * s)]


def test_slugs_are_file_names():
    cell = {"impl": "evil<script>/x", "dtype": "float32", "kind": "accuracy", "scenario": "scale-1"}
    name = repro.slug(cell)
    assert "/" not in name and "<" not in name and name.endswith("_float32_accuracy_scale-1")
    assert repro.parse_cell("evil<script>/x/float32/accuracy/scale-1") == ("evil<script>/x", "float32", "accuracy",
                                                                           "scale-1")
