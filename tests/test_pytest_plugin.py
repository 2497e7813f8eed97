"""The pytest plugin (harness.pytest_plugin) and the shipped suite (harness.accuracy_suite).

Each test runs pytest in-process with pytester; one runs it in a subprocess the way a third
party would. The plugin is loaded from its pytest11 entry point when the installed package
declares it, else with ``-p harness.pytest_plugin`` (both at once would register it twice).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

import harness.registry  # noqa: F401  (imported before pytester's sys.modules snapshot)
from harness import golden

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
FAULTY = ROOT / "tests" / "plugins" / "faulty.py"


def _plugin_args() -> list[str]:
    # hypothesis' plugin costs ~1 s per in-process run (pytester drops the modules it imported)
    args = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    if any(ep.name == "xent_harness" for ep in metadata.entry_points(group="pytest11")):
        return args
    return [*args, "-p", "harness.pytest_plugin"]


def suite(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    argv = [*_plugin_args(), "-rsxX", "--pyargs", "harness.accuracy_suite", *args]
    if subprocess:
        return pytester.runpytest_subprocess(*argv)
    return pytester.runpytest(*argv)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("XENT_IMPL", raising=False)
    monkeypatch.delenv("XENT_REFERENCES", raising=False)


def test_numpy_passes_every_golden_case(pytester):
    r = suite(pytester, "--xent-impl", "numpy")
    cases = len(golden.names())
    r.assert_outcomes(passed=2 * cases)  # loss and gradient of every case
    assert r.ret == pytest.ExitCode.OK


def test_xent_impl_environment_variable_and_dtype_filter(pytester, monkeypatch):
    monkeypatch.setenv("XENT_IMPL", "numpy")
    r = suite(pytester, "--xent-dtype", "bfloat16", "--collect-only", "-q")
    ids = [line for line in r.outlines if "test_golden[" in line]
    assert ids and all("[numpy-bfloat16-" in line for line in ids)


def _budget(dtype, key):
    from harness import budgets

    return budgets.defaults()[dtype][key]


def test_faulty_plugin_fails_with_the_budget_message(pytester):
    r = suite(pytester, "--xent-impl", f"{FAULTY}:WrongWeightedMean", "-k", "weights-smoothing")
    # the weighted mean is wrong (loss); the gradient is right; 16-bit dtypes are unsupported
    r.assert_outcomes(failed=2, passed=2, skipped=4)
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines([
        "*WrongWeightedMean on weights-smoothing-float32 (float32): loss: 1 of 1 values outside budget;*"
        f"(budget {_budget('float32', 'loss_ulp')} ULP or {_budget('float32', 'loss_scaled')})*",
        "*WrongWeightedMean: dtype bfloat16 not supported*",
    ])


def test_known_failure_becomes_xfail(pytester):
    known = pytester.makefile(".toml", known='[[known-failures]]\n'
                              'cells = "WrongWeightedMean/*/accuracy/weights-smoothing-*"\n'
                              'reason = "divides by N"\n')
    r = suite(pytester, "--xent-impl", f"{FAULTY}:WrongWeightedMean", "-k", "weights-smoothing and loss",
              "--xent-known", str(known))
    r.assert_outcomes(xfailed=2, skipped=2)
    r.stdout.fnmatch_lines(["*known failure: divides by N*"])


def test_budgets_file_is_used(pytester):
    # a loose enough float64 budget lets the faulty mean pass
    loose = pytester.makefile(".toml", loose="[float64]\nloss_ulp = 1e16\nloss_scaled = 1e16\n")
    r = suite(pytester, "--xent-impl", f"{FAULTY}:WrongWeightedMean", "-k", "weights-smoothing and loss and float64",
              "--xent-budgets", str(loose))
    r.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-impl", "--xent-impl: 'no-such-impl' is neither a registered name nor MODULE:ATTR or FILE.py:ATTR"),
        ("no_such_module_xyz:ce", "*no module named*no_such_module_xyz*"),
        ("missing/plugin.py:ce", "*file 'missing/plugin.py' does not exist*"),
    ],
)
def test_bad_spec_is_a_usage_error(pytester, spec, message):
    r = suite(pytester, "--xent-impl", spec)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"ERROR: xent-harness: {message}"])


def test_requested_but_unavailable_is_a_usage_error(pytester):
    from harness import registry

    entry = next(e for e in registry.discover() if e.name == "torch-cuda")
    if entry.unavailable() is None:
        pytest.skip("torch-cuda is available here")
    r = suite(pytester, "--xent-impl", "torch-cuda")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["ERROR: xent-harness: --xent-impl torch-cuda: unavailable: *"])


def test_unavailable_and_canaries_are_skipped_with_the_reason(pytester):
    r = suite(pytester, "-k", "skipped")  # selects only the one-per-implementation skip entries
    assert r.ret == pytest.ExitCode.OK
    r.stdout.fnmatch_lines(["*numpy-naive: canary (deliberately broken): name it with --xent-impl*"])
    assert r.parseoutcomes().get("passed", 0) == 0


def test_missing_references_named_explicitly_is_an_error(pytester, tmp_path, monkeypatch):
    r = suite(pytester, "--xent-impl", "numpy", "--xent-references", str(tmp_path / "nowhere"))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["ERROR: xent-harness: --xent-references */nowhere is not a golden references "
                            "directory (no manifest.json)*"])
    monkeypatch.setenv("XENT_REFERENCES", str(tmp_path))
    r = suite(pytester, "--xent-impl", "numpy")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["ERROR: xent-harness: $XENT_REFERENCES * is not a golden references directory*"])


def test_missing_default_references_skip_the_suite_with_the_reason(pytester, tmp_path, monkeypatch):
    monkeypatch.setattr(golden, "default_dir", lambda: tmp_path / "site-packages" / "references")
    r = suite(pytester, "--xent-impl", "numpy")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*no golden references at */site-packages/references (an installed wheel does not "
                            "ship them): pass --xent-references DIR*"])


def test_references_option_points_elsewhere(pytester, tmp_path):
    import shutil

    ref = tmp_path / "refs"
    ref.mkdir()
    shutil.copy(golden.default_dir() / "tutorial-example.npz", ref)
    manifest = json.loads((golden.default_dir() / "manifest.json").read_text())
    manifest["cases"] = {"tutorial-example": manifest["cases"]["tutorial-example"]}
    (ref / "manifest.json").write_text(json.dumps(manifest))
    r = suite(pytester, "--xent-impl", "numpy", "--xent-references", str(ref))
    r.assert_outcomes(passed=2)


def test_bad_budgets_file_is_a_usage_error(pytester):
    r = suite(pytester, "--xent-impl", "numpy", "--xent-budgets", "nope.toml")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["ERROR: xent-harness: --xent-budgets: file 'nope.toml' does not exist (expected a TOML file)"])


def test_plugin_leaves_other_test_runs_alone(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.slow
        @pytest.mark.gpu
        def test_x():
            pass
    """)
    r = pytester.runpytest(*_plugin_args(), "--strict-markers")
    r.assert_outcomes(passed=1)
    r = pytester.runpytest(*_plugin_args(), "--markers")
    r.stdout.fnmatch_lines(["@pytest.mark.slow: *", "@pytest.mark.gpu: *"])


def test_plugin_import_is_light():
    import subprocess
    import sys

    code = ("import sys, harness.pytest_plugin; "
            "print(sorted(m for m in ('torch', 'jax', 'mpmath', 'gmpy2', 'harness.registry') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_third_party_invocation_in_a_subprocess(pytester):
    r = suite(pytester, "--xent-impl", f"{FAULTY}:Correct", "-k", "ordinary and float32", subprocess=True)
    r.assert_outcomes(passed=2)
