"""The worst-case hunt (harness.hunt, ``xent-harness hunt``): the narrow bug it must find and
the catalogue does not, determinism, resume without re-evaluation, the saved cases replayed by
``check --cases`` and the pytest plugin, the page, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import cli, hunt, scenarios
from harness.formats import FORMATS
from harness.hunt.space import Axis, Candidate, Space, from_ordinal, ordinal, row
from tests.plugins import narrow_bug

ROOT = Path(__file__).resolve().parent.parent
NARROW = f"{ROOT / 'tests' / 'plugins' / 'narrow_bug.py'}:NarrowBug"


def _hunt(out: Path, *args: str) -> int:
    return cli.main(["hunt", "--out", str(out), "--no-catalogue", *args])


def _json(out: Path) -> dict:
    return json.loads((out / "hunt.json").read_text())


def _timeless(data: dict) -> dict:
    """hunt.json without what depends on the clock or the directory."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in ("seconds", "out", "cases")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    d = strip(data)
    d.pop("request", None)
    for p in d["pairs"]:
        p["convergence"] = [[a, c] for a, _, c in p["convergence"]]
        if "baseline" in p:
            p["baseline"]["convergence"] = [[a, c] for a, _, c in p["baseline"]["convergence"]]
    return d


@pytest.fixture(autouse=True)
def _found_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("XENT_FOUND", str(tmp_path / "no-found-cases"))


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    out = tmp_path_factory.mktemp("hunt") / "narrow"
    assert _hunt(out, "--impl", NARROW, "--dtype", "float32", "--evaluations", "128", "--top", "3") == 0
    return out


def test_the_hunt_finds_the_narrow_bug_and_uniform_sampling_does_not(narrow):
    data = _json(narrow)
    assert {(p["dtype"], p["quantity"]) for p in data["pairs"]} == {("float32", "loss"), ("float32", "grad")}
    for p in data["pairs"]:
        best = p["top"][0]
        # the worst row is inside the bug's window, the bug's size, and fails as a sweep cell
        assert narrow_bug.LO <= best["features"]["top2_gap"] <= narrow_bug.HI
        assert best["score"]["budget"] > 1 and best["cell"]["status"] == "fail"
        assert abs(best["score"]["y"] - best["score"]["ref"]) == pytest.approx(narrow_bug.ERROR, rel=1e-3)
        # the same number of uniform rows stays within budget: the strategies bought the find
        assert p["baseline"]["evaluations"] == p["evaluations"] == 128
        assert float(p["baseline"]["worst"]) < 1e6 < float(p["worst"])
        assert "gap 87." in best["words"] and "C = " in best["words"]


def test_no_catalogue_problem_reaches_the_narrow_window():
    """The plugin is numpy outside its window, so the catalogue (which numpy passes) can only
    catch it through a float32 row in the window: none has one (the slow test runs check)."""
    hits = []
    for s in scenarios.select(dtypes=["float32"]):
        if "large" in s.tags:
            continue
        x = s.problem("float32").rows()[0]
        if x.ndim == 2 and x.dtype == np.float32 and narrow_bug.in_window(x).any():
            hits.append(s.name)
    assert hits == []
    assert narrow_bug.in_window(np.array([[87.25, 0.0], [88.0, 0.0]], np.float32)).tolist() == [True, False]


@pytest.mark.slow
def test_the_fixed_catalogue_passes_the_narrow_bug(tmp_path):
    assert cli.main(["check", "--impl", NARROW, "--dtype", "float32", "--out", str(tmp_path / "run")]) == 0


def test_the_cases_replay_in_check(narrow, tmp_path, capsys):
    cases = narrow / "cases"
    assert (cases / "manifest.json").is_file()
    capsys.readouterr()
    assert cli.main(["check", "--impl", NARROW, "--cases", str(cases), "--out", str(tmp_path / "a")]) == 1
    printed = capsys.readouterr().out
    assert "found-" in printed and "outside budget" in printed
    # the correct implementation passes the same cases: the replay judges, it does not just fail
    assert cli.main(["check", "--impl", "numpy", "--cases", str(cases), "--out", str(tmp_path / "b")]) == 0


def test_the_cases_replay_in_the_pytest_plugin(narrow, tmp_path):
    from importlib import metadata

    plugin = [] if any(ep.name == "xent_harness" for ep in metadata.entry_points(group="pytest11")) else [
        "-p", "harness.pytest_plugin"]
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin,
            "--pyargs", "harness.accuracy_suite", "--xent-references", str(narrow / "cases")]
    bad = subprocess.run([*args, "--xent-impl", NARROW], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode == 1, bad.stdout[-2000:]
    assert "found-" in bad.stdout
    good = subprocess.run([*args, "--xent-impl", "numpy"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert good.returncode == 0, good.stdout[-2000:]


def test_the_page_shows_convergence_and_rows_in_words(narrow):
    html = (narrow / "hunt.html").read_text()
    assert "<svg" in html and "gap 87." in html and "uniform baseline" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_a_fixed_evaluation_count_is_deterministic(tmp_path):
    args = ("--impl", "numpy-naive", "--dtype", "bfloat16", "--quantity", "loss", "--evaluations", "96", "--top", "2",
            "--seed", "3")
    assert _hunt(tmp_path / "a", *args) == 0
    assert _hunt(tmp_path / "b", *args) == 0
    assert _timeless(_json(tmp_path / "a")) == _timeless(_json(tmp_path / "b"))
    a = (tmp_path / "a" / "journal.jsonl").read_text()
    assert a == (tmp_path / "b" / "journal.jsonl").read_text()
    # another seed searches elsewhere
    assert _hunt(tmp_path / "c", *args[:-1], "4") == 0
    assert (tmp_path / "c" / "journal.jsonl").read_text() != a


def test_resume_continues_without_re_evaluating(tmp_path):
    base = ("--impl", "numpy-naive", "--dtype", "float32", "--quantity", "grad", "--top", "2", "--no-baseline")
    assert _hunt(tmp_path / "r", *base, "--evaluations", "64") == 0
    assert _hunt(tmp_path / "r", *base, "--evaluations", "128", "--resume") == 0
    resumed = _json(tmp_path / "r")["pairs"][0]
    assert (resumed["evaluated"], resumed["replayed"], resumed["evaluations"]) == (64, 64, 128)
    # ... and it ends where an uninterrupted run of 128 ends
    assert _hunt(tmp_path / "f", *base, "--evaluations", "128") == 0
    fresh = _json(tmp_path / "f")["pairs"][0]
    assert fresh["evaluated"] == 128
    assert _timeless({"pairs": [resumed]})["pairs"][0]["top"] == _timeless({"pairs": [fresh]})["pairs"][0]["top"]
    # resuming with another seed is refused, one line
    assert _hunt(tmp_path / "r", *base, "--evaluations", "128", "--resume", "--seed", "9") == 2
    # a second run into a hunt directory without --resume is refused too
    assert _hunt(tmp_path / "r", *base, "--evaluations", "8") == 2


@pytest.mark.parametrize("args, words", [
    (["--impl", "numpy", "--seconds", "0"], "--seconds"),
    (["--impl", "numpy", "--evaluations", "0"], "--evaluations"),
    (["--impl", "numpy", "--dtype", "float8"], "--dtype"),
    (["--impl", "nosuch-impl", "--evaluations", "1"], "--impl"),
    (["--impl", NARROW, "--dtype", "float16", "--evaluations", "1"], "--dtype"),
    (["--impl", "numpy", "--evaluations", "1", "--against", "/nonexistent.json"], "--against"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, words):
    assert cli.main(["hunt", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_check_cases_needs_a_manifest(tmp_path, capsys):
    assert cli.main(["check", "--impl", "numpy", "--cases", str(tmp_path)]) == 2
    assert "--cases" in capsys.readouterr().err


def test_axes_sample_uniformly_over_bit_patterns():
    xs = [0.0, -0.0, 1e-300, -1e-300, 1.0, -2.5, 1e5, -np.inf, np.inf]
    for x in xs:
        assert from_ordinal(ordinal(x)) == x
    srt = sorted(xs)
    assert [ordinal(x) for x in srt] == sorted(ordinal(x) for x in srt)
    rng = np.random.default_rng(0)
    v = np.array([Axis("scale", 1e-6, 1e5).sample(rng) for _ in range(4000)])
    per_decade = np.histogram(np.log10(v), bins=11, range=(-6, 5))[0]
    # every decade about equally likely (a uniform draw of the values would put 90 % in the last)
    assert per_decade.min() > 0.6 * per_decade.mean()


def test_rows_are_reproducible_and_nudges_move_by_ulps():
    fmt = FORMATS["float32"]
    c = Candidate(body="normal", C=7, scale=2.0, offset=10.0, gap=87.2, target=0.5, eps=0.0, seed=11)
    x, t = row(c, fmt)
    assert np.array_equal(x, row(c, fmt)[0]) and x.dtype == np.float32 and t == 3
    assert x[t] - np.delete(x, t).max() == pytest.approx(87.2, abs=1e-4)
    y, _ = row(c.with_(nudges=((1, 3),)), fmt)
    assert np.array_equal(np.delete(x, 1), np.delete(y, 1))
    assert y[1] == np.nextafter(np.nextafter(np.nextafter(x[1], np.inf), np.inf), np.inf)
    assert Candidate.from_json(json.loads(json.dumps(c.to_json()))) == c
    for body in ("ties", "mix", "bits"):
        xb, _ = row(c.with_(body=body, offset=3e38), fmt)
        assert np.isfinite(xb).all()
    assert Space(FORMATS["bfloat16"]).uniform(np.random.default_rng(1)).C >= 1


def test_strategies_names_match_the_cli():
    assert set(hunt.STRATEGIES) == {"uniform", "bisection", "refine", "families"}
