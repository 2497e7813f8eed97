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
    # worst first
    first_pass = next(i for i, s in enumerate(statuses) if s.startswith("pass"))
    assert all(s in ("fail", "error") for s in statuses[:first_pass])
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
    assert len(page.encode()) < 2_000_000
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
    assert "**Findings**" in md
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
