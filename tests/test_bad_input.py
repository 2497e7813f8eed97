"""Every bad input is one line on stderr, exit 2, no traceback, no temporary file left, and
nothing computed before is touched (reliability items 12, 13 and 16). Adding a case is one entry.
Paths under /proc stand for unwritable ones (the tests may run as root, who writes anywhere else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli, results

CHECK = ["check", "--impl", "numpy", "--scenario", "scale-1", "--dtype", "float32"]


def _write(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _run_dir(tmp: Path) -> Path:
    """A finished run to point reports and resumes at (made once per test)."""
    out = tmp / "done"
    assert cli.main([*CHECK, "--out", str(out)]) == 0
    return out


#: name -> (setup(tmp) -> argv, fragment of the one error line)
CASES = {
    "--out is a file": (lambda t: [*CHECK, "--out", _write(t, "f", "x")], "is a file"),
    "--out cannot be created": (lambda t: [*CHECK, "--out", "/proc/no-such/run"], "--out: cannot write to /proc/no-such/run"),
    "--timeout inf": (lambda t: [*CHECK, "--timeout", "inf", "--out", str(t / "r")], "--timeout: must be a positive"),
    "--timeout nan": (lambda t: [*CHECK, "--timeout", "nan", "--out", str(t / "r")], "--timeout: must be a positive"),
    "--workers 0": (lambda t: [*CHECK, "--workers", "0", "--out", str(t / "r")], "--workers: must be a positive"),
    "--budgets is a directory": (lambda t: [*CHECK, "--budgets", str(t), "--out", str(t / "r")], "is a directory; name a TOML file"),
    "--budgets tool = string": (lambda t: [*CHECK, "--budgets", _write(t, "b.toml", 'tool = "x"\n'), "--out", str(t / "r")],
                                "`tool` must be a table"),
    "--budgets xent-harness = 3": (lambda t: [*CHECK, "--budgets", _write(t, "b.toml", "[tool]\nxent-harness = 3\n"),
                                              "--out", str(t / "r")], "`tool.xent-harness` must be a table"),
    "--budgets binary": (lambda t: [*CHECK, "--budgets", _write(t, "b.toml", b"\xff\xfe\x00"), "--out", str(t / "r")],
                         "is not text"),
    "--known malformed TOML names the file": (lambda t: [*CHECK, "--known", _write(t, "k.toml", "a = [\n"), "--out", str(t / "r")],
                                              "k.toml is not valid TOML"),
    "--known known-failures = 5": (lambda t: [*CHECK, "--known", _write(t, "k.toml", "known-failures = 5\n"), "--out", str(t / "r")],
                                   "must be an array of tables"),
    "--known tool = 5": (lambda t: [*CHECK, "--known", _write(t, "k.toml", "tool = 5\n"), "--out", str(t / "r")],
                         "`tool` must be a table"),
    "--known cells = 7": (lambda t: [*CHECK, "--known", _write(t, "k.toml", '[[known-failures]]\ncells = 7\nreason = "x"\n'),
                                     "--out", str(t / "r")], "each entry needs cells"),
    "--known binary": (lambda t: [*CHECK, "--known", _write(t, "k.toml", b"\x89PNG\r\n\x1a\n\xff"), "--out", str(t / "r")],
                       "is not text"),
    "report -o is a directory": (lambda t: ["report", str(_run_dir(t)), "-o", str(t)], "is a directory"),
    "report -o unwritable": (lambda t: ["report", str(_run_dir(t)), "-o", "/proc/no-such/r.html"], "report: cannot write"),
    "report --markdown is a directory": (lambda t: ["report", str(_run_dir(t)), "--markdown", str(t)], "is a directory"),
    "report schema_version '1'": (lambda t: ["report", _write(t, "r.json", json.dumps(
        {"schema": results.SCHEMA, "schema_version": "1"}))], "expected an integer"),
    "report binary results": (lambda t: ["report", _write(t, "r.json", b"\x00\xff\xfe")], "is not text"),
    "resume without results or run line": (lambda t: [*CHECK, "--resume", "--out", str(_journal_only(t))],
                                           "journal does not say which run"),
    "references generate --dir unwritable": (lambda t: ["references", "generate", "--dir", "/proc/no-such/refs"],
                                             "references generate: cannot write"),
}


def _journal_only(tmp: Path) -> Path:
    (tmp / "j").mkdir()
    (tmp / "j" / results.JOURNAL).write_text('{"type": "cell"}\n')
    return tmp / "j"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    setup, fragment = CASES[case]
    argv = setup(tmp_path)
    capsys.readouterr()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in out + err
    assert err.count("\n") == 1 and fragment in err, err
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert all(p.read_bytes() == data for p, data in before.items() if p.exists())  # nothing touched


def test_a_full_disk_is_one_line_keeps_the_journal_and_the_last_results(tmp_path, monkeypatch):
    res = results.Results.open(tmp_path, {"id": "t"})
    res.add_cell({"kind": "accuracy", "impl": "a", "dtype": "float32", "scenario": "s", "status": "pass"})
    res.flush()
    good = (tmp_path / results.RESULTS).read_text()

    def no_space(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(results.ResultsError, match=r"cannot write .*No space left on device.*--resume"):
        res.flush()
    monkeypatch.undo()
    assert (tmp_path / results.RESULTS).read_text() == good
    assert not list(tmp_path.glob(".*tmp"))
    assert json.loads((tmp_path / results.JOURNAL).read_text().splitlines()[-1])["cell"]["impl"] == "a"


@pytest.mark.parametrize("kind", ["file", "symlink", "directory"])
def test_reports_latest_is_always_one_whole_run(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    latest = tmp_path / "reports" / "latest"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    if kind == "file":
        latest.write_text("x")
    elif kind == "symlink":
        latest.symlink_to(elsewhere)
    else:
        latest.mkdir()
        (latest / "stale.json").write_text("{}")
    assert cli.main(CHECK) == 0
    capsys.readouterr()
    run = next(d for d in (tmp_path / "reports").iterdir() if d.name.startswith("2"))
    assert latest.is_dir() and not latest.is_symlink()
    assert sorted(p.name for p in latest.iterdir()) == sorted(p.name for p in run.iterdir())
    assert (elsewhere / "keep.txt").read_text() == "mine"  # a link is replaced, not followed
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".latest")]


def test_configuration_comes_from_the_checked_project_only_and_is_named(tmp_path, monkeypatch, capsys):
    """A pyproject.toml in a parent folder declaring every cell known must not pass a canary."""
    (tmp_path / "pyproject.toml").write_text('[[tool.xent-harness.known-failures]]\ncells = "*/*/*/*"\nreason = "all"\n')
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    argv = ["check", "--impl", "numpy-naive", "--scenario", "scale-100", "--dtype", "float32", "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "known failures: none" in out and "budgets: defaults (harness/budgets.toml)" in out
    (project / "pyproject.toml").write_text('[tool.xent-harness.budgets.float32]\nloss_ulp = 8\n'
                                            '[[tool.xent-harness.known-failures]]\ncells = "numpy-naive/*/*/*"\nreason = "canary"\n')
    assert cli.main([*argv, "--force"]) == 0
    out = capsys.readouterr().out
    here = str(project / "pyproject.toml")
    assert f"known failures: {here}" in out and f"budgets: defaults (harness/budgets.toml) + {here}" in out
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data["known_failures_source"] == here
    assert here in (tmp_path / "r" / "report.html").read_text()



def test_a_finite_error_near_the_float_maximum_still_renders(tmp_path, capsys):
    """An output ~1e308 ULPs off is a legal (failing) result: the report draws it at the top of
    its axis instead of overflowing (it raised OverflowError, and check then left no report)."""
    data = json.loads((_run_dir(tmp_path) / results.RESULTS).read_text())
    for cell in data["cells"]:
        cell["metrics"] |= {"ulp_max": 1e308, "ulp_p99": 1e308, "ulp_median": 1e307}
    src = _write(tmp_path, "huge.json", json.dumps(data))
    assert cli.main(["report", src, "-o", str(tmp_path / "huge.html")]) == 0
    assert "Traceback" not in capsys.readouterr().err and (tmp_path / "huge.html").stat().st_size > 0
