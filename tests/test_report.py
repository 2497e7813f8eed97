"""The HTML report, the Markdown summary, findings and the baseline comparison (harness.report).

Built on the synthetic results of tests/report_fixtures.py (the sweep engine that writes real
results files is tested elsewhere). The browser test drives headless Chromium through its command
line only (--dump-dom after the page's own #selftest, and --screenshot), no new dependencies.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from markupsafe import escape

from harness import report
from tests.report_fixtures import (
    CANARY,
    EVIL,
    EVIL_MESSAGE,
    PLUGIN,
    implementation,
    make_results,
    scenario,
    tiny_results,
)

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("summary", "findings", "accuracy", "gradients", "special", "throughput", "details",
            "provenance")

try:  # a generous per-test limit where pytest-timeout is installed
    import pytest_timeout  # noqa: F401

    browser_timeout = pytest.mark.timeout(180)
except ImportError:  # pragma: no cover
    def browser_timeout(f):
        return f


@pytest.fixture(scope="module")
def current():
    return make_results()


@pytest.fixture(scope="module")
def baseline():
    return make_results("baseline")


@pytest.fixture(scope="module")
def page(current):
    return report.render_html(current)


@pytest.fixture(scope="module")
def page_cmp(current, baseline):
    return report.render_html(current, baseline)


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m, "embedded data missing"
    return json.loads(m.group(1))


# ----------------------------------------------------------------------------------------------
# The page


def test_sections_and_ids(page, page_cmp):
    positions = []
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
        positions.append(page.index(f'<section id="{sid}">'))
    assert positions == sorted(positions), "sections out of order"
    for eid in ("verdicts", "matrix", "findings-list", "special-table", "throughput-table",
                "details-table", "filter", "selftest-result", "report-data", "budgets-table",
                "scenarios-table"):
        assert f'id="{eid}"' in page, eid
    assert 'id="comparison"' not in page
    assert '<section id="comparison">' in page_cmp and 'id="comparison-table"' in page_cmp
    assert page.count("<svg ") >= 7  # loss x3, gradient x3, throughput
    assert page.startswith("<!doctype html>")


def test_summary_content(page, current):
    for i in current["implementations"]:
        assert str(escape(i["name"])) in page
    assert 'class="verdict verdict-fail"' in page
    assert "no CUDA device" in page and "python package &#39;cupy&#39; is not installed" in page
    assert "canary: deliberately broken, expected to fail" in page
    # matrix: symbols and words, so it reads without colour
    for word in ("pass", "fail", "error", "not supported"):
        assert word in page


def test_size_and_self_contained(page, page_cmp):
    for p in (page, page_cmp):
        assert len(p.encode()) < 2_000_000
        assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", p, re.I)
        assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", p, re.I)
        assert "<link" not in p and "@import" not in p and "<img" not in p
        assert "<iframe" not in p


def test_deterministic(page, current):
    assert report.render_html(current) == page


def test_escaping(page_cmp):
    page = page_cmp
    raw = "<script>alert(1)</script>"
    assert raw not in page and EVIL not in page
    assert "<b>" not in page
    # the names and messages are there, escaped
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;&#34;quotes&#39;" in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }} {% raw %}" in page
    # every </script> closes one of our own scripts
    assert page.count("</script>") == page.count("<script")
    # the embedded data keeps them intact, and cannot break out of its element
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert "<" not in m.group(1) and ">" not in m.group(1)
    data = json.loads(m.group(1))
    assert PLUGIN in data["impls"]
    assert EVIL_MESSAGE in data["messages"]
    # the SVG legends escape the name too
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        assert "<script" not in svg


def test_details_data(page, current):
    data = _data(page)
    cells = current["cells"]
    assert len(data["rows"]) == len(cells)
    statuses = [data["statuses"][r[4]] for r in data["rows"]]
    # worst first: new failures and errors, then the known ones, then the passes
    first_pass = next(i for i, s in enumerate(statuses) if s.startswith("pass"))
    assert all(s in ("fail", "error", "fail (known)", "error (known)")
               for s in statuses[:first_pass])
    first_known = statuses.index("fail (known)")
    assert all(s in ("fail", "error") for s in statuses[:first_known])
    assert statuses.count("fail (known)") == sum(1 for c in cells if c.get("known"))
    # every cell's anchor (as the page's script builds it) is unique
    ids = {
        "c-" + data["implSlugs"][r[0]] + "_" + data["dtypes"][r[1]] + "_" + data["kinds"][r[3]]
        + "_" + data["scenSlugs"][r[2]]
        for r in data["rows"]
    }
    assert len(ids) == len(cells)
    assert report.cell_id(PLUGIN, "float32", "accuracy", "kdim") in ids
    # the findings link to existing rows
    anchors = re.findall(r'<a class="flink" href="#([^"]+)"', page)
    assert anchors
    static_ids = set(re.findall(r' id="([^"]+)"', page))
    for a in anchors:
        assert htmllib.unescape(a) in ids | static_ids


def test_partial_and_empty_results():
    page = report.render_html({"run": {"id": "x", "complete": False}})
    assert "Incomplete run" in page and 'id="details-table"' in page
    r = _small()
    r["throughput"], r["copy"] = [], []
    del r["summary"], r["provenance"], r["budgets"]
    for c in r["cells"][:3]:
        c.pop("budget", None)
    r["cells"].append({"impl": "ghost", "dtype": "float32", "scenario": "unknown", "kind": "x"})
    page = report.render_html(r)
    assert "No throughput rows" in page and "ghost" in page
    md = report.render_markdown({})
    assert "PASS" in md


def test_write_files(tmp_path, current):
    small = _small()
    p = report.write_html(small, tmp_path / "out" / "report.html", baseline=small)
    assert p.read_text(encoding="utf-8").startswith("<!doctype html>")
    md = report.write_markdown(current, tmp_path / "summary.md")
    assert "xent-harness" in md.read_text(encoding="utf-8")
    # a results.json on disk is accepted too
    (tmp_path / "results.json").write_text(json.dumps(current), encoding="utf-8")
    assert report.findings(tmp_path / "results.json") == report.findings(current)


@pytest.mark.slow
def test_full_run_size_and_time():
    full = make_results(full=True, gpu=True, extra_impls=4)
    assert len(full["cells"]) > 9000
    t = time.process_time()
    page = report.render_html(full)
    cpu = time.process_time() - t
    # the page grows with the catalogue: at most ~120 bytes a cell over a 600 kB base (14,740
    # cells of the full space and catalogue: 2.24 MB)
    assert len(page.encode()) < 600_000 + 120 * len(full["cells"])
    assert cpu < 30, f"rendering took {cpu:.1f} s of CPU"


# ----------------------------------------------------------------------------------------------
# Findings on hand-made results


def _cell(impl, dtype, scen, kind="accuracy", status="pass", ulp=0.4, y=1.0, ref=1.0, scaled=0.1,
          rel=None, budget=(4, 64), message=None, count=16):
    metrics = {
        "count": count, "ulp_max": ulp, "ulp_median": 0.2, "ulp_p99": ulp,
        "ulp_mean": 0.2, "ulp_signed_max": ulp, "bits_max": None, "abs_max": None,
        "rel_max": rel, "normwise": None, "scaled_max": scaled, "nonfinite_mismatch": 0,
        "worst": {"index": [0], "y": y, "ref": ref, "ulp": ulp, "scaled": scaled},
    }
    return {"kind": kind, "impl": impl, "dtype": dtype, "scenario": scen, "status": status,
            "message": message, "metrics": None if status in ("error", "unsupported") else metrics,
            "budget": {"ulp": budget[0], "scaled": budget[1]}, "seconds": 0.001}


def _scenarios():
    out = [scenario(f"scale-{s:g}", "scale", "", axis=("scale", s)) for s in (1.0, 10.0, 100.0,
                                                                              1000.0)]
    out += [scenario(f"dominant-gap-{g:g}", "dominant", "", axis=("gap", g)) for g in (1.0, 20.0)]
    out += [scenario("masked-target", "masked", "", tags=("special",)),
            scenario("kdim", "shape", "")]
    return out


def _small():
    cells = []
    for s in (1.0, 10.0, 100.0, 1000.0):
        bad = s >= 100
        cells.append(_cell(CANARY, "float32", f"scale-{s:g}", status="fail" if bad else "pass",
                           ulp="nan" if bad else 0.5, y="nan" if bad else 1.0, ref=3.0,
                           scaled="inf" if bad else 0.1))
        cells.append(_cell("numpy", "float32", f"scale-{s:g}"))
    # torch with scaled = 0 budgets: returns 0 for a tiny loss -> a failure
    cells.append(_cell("torch", "float32", "dominant-gap-20", status="fail", ulp=3.1e7, y=0.0,
                       ref=2.0611536e-9, scaled=0.01, rel=1.0, budget=(4, 0)))
    cells.append(_cell("torch", "float32", "dominant-gap-1", ulp=0.6))
    # jax passes the backward-stable budget with a huge strict ULP error
    cells.append(_cell("jax", "float32", "dominant-gap-20", ulp=3.1e7, y=0.0, ref=2.06e-9,
                       scaled=0.01, rel=1.0))
    # a special-value mismatch and an error
    sp = _cell("jax", "float32", "masked-target", kind="special", status="fail")
    sp["metrics"] = {"count": 16, "mismatch": 16,
                     "examples": [{"index": [0, 3], "y": "nan", "ref": "inf"}]}
    cells.append(sp)
    cells.append(_cell("plugin", "float32", "kdim", status="error",
                       message="ValueError: bad shape\nTraceback ..."))
    impls = [implementation("numpy"), implementation(CANARY, canary=True),
             implementation("torch"), implementation("jax"), implementation("plugin")]
    return tiny_results(cells, impls=impls, scenarios=_scenarios())


def test_findings_sentences_and_order():
    fs = report.findings(_small())
    texts = [f["text"] for f in fs]
    sev = [f["severity"] for f in fs]
    assert sev == ["special", "fail", "error", "surprise", "canary"]
    assert texts[0] == ("jax float32 returns NaN where the reference is +inf at 16 of 16 inf/NaN "
                        "positions (scenario masked-target)")
    assert texts[1] == ("torch float32 returns 0 for losses below 1e-8 where the true loss is "
                        "2.06e-9 (scenario dominant-gap-20)")
    assert fs[1]["anchor"] == report.cell_id("torch", "float32", "accuracy", "dominant-gap-20")
    assert texts[2] == ("plugin float32 raises an error in 1 cell (scenario kdim): "
                        "ValueError: bad shape")
    assert texts[3].startswith("jax float32 loss passes the backward-stable budget but loses all "
                               "digits of tiny losses: 3.1e7 ULP")
    assert "(0 where the true loss is 2.06e-9; scenario dominant-gap-20)" in texts[3]
    assert texts[4] == ("numpy-naive float32 returns NaN from logit scale 100 (scenario "
                        "scale-100) — the canary, expected to fail")
    assert fs[4]["canary"] and fs[4]["anchor"] == report.cell_id(
        CANARY, "float32", "accuracy", "scale-100")
    assert [f["rank"] for f in fs] == sorted(f["rank"] for f in fs)


def test_findings_axis_phrases_and_merged_dtypes():
    cells = []
    for dtype in ("bfloat16", "float32"):
        for s in (1.0, 10.0, 100.0, 1000.0):
            bad = s in (10.0, 1000.0)
            cells.append(_cell("x", dtype, f"scale-{s:g}", status="fail" if bad else "pass",
                               ulp="inf" if bad else 0.4, y="inf" if bad else 1.0, ref=2.0))
    fs = report.findings(tiny_results(cells, scenarios=_scenarios()))
    assert [f["text"] for f in fs] == [
        "x bfloat16 and float32 overflows to inf at logit scale 10 and 1000 (scenario scale-10)"]
    assert fs[0]["dtypes"] == ["bfloat16", "float32"] and fs[0]["cells"] == 4


def test_findings_canary_not_caught_and_clean_run():
    cells = [_cell(CANARY, "float32", "kdim"), _cell("numpy", "float32", "kdim")]
    impls = [implementation("numpy"), implementation(CANARY, canary=True)]
    fs = report.findings(tiny_results(cells, impls=impls, scenarios=_scenarios()))
    assert len(fs) == 1 and "the canary numpy-naive passed every cell" in fs[0]["text"]
    assert fs[0]["anchor"] == f"impl-{CANARY}"
    assert report.findings(tiny_results([_cell("numpy", "float32", "kdim")],
                                        scenarios=_scenarios())) == []


def test_findings_on_the_synthetic_run(current):
    fs = report.findings(current)
    assert fs[0]["severity"] in ("fail", "special")
    assert not fs[0]["canary"]
    assert any(re.fullmatch(r"numpy-naive (bfloat16 and )?float32 returns NaN from logit scale "
                            r"100 \(scenario scale-100\) — the canary, expected to fail", f["text"])
               for f in fs)
    assert any(f["severity"] == "surprise" and "loses all digits of tiny losses" in f["text"]
               for f in fs)
    assert any(f["severity"] == "error" and PLUGIN in f["text"] for f in fs)
    canary_at = [i for i, f in enumerate(fs) if f["severity"] == "canary"]
    real_at = [i for i, f in enumerate(fs) if f["severity"] in ("fail", "special", "error")]
    assert max(real_at) < min(canary_at)


# ----------------------------------------------------------------------------------------------
# Comparison on hand-made results


def _tp(impl, n, median, iqr, status="ok", pas="forward"):
    b = n * 1024 * 4
    return {"impl": impl, "dtype": "float32", "N": n, "C": 1024, "pass": pas, "status": status,
            "message": None, "device": "cpu", "threads": 2, "repeats": 7, "median_s": median,
            "iqr_s": iqr, "noisy": iqr / median > 0.1 if median else False, "bytes": b,
            "gbps": b / median / 1e9 if median else None, "copy_gbps": 20.0,
            "fraction_of_copy": None, "peak_memory_bytes": None}


def _pair():
    base_cells = [
        _cell("a", "float32", "kdim", ulp=0.4),                        # -> fail: new failure
        _cell("a", "float32", "scale-1", ulp=0.6),                     # -> 3.2: error up
        _cell("a", "float32", "scale-10", ulp=0.4),                    # -> 0.45: unchanged
        _cell("a", "float32", "scale-100", ulp=3.0),                   # -> 0.4: error down
        _cell("a", "float32", "scale-1000", status="fail", ulp=1e9),   # -> pass: fixed
    ]
    cur_cells = [
        _cell("a", "float32", "kdim", status="fail", ulp=40.0, scaled=200.0),
        _cell("a", "float32", "scale-1", ulp=3.2),
        _cell("a", "float32", "scale-10", ulp=0.45),
        _cell("a", "float32", "scale-100", ulp=0.4),
        _cell("a", "float32", "scale-1000", ulp=0.5),
        _cell("a", "float32", "dominant-gap-1", ulp=0.5),               # added
    ]
    base_tp = [_tp("a", 1, 1.00, 0.01), _tp("a", 2, 1.00, 0.01), _tp("a", 4, 1.00, 0.25),
               _tp("a", 8, 1.00, 0.01), _tp("a", 16, 1.00, 0.0), _tp("a", 32, 1.00, 0.0)]
    cur_tp = [_tp("a", 1, 1.05, 0.01),   # +5 %: noise (floor 10 %)
              _tp("a", 2, 1.30, 0.02),   # +30 %: slower
              _tp("a", 4, 1.20, 0.05),   # +20 % but IQRs 25 % + 4 %: noise
              _tp("a", 8, 0.60, 0.01),   # faster
              _tp("a", 16, 1.08, 0.0),   # +8 % with no spread: still noise (10 % floor)
              _tp("a", 32, 1.12, 0.0)]   # +12 %: slower
    scen = _scenarios()
    return (tiny_results(cur_cells, throughput=cur_tp, scenarios=scen),
            tiny_results(base_cells, throughput=base_tp, scenarios=scen))


def test_compare_classification_and_order():
    cur, base = _pair()
    ch = report.compare(cur, base)
    by = {(e["type"], e.get("scenario") or e.get("N")): e for e in ch}
    assert by[("cell", "kdim")]["change"] == "new failure"
    assert by[("cell", "kdim")]["new_failure"] and by[("cell", "kdim")]["regression"]
    assert by[("cell", "scale-1")]["change"] == "error up"
    assert by[("cell", "scale-10")]["change"] == "unchanged"
    assert by[("cell", "scale-100")]["change"] == "error down"
    assert by[("cell", "scale-1000")]["change"] == "fixed"
    assert by[("cell", "dominant-gap-1")]["change"] == "added"
    assert by[("throughput", 1)]["change"] == "noise" and by[("throughput", 1)]["noise"]
    assert by[("throughput", 2)]["change"] == "slower" and by[("throughput", 2)]["regression"]
    assert by[("throughput", 4)]["change"] == "noise"
    assert by[("throughput", 4)]["threshold"] == pytest.approx(0.25 + 0.05 / 1.2)
    assert by[("throughput", 8)]["change"] == "faster"
    assert by[("throughput", 16)]["change"] == "noise"
    assert by[("throughput", 32)]["change"] == "slower"
    # regressions first, the new failure first of all; then improvements; then the rest
    assert ch[0]["new_failure"] and ch[0]["scenario"] == "kdim"
    kinds = ["reg" if e["regression"] else "imp" if e["improvement"] else "rest" for e in ch]
    assert kinds == sorted(kinds, key=["reg", "imp", "rest"].index)
    assert "new failure" in ch[0]["text"] and "pass → fail" in ch[0]["text"]


def test_compare_synthetic_baseline(current, baseline):
    ch = report.compare(current, baseline)
    assert ch[0]["change"] == "new failure"
    assert (ch[0]["impl"], ch[0]["dtype"], ch[0]["scenario"]) == (
        "torch", "bfloat16", "smoothing-0.1-none")
    changes = {(e["impl"], e["type"], e["change"]) for e in ch}
    assert ("numpy", "throughput", "slower") in changes
    assert ("jax", "throughput", "faster") in changes
    assert ("torch", "throughput", "noise") in changes
    assert (PLUGIN, "throughput", "noise") in changes
    assert ("jax", "cell", "error up") in changes and ("jax", "cell", "fixed") in changes


# ----------------------------------------------------------------------------------------------
# Markdown


def test_markdown(current, baseline):
    md = report.render_markdown(current, baseline)
    assert md.startswith("### xent-harness: ❌ FAIL")
    assert "| numpy | ✅ pass |" in md
    assert "numpy-naive | ❌ fail (canary, expected)" in md
    assert "unavailable: no CUDA device" in md
    assert "**New failures**" in md and "**Known failures**" in md
    assert "| jax | ✅ pass · 3 known |" in md
    top = report.findings(current)[0]["text"]
    assert report._md(top) in md
    assert "🆕 new failure: torch bfloat16 smoothing-0.1-none" in md
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert len(md.splitlines()) < 40
    assert "PASS" in report.render_markdown(tiny_results([_cell("numpy", "float32", "kdim")],
                                                         scenarios=_scenarios()))


def test_github_step_summary(tmp_path, monkeypatch, current):
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    md = report.render_markdown(current)
    assert report.append_github_summary(md) is True
    assert report.append_github_summary("second") is True
    text = target.read_text(encoding="utf-8")
    assert text == "earlier step\n" + md + "second\n"
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert report.append_github_summary(md) is False


# ----------------------------------------------------------------------------------------------
# Known failures: shown everywhere, labelled, never gating

TORCH_F16 = "torch sums float16 losses in float16: the batch sum overflows (cf. pytorch#85791)"
OPTAX = "optax returns +inf for a +inf logit where PyTorch gives NaN"
KNOWN = [{"cells": ["torch/float16/accuracy/scale-1000", "torch/float16/accuracy/kdim"],
          "reason": TORCH_F16},
         {"cells": ["jax/*/special/masked-target"], "reason": OPTAX},
         {"cells": ["cupy/*/*/*"], "reason": "an entry that matches nothing in this run"}]


def _known_cells(new_failure: bool = False):
    cells = [_cell("numpy", d, f"scale-{s:g}") for d in ("float16", "float32")
             for s in (1.0, 10.0, 100.0, 1000.0)]
    for s in (1.0, 10.0, 100.0):
        cells.append(_cell("torch", "float16", f"scale-{s:g}", budget=(1, 8)))
    # torch float16: overflows to inf at scale 1000 and in kdim (both documented)
    cells.append(_cell("torch", "float16", "scale-1000", status="fail", ulp="inf", y="inf",
                       ref=2534.1, scaled="inf", budget=(1, 8), count=1,
                       message="loss: 1 of 1 values are inf/NaN where the contract is finite"))
    cells[-1]["metrics"]["failing"] = 1
    cells.append(_cell("torch", "float16", "kdim", status="error",
                       message="RuntimeError: float16 overflow"))
    # jax: a documented special-value mismatch in every dtype it runs
    for d in ("float16", "float32"):
        sp = _cell("jax", d, "masked-target", kind="special", status="fail")
        sp["metrics"] = {"count": 16, "mismatch": 16,
                         "examples": [{"index": [0, 3], "y": "inf", "ref": "nan"}]}
        cells.append(sp)
        cells.append(_cell("jax", d, "scale-10", ulp=0.3))
    if new_failure:  # an undocumented failure: 12 of 32 losses outside the budgets
        c = _cell("jax", "float32", "scale-100", status="fail", ulp=40.0, scaled=200.0,
                  y=1.00001, ref=1.0, count=32)
        c["metrics"]["failing"] = 12
        cells.append(c)
    impls = [implementation("numpy"), implementation("torch"), implementation("jax"),
             implementation(CANARY, canary=True), implementation("cupy", available=False,
                                                                 reason="no CUDA device")]
    return tiny_results(cells, impls=impls, scenarios=_scenarios(), known_failures=KNOWN)


def test_known_failures_in_the_summary_and_header():
    r = _known_cells()
    assert r["summary"]["verdict"] == "pass" and r["summary"]["counts"]["known"] == 4
    page = report.render_html(r)
    # the header follows summary.verdict: known failures do not fail the run
    assert 'class="verdict verdict-pass"' in page and "PASS" in page
    assert "apart from 4 known failures (documented, not gating)" in page
    assert re.search(r'id="stat-known"[^>]*><dt>known failures</dt><dd>4<small> not gating', page)
    assert re.search(r'id="stat-fail"><dt>fail</dt><dd>0<', page)
    # the torch row: "✓ pass · 2 known", with its counts and the reason
    row = re.search(r'<tr id="impl-torch".*?</tr>', page, re.S).group(0)
    assert '<span aria-hidden="true">✓</span> pass</span>' in row
    assert '<span class="badge b-known"' in row and ">2 known</span>" in row
    nums = re.findall(r'<td class="r[^"]*">([\d,]+)</td>', row)
    assert nums == ["3", "0", "0", "2", "0"]  # pass, fail, error, known, not supported
    assert "2 known failures (not gating): torch sums float16" in htmllib.unescape(row)
    # the canary is not in this run's cells: no "NOT caught" warning for a skipped canary
    assert "NOT caught" not in page


def test_known_failures_in_the_matrix_special_values_and_provenance():
    page = report.render_html(_known_cells())
    matrix = re.search(r'<table class="matrix" id="matrix">.*?</table>', page, re.S).group(0)
    known_cells = re.findall(r'<td class="m-known[^"]*" title="([^"]*)"><a href="#details">'
                             r'<span class="ksym">✗<sub>k</sub></span><span class="n">(\d+)', matrix)
    assert len(known_cells) == 4  # torch f16 scale + shape, jax f16 + f32 masked
    titles = [htmllib.unescape(t) for t, _ in known_cells]
    assert any("1 known failure" in t and TORCH_F16 in t for t in titles)
    assert 'class="m-fail' not in matrix  # no new failure anywhere
    # the legend explains the symbol
    assert "known failure (documented, not gating)" in page
    special = re.search(r'<table class="matrix special".*?</table>', page, re.S).group(0)
    assert special.count('<span class="ksym">✗<sub>k</sub></span>') == 2
    assert htmllib.escape(OPTAX, quote=True) in special
    # provenance lists the entries with how many cells each matched (a stale one: none)
    table = re.search(r'<table class="data compact known" id="known-table">.*?</table>',
                      page, re.S).group(0)
    assert "torch/float16/accuracy/kdim" in table and "jax/*/special/masked-target" in table
    assert re.findall(r'<td class="r(?: muted)?">(\d+)', table) == ["2", "2", "0"]
    assert "(none in this run)" in table


def test_known_failures_in_findings_and_details():
    r = _known_cells(new_failure=True)
    assert r["summary"]["verdict"] == "fail"
    fs = report.findings(r)
    sev = [f["severity"] for f in fs]
    assert sev[0] == "fail" and set(sev[1:4]) == {"known"}, sev
    assert fs[0]["text"].endswith("(scenario scale-100: 12 of 32 losses)")
    assert fs[0]["known"] is None
    known = {f["text"]: f["known"] for f in fs if f["severity"] == "known"}
    assert known == {
        "torch float16 overflows to inf (scenario scale-1000)": TORCH_F16,
        "jax float16 and float32 returns +inf where the reference is NaN at 16 of 16 inf/NaN "
        "positions (scenario masked-target)": OPTAX,
        "torch float16 raises an error in 1 cell (scenario kdim): RuntimeError: float16 "
        "overflow": TORCH_F16,
    }
    page = report.render_html(r)
    assert 'class="verdict verdict-fail"' in page
    assert "jax failed: 1 new failing cell, besides 4 known failures" in page
    items = re.findall(r'<li class="f-known"><span class="ftag">known</span>.*?</li>', page, re.S)
    assert len(items) == 3
    assert all("Known failure, not gating:</strong>" in li for li in items)
    assert any(htmllib.escape(OPTAX, quote=True) in li for li in items)
    # details: statuses that tell new from known failures, the reason, the elements outside
    data = _data(page)
    st = [data["statuses"][row[4]] for row in data["rows"]]
    assert st[:5] == ["fail", "fail (known)", "fail (known)", "fail (known)", "error (known)"]
    known_rows = [row for row in data["rows"] if data["statuses"][row[4]].endswith("(known)")]
    assert len(known_rows) == 4
    assert {data["messages"][row[15]] for row in known_rows} == {TORCH_F16, OPTAX}
    first = data["rows"][0]
    assert (first[13], first[14], first[15]) == (12, 32, -1)  # 12 of 32 outside, not known
    assert 'data-q="status:known"' in page and "-status:known" in page


def test_known_failures_in_markdown():
    md = report.render_markdown(_known_cells())
    assert md.startswith("### xent-harness: ✅ PASS")
    assert "4 known failures (not gating)" in md.splitlines()[2]
    assert "| torch | ✅ pass · 2 known | 3 | 0 | 0 | 2 | 0 |" in md
    assert "**New failures**: none" in md
    assert "**Known failures** (4 cells, documented, not gating):" in md
    assert f"- torch float16 loss: kdim and scale-1000 — {report._md(TORCH_F16)}" in md
    assert f"- jax float16 and float32 special values: masked-target — {report._md(OPTAX)}" in md
    md = report.render_markdown(_known_cells(new_failure=True))
    assert md.startswith("### xent-harness: ❌ FAIL")
    new = md.split("**New failures** (1):")[1].split("**Known failures**")[0]
    assert "jax float32" in new and "12 of 32 losses" in new and "torch" not in new
    assert "| jax | ❌ fail · 2 known |" in md


def test_header_follows_the_summary_verdict():
    cells = [_cell(CANARY, "float32", "scale-1000", status="fail", ulp="nan", y="nan", ref=3.0),
             _cell("numpy", "float32", "scale-1000")]
    impls = [implementation("numpy"), implementation(CANARY, canary=True)]
    r = tiny_results(cells, impls=impls, scenarios=_scenarios())
    assert r["summary"]["verdict"] == "pass"  # the canary is expected to fail
    page = report.render_html(r)
    assert 'class="verdict verdict-pass"' in page
    assert "The canary was caught, as it should be." in page
    assert "all the canary&#39;s, expected" in page
    # `check --impl numpy-naive`: the canary named explicitly gates like any other
    r["summary"] = {"verdict": "fail", "failing": [CANARY]}
    page = report.render_html(r)
    assert 'class="verdict verdict-fail"' in page and "numpy-naive failed" in page
    assert report.render_markdown(r).startswith("### xent-harness: ❌ FAIL")
    # a canary that `check` left out: skipped, not in the matrix, no warning
    r = tiny_results([_cell("numpy", "float32", "kdim")], impls=[
        implementation("numpy"), implementation(CANARY, canary=True)], scenarios=_scenarios())
    r["implementations"][1]["verdict"] = "skipped"
    page = report.render_html(r)
    assert "NOT caught" not in page and "b-skipped" in page
    assert f"<strong>{CANARY}</strong> (skipped" in page
    matrix = re.search(r'<table class="matrix" id="matrix">.*?</table>', page, re.S).group(0)
    assert CANARY not in matrix
    assert f"| {CANARY} | ⚪ skipped: canary, left out of this gate | | | | | |" in \
        report.render_markdown(r)


def test_robust_to_awkward_real_data():
    """None/missing metrics, throughput rows with equal bytes, runs without throughput or
    without accuracy cells, unavailable implementations, known errors without metrics."""
    cells = [_cell("numpy", "float32", "scale-1"), _cell("numpy", "float32", "scale-10"),
             _cell("torch", "float32", "scale-10", status="error", message=None),
             _cell("torch", "float32", "kdim", status="unsupported", message="no kdim")]
    cells[0]["metrics"] = {"count": 16, "ulp_max": None, "worst": None, "hist": None,
                           "failing": None, "scaled_max": "nan"}
    cells[1]["metrics"]["worst"] = {"y": None, "ref": None}
    cells[1].pop("budget")
    cells[2]["known"] = "documented"
    cells.append({"impl": "numpy", "dtype": "float32", "scenario": "masked-target",
                  "kind": "special", "status": "fail", "metrics": {"examples": [None]}})
    tp = [_tp("numpy", 8, 1e-3, 1e-4), _tp("torch", 8, 2e-3, 3e-4)]
    same = dict(_tp("numpy", 8, 1.2e-3, 1e-4), N=2, C=4096)  # the same bytes, another shape
    tp += [same, dict(_tp("torch", 8, 0.0, 0.0), gbps=None, status="error", message=None),
           dict(_tp("torch", 8, 1.0, 0.1), pass_="x", status="unsupported")]
    impls = [implementation("numpy"), implementation("torch"),
             implementation("cupy", available=False, reason=None)]
    r = tiny_results(cells, impls=impls, throughput=tp, scenarios=_scenarios())
    r["copy"] = [{"device": "cpu", "dtype": "float32", "N": 8, "C": 1024, "bytes": 32768,
                  "median_s": 1e-5, "gbps": 6.5}, {"device": "cpu", "dtype": "float32"}]
    page = report.render_html(r)
    assert 'id="fig-throughput"' in page and "2×4096" in page and "8×1024" in page
    assert report.render_markdown(r)
    # no throughput (a check run) and no accuracy cells (a throughput run)
    r2 = dict(r, throughput=[], copy=[], run={"id": "c", "kinds": ["accuracy", "special"]})
    assert "did not time the implementations" in report.render_html(r2)
    r3 = dict(r, cells=[], run={"id": "t", "kinds": ["throughput"]})
    page = report.render_html(r3)
    assert "No loss cells" in page and 'id="fig-throughput"' in page


def test_report_of_a_real_run(tmp_path, monkeypatch):
    """A tiny real run through the CLI (its results file, its report) renders, and the
    canary's failures are among the findings."""
    from harness import cli

    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = tmp_path / "r"
    rc = cli.main(["run", "--quick", "--impl", "numpy", "--impl", "numpy-naive",
                   "--dtype", "float32", "--scenario", "scale-*", "--out", str(out)])
    assert rc in (0, 1)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    html_path = out / "report.html"
    assert html_path.exists()
    page = html_path.read_text(encoding="utf-8")
    fs = report.findings(results)
    naive = [f for f in fs if f["impl"] == CANARY]
    assert naive, [f["text"] for f in fs]
    for f in naive:
        assert str(escape(f["text"])) in page
        assert f'href="#{f["anchor"]}"' in page
    assert report.render_html(results) == report.render_html(out / "results.json")
    assert not [f for f in fs if f["impl"] == "numpy" and f["severity"] != "surprise"]


# ----------------------------------------------------------------------------------------------
# In a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
@browser_timeout
def test_in_headless_chromium(tmp_path, page_cmp, current):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium binary on PATH (chromium, chromium-browser or google-chrome)")
    target = tmp_path / "report.html"
    target.write_text(page_cmp, encoding="utf-8")

    def cmd(profile, *extra):
        return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={tmp_path / profile}", *extra]

    query = f"impl={CANARY} status:fail dtype:float32"
    url = target.as_uri() + "#selftest=" + urllib.parse.quote(query)
    png = tmp_path / "report.png"
    # both at once: the DOM after the page's self-test, and a screenshot of the top of the page
    dom = subprocess.Popen(cmd("p1", "--virtual-time-budget=5000", "--dump-dom", url),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    shot = subprocess.Popen(cmd("p2", "--virtual-time-budget=3000", f"--screenshot={png}",
                                "--window-size=1400,2400", target.as_uri()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out, _ = dom.communicate(timeout=120)
        shot.wait(timeout=120)
    finally:
        for p in (dom, shot):
            if p.poll() is None:
                p.kill()
    m = re.search(r'<pre id="selftest-result"[^>]*>(.*?)</pre>', out, re.S)
    assert m and m.group(1).strip(), "the page's self-test did not run"
    res = json.loads(htmllib.unescape(m.group(1)))

    cells = current["cells"]
    expected = sum(c["impl"] == CANARY and c["status"] == "fail" and c["dtype"] == "float32"
                   for c in cells)
    assert res["errors"] == []
    assert res["summary_table"] and res["matrix"] and res["details_table"]
    assert res["svg_plots"] >= 3
    assert res["rows_total"] == len(cells)
    assert 0 < expected < len(cells)
    assert res["rows_visible"] == res["rows_visible_dom"] == expected
    assert res["sorted_desc"] and res["sort_kept_rows"]
    assert res["finding_links"] > 0 and res["finding_links_missing"] == []
    assert res["rows_after_clear"] == len(cells)
    known = sum(1 for c in cells if c.get("known"))
    assert res["known_rows"] == res["known_rows_visible"] == known > 0
    assert res["new_failures_visible"] == sum(
        1 for c in cells if c["status"] in ("fail", "error") and not c.get("known"))
    # clicking the first failing verdict-matrix cell lists exactly its cells
    q = dict(t.split("=", 1) for t in res["matrix_query"].split())
    fams = {s["name"]: s["family"] for s in current["scenarios"]}
    assert q["impl"] == CANARY
    assert res["matrix_rows_visible"] == sum(
        c["impl"] == CANARY and c["dtype"] == q["dtype"] and fams[c["scenario"]] == q["family"]
        for c in cells)
    assert res["ok"] is True

    assert png.exists() and png.stat().st_size > 20_000
    keep = ROOT / "reports" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, keep / "report.png")
