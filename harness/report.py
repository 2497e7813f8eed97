"""The offline HTML report and the Markdown summary of a results file.

Input: a results dict as described in ``docs/results-schema.md`` (non-finite numbers may be the
strings ``"inf"``, ``"-inf"``, ``"nan"`` of the JSON file or Python floats). Output:

* :func:`render_html` / :func:`write_html`: one self-contained page (inline CSS, inline SVG plots,
  a small inline script, no network): summary and verdict matrix, findings, accuracy and gradient
  plots, special values, throughput, a sortable/filterable table of every cell, provenance, and
  the comparison with a baseline run when one is given;
* :func:`render_markdown` / :func:`write_markdown` / :func:`append_github_summary`: a few lines
  for CI logs and pull-request comments;
* :func:`findings`: plain-language sentences about the most important failures and surprises;
* :func:`compare`: per-cell error changes and per-row speed changes against a baseline.

Known failures (cells the sweep engine marked with ``"known": reason`` because they match a
``[[tool.xent-harness.known-failures]]`` entry) are shown everywhere, never hidden, but apart
from the new ones: counted under "known" (not fail/error), a ✗ₖ in the matrices, "KNOWN" with
their reason in the findings, "fail (known)" / "error (known)" in the details, their own
Markdown section. The verdict is the file's ``summary.verdict`` (canaries expected to fail,
known failures not gating). Cells' ``failing`` metric (elements outside the budgets) appears
in the findings ("12 of 32 losses") and the details ("outside").

Plots are rendered with matplotlib (imported lazily, Agg canvas, no pyplot state) as SVG with
text kept as text, a fixed hash salt and no date, so the same results give the same bytes.
The page is rendered from ``harness/templates/report.html`` (Jinja2, autoescaped,
StrictUndefined); data for the script is embedded with ``|tojson``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from types import MappingProxyType

from harness import vocabulary

__all__ = [
    "append_github_summary",
    "compare",
    "findings",
    "render_html",
    "render_markdown",
    "write_html",
    "write_markdown",
]

STATUSES = vocabulary.STATUSES[:4]
#: Per-implementation counts: a failing or erroring cell that matches a known failure
#: (``[[tool.xent-harness.known-failures]]``) is counted as "known", not as "fail" / "error".
COUNT_KEYS = vocabulary.STATUSES
KINDS = vocabulary.KINDS
DTYPE_ORDER = vocabulary.DTYPES
DTYPE_SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
PRECISION = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
AXIS_WORDS = {"scale": "logit scale", "gap": "target gap", "loc": "logit offset", "C": "C ="}
KIND_WORDS = {"accuracy": "loss", "gradient": "gradient", "special": "special values"}
#: A passing cell whose strict ULP error is this many times its ULP budget is a finding.
SURPRISE_FACTOR = 16
#: Speed changes below this fraction are noise whatever the measured spread.
MIN_NOISE = 0.10
#: A cell's error changed when it moved by this factor and by at least half an ULP.
ERROR_CHANGE_FACTOR = 1.5

# Okabe-Ito (colour-blind safe) first, then Tableau; the canary is drawn grey and dashed.
PALETTE = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
    "#8C564B", "#BCBD22", "#17BECF", "#7F3C8D", "#11A579",
)  # fmt: skip
CANARY_COLOR = "#8A8A8A"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
SYMBOL = {
    "pass": "✓",
    "fail": "✗",
    "error": "!",
    "known": "✗ₖ",
    "unsupported": "–",
    "unavailable": "⊘",
    "skipped": "○",
    "none": "",
}
STATUS_WORD = {
    "pass": "pass",
    "fail": "fail",
    "error": "error",
    "known": "known failure",
    "unsupported": "not supported",
    "unavailable": "unavailable",
    "skipped": "skipped",
    "none": "no cells",
}

# ----------------------------------------------------------------------------------------------
# Small helpers


def _num(x) -> float | None:
    """A metric value as a float: the JSON strings "inf", "-inf", "nan" decoded, None kept."""
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        s = x.strip().lower()
        if s in ("inf", "+inf", "infinity"):
            return math.inf
        if s in ("-inf", "-infinity"):
            return -math.inf
        if s == "nan":
            return math.nan
        try:
            return float(s)
        except ValueError:
            return None
    return None


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def fmt_num(x, sig: int = 3) -> str:
    """A number for people: 3 significant digits, short exponents (3.1e7), inf/NaN spelled."""
    x = _num(x)
    if x is None:
        return "–"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "−inf"
    if x == 0:
        return "0"
    if x == int(x) and abs(x) < 1e5:
        return str(int(x))
    if 1e-3 <= abs(x) < 1e5:  # no exponent where plain digits are as short: 640, not 6.4e2
        r = float(f"{x:.{sig}g}")
        return str(int(r)) if r == int(r) else f"{r:.{sig}g}"
    s = f"{x:.{sig}g}"
    return re.sub(r"e([+-])0*(\d+)", lambda m: "e" + ("-" if m[1] == "-" else "") + m[2], s)


def _value(x) -> str:
    """An output or reference value in a sentence."""
    x = _num(x)
    if x is None:
        return "?"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+inf" if x > 0 else "−inf"
    return fmt_num(x)


def _jnum(x):
    """A number for the embedded JSON: 3 significant digits, non-finite as strings."""
    x = _num(x)
    if x is None:
        return None
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e15:
        return int(x)
    return float(f"{x:.3g}")


def _slug(s: str) -> str:
    """An id fragment: the name itself when it is tame, else a cleaned name plus a short hash."""
    s = str(s)
    t = re.sub(r"[^a-z0-9.+-]+", "-", s.lower()).strip("-")[:40] or "x"
    if t != s:
        t = f"{t}-{hashlib.sha1(s.encode()).hexdigest()[:6]}"
    return t


def cell_id(impl: str, dtype: str, kind: str, scenario: str) -> str:
    """The anchor of a cell's row in the details table (the page's script builds the same)."""
    return f"c-{_slug(impl)}_{dtype}_{kind}_{_slug(scenario)}"


def throughput_id(row: Mapping) -> str:
    p = "fb" if "backward" in str(row.get("pass")) else "f"
    return f"t-{_slug(row.get('impl', ''))}_{row.get('dtype')}_{row.get('N')}x{row.get('C')}_{p}"


def _and(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _bytes(n) -> str:
    n = _num(n)
    if n is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) or v >= 100 else f"{v:.3g} {unit}"
    return f"{int(n)} B"


def _rate(x) -> str:
    """GB/s: 3 significant digits, never an exponent."""
    x = _num(x)
    if not _finite(x):
        return fmt_num(x)
    return f"{x:,.0f}" if abs(x) >= 100 else fmt_num(x)


def _seconds(s) -> str:
    s = _num(s)
    if s is None:
        return "–"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def _dtype_key(d: str):
    return (DTYPE_ORDER.index(d), d) if d in DTYPE_ORDER else (len(DTYPE_ORDER), d)


# ----------------------------------------------------------------------------------------------
# The results, indexed


class _Run:
    """A results dict with the indexes the report needs; tolerant of partial files."""

    def __init__(self, results: Mapping | None):
        r = dict(results or {})
        self.raw = r
        self.run = dict(r.get("run") or {})
        self.prov = dict(r.get("provenance") or {})
        self.budgets = dict(r.get("budgets") or {})
        self.scenarios: dict[str, dict] = {}
        for s in r.get("scenarios") or []:
            if isinstance(s, Mapping) and s.get("name") is not None:
                self.scenarios[str(s["name"])] = dict(s)
        self.cells = [self._cell(c) for c in r.get("cells") or [] if isinstance(c, Mapping)]
        self.impls: list[dict] = [dict(i) for i in r.get("implementations") or []
                                  if isinstance(i, Mapping) and i.get("name") is not None]
        known = {str(i["name"]) for i in self.impls}
        for c in self.cells:  # cells of an implementation the file does not list
            if c["impl"] not in known:
                known.add(c["impl"])
                self.impls.append({"name": c["impl"], "available": True})
        per: dict[str, Counter] = defaultdict(Counter)
        for c in self.cells:
            per[c["impl"]]["known" if c["known"] else c["status"]] += 1
        for i in self.impls:
            i["name"] = str(i["name"])
            given = i.get("counts") if isinstance(i.get("counts"), Mapping) else {}
            # the cells are the truth (a killed run's listing may lag); else the file's counts
            counts = {k: int(per[i["name"]][k] if self.cells else _num(given.get(k)) or 0)
                      for k in COUNT_KEYS}
            i["counts"] = counts
            i["canary"] = bool(i.get("canary"))
            i["available"] = i.get("available", True) is not False
            i["ran"] = bool(per[i["name"]]) or (not self.cells and sum(counts.values()) > 0)
            if not i.get("verdict"):
                i["verdict"] = ("unavailable" if not i["available"] else
                                "fail" if counts["fail"] else
                                "error" if counts["error"] else "pass")
            i["verdict"] = str(i["verdict"])
        self.impl = {i["name"]: i for i in self.impls}
        palette = iter(PALETTE * 4)
        self.color: dict[str, str] = {}
        self.marker: dict[str, str] = {}
        for k, i in enumerate(self.impls):
            self.color[i["name"]] = CANARY_COLOR if i["canary"] else next(palette)
            self.marker[i["name"]] = MARKERS[k % len(MARKERS)]
        dts = [d for d in self.run.get("dtypes") or [] if isinstance(d, str)]
        dts += [c["dtype"] for c in self.cells]
        self.dtypes = sorted(set(dts), key=_dtype_key)
        fams: list[str] = []
        for s in self.scenarios.values():
            if s.get("family") and s["family"] not in fams:
                fams.append(str(s["family"]))
        for c in self.cells:
            if c["family"] not in fams:
                fams.append(c["family"])
        self.families = fams
        self.throughput = [self._tp(t) for t in r.get("throughput") or [] if isinstance(t, Mapping)]
        self.copy = [self._tp(t) for t in r.get("copy") or [] if isinstance(t, Mapping)]
        self.summary = dict(r.get("summary") or {})
        self.known_failures = [dict(k) for k in r.get("known_failures") or []
                               if isinstance(k, Mapping)]
        self.by_key = {(c["impl"], c["dtype"], c["scenario"], c["kind"]): c for c in self.cells}

    def _cell(self, c: Mapping) -> dict:
        scen = str(c.get("scenario", ""))
        s = self.scenarios.get(scen, {})
        axis = s.get("axis")
        axis = (str(axis[0]), _num(axis[1])) if isinstance(axis, list | tuple) and len(axis) == 2 \
            else None
        metrics = c.get("metrics")
        out = {
            "impl": str(c.get("impl", "?")),
            "dtype": str(c.get("dtype", "?")),
            "scenario": scen,
            "kind": str(c.get("kind", "accuracy")),
            "status": c.get("status") if c.get("status") in STATUSES else "error",
            "message": None if c.get("message") is None else str(c.get("message")),
            "known": None,
            "metrics": _decode(metrics) if isinstance(metrics, Mapping) else None,
            "budget": {k: _num(v) for k, v in (c.get("budget") or {}).items()},
            "family": str(s.get("family") or scen.rsplit("-", 1)[0] or "?"),
            "axis": axis,
            "seconds": _num(c.get("seconds")),
        }
        if c.get("known") and out["status"] in ("fail", "error"):
            out["known"] = str(c["known"]) if c["known"] is not True else "known failure"
        out["id"] = cell_id(out["impl"], out["dtype"], out["kind"], scen)
        return out

    @staticmethod
    def _tp(t: Mapping) -> dict:
        out = dict(t)
        for k in ("N", "C", "bytes", "median_s", "iqr_s", "gbps", "copy_gbps", "fraction_of_copy",
                  "peak_memory_bytes", "repeats", "threads"):
            if k in out:
                out[k] = _num(out[k])
        out["impl"] = str(out.get("impl", "?"))
        out["status"] = str(out.get("status") or "ok")
        out["id"] = throughput_id(out)
        return out

    def m(self, c: dict, key: str) -> float | None:
        return _num((c["metrics"] or {}).get(key))

    def is_canary(self, impl: str) -> bool:
        return bool(self.impl.get(impl, {}).get("canary"))

    def available_impls(self) -> list[dict]:
        """The implementations this run tested: available ones, less those it left out
        (``check`` skips the canary), plus any with cells."""
        have = {c["impl"] for c in self.cells}
        return [i for i in self.impls if i["name"] in have
                or (i["available"] and i["verdict"] != "skipped")]

    def verdict(self) -> str:
        """The run's verdict: ``summary.verdict`` (canaries expected to fail, known failures
        not gating), else recomputed the same way from the cells."""
        v = self.summary.get("verdict")
        if v in ("pass", "fail"):
            return v
        bad = any(c["status"] in ("fail", "error") and not c["known"]
                  and not self.is_canary(c["impl"]) for c in self.cells)
        return "fail" if bad else "pass"

    def counts(self) -> dict[str, int]:
        """Cells per status; known failures and errors under "known" only."""
        got = Counter("known" if c["known"] else c["status"] for c in self.cells)
        return {k: got[k] for k in COUNT_KEYS}


def _decode(obj):
    if isinstance(obj, Mapping):
        return {k: (v if k == "index" else _decode(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, str):
        v = _num(obj)
        return obj if v is None else v
    return obj


def _as_run(results) -> _Run:
    if isinstance(results, _Run):
        return results
    if isinstance(results, str | os.PathLike):
        results = json.loads(Path(results).read_text(encoding="utf-8"))
    return _Run(results)


# ----------------------------------------------------------------------------------------------
# Findings


def _mode(run: _Run, c: dict) -> tuple[str, float | None, float | None]:
    """How a cell's worst element went wrong: nan, inf, zero (y = 0, ref != 0) or off."""
    w = (c["metrics"] or {}).get("worst") or {}
    y, ref = _num(w.get("y")), _num(w.get("ref"))
    if y is not None and math.isnan(y) and (ref is None or not math.isnan(ref)):
        return "nan", y, ref
    if y is not None and math.isinf(y) and (ref is None or math.isfinite(ref)):
        return "inf", y, ref
    if y == 0 and ref not in (None, 0.0) and _finite(ref):
        return "zero", y, ref
    return "off", y, ref


def _axis_phrase(values: list[float], failing: list[float], axis_name: str) -> str:
    word = AXIS_WORDS.get(axis_name, axis_name)
    sep = " "
    vals = sorted(v for v in values if v is not None)
    bad = sorted(v for v in failing if v is not None)
    if len(bad) < 2:
        return ""  # the scenario named in the sentence says it
    if bad == vals:
        return f"at every {word.rstrip(' =')} tested"
    if len(vals) >= 3 and len(bad) >= 2 and bad == vals[len(vals) - len(bad):]:
        return f"from {word}{sep}{fmt_num(bad[0])}"
    if len(vals) >= 3 and len(bad) >= 2 and bad == vals[: len(bad)]:
        return f"up to {word}{sep}{fmt_num(bad[-1])}"
    shown = [fmt_num(v) for v in bad[:4]] + (["…"] if len(bad) > 4 else [])
    return f"at {word}{sep}{_and(shown)}"


def _subject(run: _Run, impl: str, dtypes: Iterable[str]) -> str:
    dts = sorted(set(dtypes), key=_dtype_key)
    return f"{impl} {_and(dts)}".strip()


def findings(results) -> list[dict]:
    """The most important failures and surprises as sentences, worst first.

    Each finding: ``text`` (one sentence), ``severity`` (fail | error | special | known |
    surprise | canary), ``rank`` (smaller is worse), ``impl``, ``dtypes``, ``kind``,
    ``scenario`` (the example the sentence names), ``anchor`` (the id of its row in the HTML
    report), ``cells`` (how many cells it summarises), ``canary`` (True for the canary's own)
    and ``known`` (the documented reason of a known failure, else None).

    Known failures (cells matching ``[[tool.xent-harness.known-failures]]``) stay findings,
    with severity "known" and their reason, ranked after the new failures and errors.
    """
    run = _as_run(results)
    out: list[dict] = []

    def add(severity, rank, text, *, impl, dtypes=(), kind=None, scenario=None, anchor=None,
            cells=1, known=None):
        canary = run.is_canary(impl) if impl else False
        if known and severity in ("fail", "error", "special"):
            severity, rank = "known", (3, *rank[1:])
        elif canary and severity in ("fail", "error", "special"):
            text += " — the canary, expected to fail"
            severity, rank = "canary", (5, *rank[1:])
        out.append({"severity": severity, "rank": rank, "text": text, "impl": impl,
                    "dtypes": sorted(set(dtypes), key=_dtype_key), "kind": kind,
                    "scenario": scenario, "anchor": anchor, "cells": cells, "canary": canary,
                    "known": known})

    # 0. a canary that passes: the harness missed a deliberately broken implementation
    for i in run.impls:
        if i["canary"] and i["available"] and i["verdict"] == "pass" and i["counts"]["pass"]:
            add("fail", (0, 0.0), f"the canary {i['name']} passed every cell: the harness did not "
                "catch a deliberately broken implementation", impl="",
                anchor=f"impl-{_slug(i['name'])}", cells=i["counts"]["pass"])

    # 1. failing accuracy / gradient cells: one finding per axis sweep (dtypes with the same
    #    story merged), else per scenario (dtypes merged)
    tested: dict[tuple, set] = defaultdict(set)
    for c in run.cells:
        if c["axis"] is not None and c["status"] in ("pass", "fail"):
            tested[(c["impl"], c["kind"], c["family"], c["dtype"])].add(c["axis"][1])
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in run.cells:
        if c["status"] != "fail" or c["kind"] == "special":
            continue
        mode = _mode(run, c)[0]
        if c["axis"] is not None:
            fam_cells = (c["impl"], c["kind"], c["family"], c["dtype"])
            key = ("axis", c["impl"], c["kind"], mode, c["family"], c["known"], fam_cells)
        else:
            key = ("scen", c["impl"], c["kind"], mode, c["scenario"], c["known"], None)
        groups[key].append(c)
    merged: dict[tuple, list[dict]] = defaultdict(list)
    for key, cs in groups.items():
        where = ""
        if key[0] == "axis":
            where = _axis_phrase(list(tested[key[6]]), [c["axis"][1] for c in cs],
                                 cs[0]["axis"][0])
        merged[(*key[:6], where)].extend(cs)
    for (scope, impl, kind, mode, _, known, where), cs in merged.items():
        cs.sort(key=lambda c: (_dtype_key(c["dtype"]), c["axis"][1] if c["axis"] else 0.0))
        worst = max(cs, key=lambda c: _log(run.m(c, "ulp_max")))
        example = cs[0] if scope == "axis" else worst
        _, y, ref = _mode(run, example)
        q = KIND_WORDS.get(kind, kind)
        grad = kind == "gradient"
        if mode == "nan":
            what = "gradient is NaN" if grad else "returns NaN"
        elif mode == "inf":
            what = "gradient overflows to inf" if grad else "overflows to inf"
        elif mode == "zero":
            refs = [abs(r) for c in cs if (r := _mode(run, c)[2]) is not None and _finite(r)]
            top = max(refs) if refs else abs(ref or 0)
            bound = 10.0 ** math.ceil(math.log10(top)) if top > 0 else 0
            noun = "entries" if grad else "losses"
            what = (f"{'gradient is' if grad else 'returns'} 0 for {noun} below "
                    f"{fmt_num(bound, 1)} where the true {q} is {_value(ref)}")
        else:
            u = run.m(worst, "ulp_max")
            sc = run.m(worst, "scaled_max")
            b = worst["budget"]
            in_dt = f" in {worst['dtype']}" if len({c["dtype"] for c in cs}) > 1 else ""
            what = (f"{q} is {fmt_num(u, 2)} ULP off{in_dt} (scaled {fmt_num(sc, 2)}; budgets "
                    f"{fmt_num(b.get('ulp'))} ULP, {fmt_num(b.get('scaled'))} scaled)")
            wy, wref = _mode(run, worst)[1:]
            if wy is not None and wref is not None:
                what += f": {_value(wy)} where the true {q} is {_value(wref)}"
        dtypes = [c["dtype"] for c in cs]
        text = (f"{_subject(run, impl, dtypes)} {what}{' ' + where if where else ''} "
                f"(scenario {example['scenario']}{_share(run, example)})")
        mag = math.inf if mode in ("nan", "inf") else (run.m(worst, "ulp_max") or 0.0)
        tier_mode = {"nan": 0, "inf": 1, "zero": 2, "off": 3}[mode]
        add("fail", (1, tier_mode, -_log(mag), -len(cs)), text, impl=impl, dtypes=dtypes,
            kind=kind, scenario=example["scenario"], anchor=example["id"], cells=len(cs),
            known=known)

    # 2. special-value mismatches: per implementation and scenario, dtypes merged
    sgroups: dict[tuple, list[dict]] = defaultdict(list)
    for c in run.cells:
        if c["kind"] != "special" or c["status"] != "fail":
            continue
        ex = ((c["metrics"] or {}).get("examples") or [{}])[0]
        if not isinstance(ex, Mapping):
            ex = {}
        sgroups[(c["impl"], c["scenario"], _value(ex.get("y")), _value(ex.get("ref")),
                 c["known"])].append(c)
    for (impl, scen, y, ref, known), cs in sgroups.items():
        c0 = cs[0]
        mism = int(run.m(c0, "mismatch") or 0)
        count = int(run.m(c0, "count") or 0)
        if y != "?" and ref != "?":
            what = f"returns {y} where the reference is {ref}"
        else:
            what = "gets special values wrong"
        text = (f"{_subject(run, impl, [c['dtype'] for c in cs])} {what} at {mism} of {count} "
                f"inf/NaN positions (scenario {scen})")
        add("special", (1, 1.5, -float(mism), -len(cs)), text, impl=impl,
            dtypes=[c["dtype"] for c in cs], kind="special", scenario=scen, anchor=c0["id"],
            cells=len(cs), known=known)

    # 3. errors: per implementation and message
    egroups: dict[tuple, list[dict]] = defaultdict(list)
    for c in run.cells:
        if c["status"] == "error":
            msg = ((c["message"] or "").strip().splitlines() or ["unknown error"])[0][:200]
            egroups[(c["impl"], msg, c["known"])].append(c)
    for (impl, msg, known), cs in egroups.items():
        scen = sorted({c["scenario"] for c in cs})
        dts = [c["dtype"] for c in cs]
        cells = f"{len(cs)} cell{'s' if len(cs) != 1 else ''}"
        text = (f"{_subject(run, impl, dts)} raises an error in {cells} (scenario "
                f"{_and(scen[:3])}{', …' if len(scen) > 3 else ''}): {msg}")
        add("error", (2, -float(len(cs))), text, impl=impl, dtypes=dts, kind=cs[0]["kind"],
            scenario=cs[0]["scenario"], anchor=cs[0]["id"], cells=len(cs), known=known)
    for t in run.throughput:
        if t["status"] == "error":
            msg = (str(t.get("message") or "").strip().splitlines() or ["unknown error"])[0][:200]
            text = (f"{t['impl']} {t.get('dtype')} throughput ({t.get('pass')}, "
                    f"{fmt_num(t.get('N'))}×{fmt_num(t.get('C'))}) raises an error: {msg}")
            add("error", (2, 0.0), text, impl=t["impl"], dtypes=[str(t.get("dtype"))],
                kind="throughput", anchor=t["id"])

    # 4. surprises: passing cells far above the strict ULP budget (passed by the scaled one),
    #    per implementation, kind and family, dtypes merged
    sur: dict[tuple, list[dict]] = defaultdict(list)
    for c in run.cells:
        if c["status"] != "pass" or c["kind"] == "special":
            continue
        u, b = run.m(c, "ulp_max"), c["budget"].get("ulp")
        if u is None or not math.isfinite(u) or b is None:
            continue
        if u > SURPRISE_FACTOR * max(b, 1.0):
            sur[(c["impl"], c["kind"], c["family"])].append(c)

    def lost(c):  # fraction of the significand's bits lost, then ULPs
        u = run.m(c, "ulp_max") or 0.0
        bits = run.m(c, "bits_max") or math.log2(1 + u)
        return (min(bits / PRECISION.get(c["dtype"], 53), 1.0), u)

    for (impl, kind, fam), cs in sur.items():
        worst = max(cs, key=lost)
        u = run.m(worst, "ulp_max") or 0.0
        rel = run.m(worst, "rel_max")
        mode, y, ref = _mode(run, worst)
        dtypes = sorted({c["dtype"] for c in cs}, key=_dtype_key)
        p = PRECISION.get(worst["dtype"])
        noun = "tiny losses" if kind == "accuracy" else "small gradient entries"
        if mode == "zero" or (rel is not None and rel >= 0.5):
            how = f"loses all digits of {noun}: {fmt_num(u, 2)} ULP"
        else:
            bits = run.m(worst, "bits_max") or math.log2(1 + u)
            how = f"loses {bits:.0f}{f' of {p}' if p else ''} bits: {fmt_num(u, 2)} ULP"
        if len(dtypes) > 1:
            how += f" in {worst['dtype']}"
        detail = [f"scenario {worst['scenario']}"]
        w_ulp = _num(((worst["metrics"] or {}).get("worst") or {}).get("ulp"))
        if y is not None and ref is not None and (w_ulp is None or w_ulp >= u / 2):
            detail.insert(0, f"{_value(y)} where the true {KIND_WORDS.get(kind, kind)} is {_value(ref)}")
        if len(cs) > 1:
            detail.append(f"{len(cs)} cells in {fam}")
        text = (f"{_subject(run, impl, dtypes)} {KIND_WORDS.get(kind, kind)} passes the backward-stable "
                f"budget but {how} ({'; '.join(detail)})")
        frac, _ = lost(worst)
        rank = (4 if not run.is_canary(impl) else 6, -round(frac, 2), -_log(u), -len(cs))
        add("surprise", rank, text, impl=impl, dtypes=dtypes, kind=kind,
            scenario=worst["scenario"], anchor=worst["id"], cells=len(cs))

    out.sort(key=lambda f: (f["rank"], f["text"]))
    return out


def _share(run: _Run, c: dict) -> str:
    """": 12 of 32 losses" (elements outside the budget) when the cell has more than one."""
    failing, count = run.m(c, "failing"), run.m(c, "count")
    if not (_finite(failing) and _finite(count)) or count <= 1 or failing <= 0:
        return ""
    noun = "losses" if c["kind"] == "accuracy" else "gradient entries"
    return f": {fmt_num(failing)} of {fmt_num(count)} {noun}"


def _log(x: float | None) -> float:
    """log10 for ranking: no value lowest, NaN and inf highest."""
    if x is None:
        return -400.0
    if math.isnan(x):
        return 400.0
    if math.isinf(x):
        return 400.0
    return math.log10(x) if x > 0 else -400.0


# ----------------------------------------------------------------------------------------------
# Comparison with a baseline run

_ORDER = {
    "new failure": 0, "new error": 0, "error up": 1, "slower": 1, "special up": 1, "fixed": 2,
    "error down": 3, "faster": 3, "special down": 3, "noise": 4, "added": 5, "removed": 6,
    "still failing": 7, "unchanged": 8,
}  # fmt: skip


def _rel_iqr(t: dict) -> float:
    med, iqr = t.get("median_s"), t.get("iqr_s")
    if _finite(med) and _finite(iqr) and med > 0:
        return iqr / med
    return 0.0


def compare(results, baseline) -> list[dict]:
    """Per-cell change of the error (ulp_max) and per-throughput-row change of the speed.

    Each entry: ``type`` (cell | throughput), the key fields, ``before`` / ``after`` (ulp_max,
    or for special cells the mismatch count, or the median seconds), ``before_status`` /
    ``after_status``, ``change`` (new failure | new error | error up | special up | slower |
    fixed | error down | special down | faster | added | removed | still failing | noise |
    unchanged), ``regression``, ``improvement``, ``new_failure``, ``noise``, ``ratio``
    (after / before), ``text`` and ``anchor``. Regressions come first, new failures first
    among them, then improvements, then the rest.

    A cell's error changed when it moved by a factor of 1.5 and by more than half an ULP.
    A speed change is noise when ``|after/before - 1|`` (median times) is within
    max(10 %, IQR/median of the baseline + IQR/median of this run).
    """
    cur, base = _as_run(results), _as_run(baseline)
    out: list[dict] = []
    keys = list(cur.by_key) + [k for k in base.by_key if k not in cur.by_key]
    bad = ("fail", "error")
    for key in keys:
        a, b = base.by_key.get(key), cur.by_key.get(key)
        impl, dtype, scen, kind = key
        e = {"type": "cell", "impl": impl, "dtype": dtype, "scenario": scen, "kind": kind,
             "before_status": a["status"] if a else None,
             "after_status": b["status"] if b else None,
             "anchor": b["id"] if b else None}
        metric = "mismatch" if kind == "special" else "ulp_max"
        before = base.m(a, metric) if a and a["metrics"] else None
        after = cur.m(b, metric) if b and b["metrics"] else None
        e["before"], e["after"] = before, after
        if a is None:
            change = "new failure" if b["status"] == "fail" else (
                "new error" if b["status"] == "error" else "added")
        elif b is None:
            change = "removed"
        elif b["status"] in bad and a["status"] not in bad:
            change = "new failure" if b["status"] == "fail" else "new error"
        elif a["status"] in bad and b["status"] not in bad:
            change = "fixed"
        else:
            change = _error_change(before, after, kind)
            if a["status"] in bad and change == "unchanged":
                change = "still failing"
        out.append(_finish(e, change, before, after))

    def tkey(t):
        return (t["impl"], str(t.get("dtype")), t.get("N"), t.get("C"), str(t.get("pass")),
                str(t.get("device")))

    bt = {tkey(t): t for t in base.throughput}
    ct = {tkey(t): t for t in cur.throughput}
    for k in list(ct) + [k for k in bt if k not in ct]:
        a, b = bt.get(k), ct.get(k)
        e = {"type": "throughput", "impl": k[0], "dtype": k[1], "N": k[2], "C": k[3],
             "pass": k[4], "device": k[5], "before_status": a["status"] if a else None,
             "after_status": b["status"] if b else None, "anchor": b["id"] if b else None}
        before = a.get("median_s") if a else None
        after = b.get("median_s") if b else None
        threshold = max(MIN_NOISE, (_rel_iqr(a) if a else 0) + (_rel_iqr(b) if b else 0))
        e["threshold"] = threshold
        e["before_gbps"] = a.get("gbps") if a else None
        e["after_gbps"] = b.get("gbps") if b else None
        if a is None:
            change = "new error" if b["status"] == "error" else "added"
        elif b is None:
            change = "removed"
        elif b["status"] == "error" and a["status"] != "error":
            change = "new error"
        elif a["status"] == "error" and b["status"] != "error":
            change = "fixed"
        elif _finite(before) and _finite(after) and before > 0:
            rel = after / before - 1
            change = "noise" if abs(rel) <= threshold else ("slower" if rel > 0 else "faster")
            if rel == 0:
                change = "unchanged"
        else:
            change = "unchanged"
        out.append(_finish(e, change, before, after))
    out.sort(key=lambda e: (_ORDER[e["change"]], -abs(_log(e["ratio"]) if e["ratio"] else 0),
                            e["type"], e["impl"], str(e.get("dtype")), str(e.get("scenario"))))
    return out


def _error_change(before, after, kind) -> str:
    if before is None or after is None:
        return "unchanged"
    if kind == "special":
        return ("special up" if after > before else "special down") if after != before \
            else "unchanged"
    nb, na = math.isnan(before), math.isnan(after)
    if nb or na:
        return "unchanged" if nb and na else ("error up" if na else "error down")
    if math.isinf(before) or math.isinf(after):
        if before == after:
            return "unchanged"
        return "error up" if after > before else "error down"
    if after > before * ERROR_CHANGE_FACTOR and after - before > 0.5:
        return "error up"
    if before > after * ERROR_CHANGE_FACTOR and before - after > 0.5:
        return "error down"
    return "unchanged"


def _finish(e: dict, change: str, before, after) -> dict:
    e["change"] = change
    e["new_failure"] = change in ("new failure", "new error")
    e["regression"] = _ORDER[change] <= 1
    e["improvement"] = _ORDER[change] in (2, 3)
    e["noise"] = change == "noise"
    ratio = None
    if _finite(before) and _finite(after) and before > 0:
        ratio = after / before
    e["ratio"] = ratio
    if e["type"] == "cell":
        what = f"{e['impl']} {e['dtype']} {e['scenario']} ({KIND_WORDS.get(e['kind'], e['kind'])})"
        unit = " mismatches" if e["kind"] == "special" else " ULP"
        nums = f"{fmt_num(before)}{unit} → {fmt_num(after)}{unit}"
        if e["before_status"] != e["after_status"]:
            nums += f", {e['before_status'] or 'absent'} → {e['after_status'] or 'absent'}"
    else:
        what = (f"{e['impl']} {e['dtype']} {e['pass']} {fmt_num(e['N'])}×{fmt_num(e['C'])} "
                f"({e['device']})")
        nums = f"{_seconds(before)} → {_seconds(after)}"
        if ratio:
            nums += f" ({(ratio - 1) * 100:+.0f} % time, noise ±{e['threshold'] * 100:.0f} %)"
    e["text"] = f"{change}: {what}: {nums}"
    return e


# ----------------------------------------------------------------------------------------------
# Plots


def _svg(fig, salt: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"xent-harness-{salt}", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    s = buf.getvalue()
    s = s[s.index("<svg"):]
    s = re.sub(r"<metadata>.*?</metadata>\s*", "", s, flags=re.S)
    s = re.sub(r"font-family:[^;\"]*;?\s*", "", s)  # the page's CSS sets the font
    s = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', s, count=1)
    # never wider than its natural size (CSS: 96 px per inch): a one-panel figure stretched
    # to the page's width would have three-times-larger text than its neighbours
    natural = round(fig.get_size_inches()[0] * 96)
    s = s.replace("<svg ", f'<svg class="plot" role="img" aria-label="{salt} plot" '
                           f'style="max-width: {natural}px" ', 1)
    return _minify_svg(s)


def _short(m: re.Match) -> str:
    v = re.sub(r"(\d\.\d\d)\d+", r"\1", m[2])  # 6 decimals -> 2
    v = re.sub(r"(\d)\.(\d*?)0+\b", lambda n: n[1] + ("." + n[2] if n[2] else ""), v)
    return m[1] + re.sub(r"\s+", " ", v).strip() + '"'


def _hoist(m: re.Match) -> str:
    """A group of marker <use>s sharing one style: the style once, on the group."""
    styles = set(re.findall(r' style="([^"]*)"', m[2]))
    if len(styles) != 1 or m[2].count("<use ") < 2:
        return m[0]
    st = styles.pop()
    return f'<g{m[1]} style="{st}">' + m[2].replace(f' style="{st}"', "") + "</g>"


def _minify_svg(s: str) -> str:
    """Smaller inline SVG: no indentation, no identity rotations, no group ids (which would
    also repeat across the page's figures), 2-decimal coordinates in geometry attributes only
    (never in text), compact style attributes."""
    s = re.sub(r">\s+<", "><", s)
    s = re.sub(r' transform="rotate\(-?0 [^)]*\)"', "", s)
    s = re.sub(r'<g id="[^"]*"', "<g", s)
    s = re.sub(r'( (?:d|x|y|transform|points|width|height)=")([^"]*)"', _short, s)
    s = re.sub(r'<g((?: clip-path="[^"]*")?)>((?:<use [^>]*/>)+)</g>', _hoist, s)
    return re.sub(r' style="([^"]*)"',
                  lambda m: ' style="' + re.sub(r"\s*([:;])\s*", r"\1", m[1]).rstrip(";") + '"', s)


FAIL_MARK = "#1f2328"
KNOWN_MARK = "#4b5d80"


def _nonfinite_out(c: dict) -> bool:
    """The cell's worst output is inf/NaN where the reference is finite, or some output is
    non-finite where the reference is not (its ULP figure then measures a clamped value)."""
    m = c["metrics"] or {}
    w = m.get("worst") if isinstance(m.get("worst"), Mapping) else {}
    y, ref = _num(w.get("y")), _num(w.get("ref"))
    if y is not None and not math.isfinite(y) and _finite(ref):
        return True
    return (_num(m.get("nonfinite_mismatch")) or 0) > 0


def _label(name: str, n: int = 38) -> str:
    name = name.replace("$", r"\$")
    return name if len(name) <= n else name[: n - 1] + "…"


class _Plotter:
    """Matplotlib figures of a run, as inline SVG strings."""

    RC = MappingProxyType({
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "font.size": 9.0,
        "axes.titlesize": 10.0,
        "axes.labelsize": 9.0,
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#57606a",
        "axes.grid": True,
        "grid.color": "#d8dee4",
        "grid.linewidth": 0.6,
        "xtick.color": "#424a53",
        "ytick.color": "#424a53",
        "legend.frameon": False,
        "legend.fontsize": 9.0,
        "lines.linewidth": 1.4,
        "lines.markersize": 5.5,
        "svg.fonttype": "none",
        "path.simplify": True,
        "figure.dpi": 72,
    })

    def __init__(self, run: _Run):
        self.run = run

    def render(self) -> dict[str, str]:
        import matplotlib

        out: dict[str, str] = {}
        with matplotlib.rc_context(dict(self.RC)):
            for kind in ("accuracy", "gradient"):
                for axis, xlabel in (("scale", "logit scale σ (logits = σ·N(0, 1))"),
                                     ("gap", "target gap (target logit − max other logit)")):
                    svg = self.error_vs_axis(kind, axis, xlabel)
                    if svg:
                        out[f"{kind}-{axis}"] = svg
                svg = self.distribution(kind)
                if svg:
                    out[f"{kind}-dist"] = svg
            svg = self.throughput()
            if svg:
                out["throughput"] = svg
        return out

    # -- helpers

    def _figure(self, ncols: int, nrows: int, impls: list[str], extra: list,
                panel_h: float = 2.5, xlabel_h: float = 0.52):
        """A figure with a fixed, computed layout (no layout engine: half the drawing time):
        the legend on top in as many columns as fit, panels below, nothing overlapping."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        handles, labels = [], []
        for name in impls:
            handles.append(Line2D([], [], color=self.run.color[name], marker=self.run.marker[name],
                                  markerfacecolor="white", markeredgewidth=1.3,
                                  linestyle=self._ls(name)))
            labels.append(_label(name) + (" (canary)" if self.run.is_canary(name) else ""))
        for h, lab in extra:
            handles.append(h)
            labels.append(lab)
        width = 12.0 if ncols > 2 else (11.0 if ncols == 2 else 6.5)
        # DejaVu Sans 9 pt: ~0.075 in per character; handle + padding + spacing ~0.62 in.
        # One row when every entry fits (columns as wide as their own labels), else a grid
        # of columns as wide as the longest label.
        widths = [0.62 + 0.075 * len(lab) for lab in labels]
        if sum(widths) <= width - 0.3:
            ncol = len(labels)
        else:
            ncol = max(1, min(len(labels), int((width - 0.3) // max(widths))))
        lrows = math.ceil(len(labels) / ncol)
        legend_h, title_h = 0.1 + 0.2 * lrows, 0.36
        height = legend_h + nrows * (panel_h + title_h) + (nrows - 1) * xlabel_h + xlabel_h
        left, right, gap = 0.9, 0.25, 0.34
        panel_w = (width - left - right - gap * (ncols - 1)) / ncols
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=left / width, right=1 - right / width,
                            top=1 - (legend_h + title_h) / height, bottom=xlabel_h / height,
                            wspace=gap / panel_w, hspace=(title_h + xlabel_h) / panel_h)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.06 / height),
                   ncol=ncol, handlelength=2.4, columnspacing=1.4, borderaxespad=0.0)
        return fig, axes

    def _ls(self, name: str) -> str:
        return (0, (4, 2)) if self.run.is_canary(name) else "-"

    @staticmethod
    def _dodge(fig, ax, k: int, n: int):
        from matplotlib.transforms import offset_copy

        step = min(1.8, 12.0 / max(n - 1, 1))  # at most 12 points between the outermost
        return offset_copy(ax.transData, fig=fig, x=(k - (n - 1) / 2) * step, y=0, units="points")

    def _impls_with(self, cells: list[dict]) -> list[str]:
        have = {c["impl"] for c in cells}
        return [i["name"] for i in self.run.impls if i["name"] in have]

    # -- (a), (b), (d): error vs an axis

    def error_vs_axis(self, kind: str, axis: str, xlabel: str) -> str | None:
        from matplotlib.lines import Line2D

        run = self.run
        cells = [c for c in run.cells if c["kind"] == kind and c["axis"] is not None
                 and c["axis"][0] == axis and _finite(c["axis"][1])]
        if not cells:
            return None
        dtypes = [d for d in run.dtypes if any(c["dtype"] == d for c in cells)]
        impls = self._impls_with(cells)
        floor = 1e-3
        vals = [run.m(c, "ulp_max") for c in cells if c["metrics"] and not _nonfinite_out(c)]
        finite = [v for v in vals if _finite(v)]
        budgets = [c["budget"].get("ulp") or 0 for c in cells]
        top = max([*finite, *budgets, 10.0])
        l1 = math.ceil(math.log10(top) + 0.05)
        inf_y = 10.0 ** (l1 + 1.3)
        xs_all = sorted({c["axis"][1] for c in cells})
        extra = [(Line2D([], [], color="#57606a", linestyle=(0, (2, 2)), linewidth=1.0),
                  "strict ULP budget")]
        if any(c["status"] == "fail" and not c["known"] for c in cells):
            extra.append((Line2D([], [], linestyle="none", marker="x", color=FAIL_MARK,
                                 markersize=7, markeredgewidth=1.6), "cell failed"))
        if any(c["status"] == "fail" and c["known"] for c in cells):
            extra.append((Line2D([], [], linestyle="none", marker="+", color=KNOWN_MARK,
                                 markersize=9, markeredgewidth=1.8),
                          "known failure (not gating)"))
        fig, axes = self._figure(len(dtypes), 1, impls, extra)
        for j, dtype in enumerate(dtypes):
            ax = axes[0][j]
            for k, name in enumerate(impls):
                pts = sorted(((c["axis"][1], c) for c in cells
                              if c["impl"] == name and c["dtype"] == dtype), key=lambda xc: xc[0])
                if not pts:
                    continue
                xs, ys, fx, fy, kx, ky = [], [], [], [], [], []
                for x, c in pts:
                    v = run.m(c, "ulp_max") if c["metrics"] else None
                    if v is None:
                        xs.append(x)
                        ys.append(math.nan)
                        continue
                    y = inf_y if not math.isfinite(v) or _nonfinite_out(c) else max(v, floor)
                    xs.append(x)
                    ys.append(y)
                    if c["status"] == "fail":
                        (kx if c["known"] else fx).append(x)
                        (ky if c["known"] else fy).append(y)
                tr = self._dodge(fig, ax, k, len(impls))
                ax.plot(xs, ys, color=run.color[name], marker=run.marker[name],
                        markerfacecolor="white", markeredgewidth=1.3, linestyle=self._ls(name),
                        transform=tr, zorder=3, clip_on=False)
                if fx:
                    ax.plot(fx, fy, linestyle="none", marker="x", color=FAIL_MARK,
                            markersize=7, markeredgewidth=1.6, transform=tr, zorder=4,
                            clip_on=False)
                if kx:
                    ax.plot(kx, ky, linestyle="none", marker="+", color=KNOWN_MARK,
                            markersize=9, markeredgewidth=1.8, transform=tr, zorder=4,
                            clip_on=False)
            bud = run.budgets.get(dtype, {}).get(vocabulary.budget_key(vocabulary.quantity(kind), "ulp"))
            if bud is None:
                bud = next((c["budget"].get("ulp") for c in cells if c["dtype"] == dtype), None)
            if _finite(_num(bud)):
                ax.axhline(_num(bud), color="#57606a", linestyle=(0, (2, 2)), linewidth=1.0,
                           zorder=2)
            self._error_yaxis(ax, floor, l1, inf_y, first=j == 0)
            self._axis_x(ax, axis, xs_all)
            ax.set_title(dtype)
            ax.set_xlabel(xlabel if len(dtypes) <= 2 else xlabel.split(" (")[0])
        return _svg(fig, f"{kind}-{axis}")

    def _error_yaxis(self, ax, floor: float, l1: int, inf_y: float, first: bool) -> None:
        l0 = round(math.log10(floor))
        ax.set_yscale("log")
        ax.set_ylim(floor / 2.5, inf_y * 2.5)
        ax.axhspan(10.0 ** (l1 + 0.65), inf_y * 2.5, color="#f6f8fa", zorder=0, linewidth=0)
        ax.axhline(10.0 ** (l1 + 0.65), color="#d1d9e0", linewidth=0.8, zorder=1)
        span = l1 - l0
        step = max(1, math.ceil(span / 6))
        decades = list(range(l0, l1 + 1, step))
        ticks = [10.0**d for d in decades] + [inf_y]
        labels = [("≤" if d == l0 else "") + _decade(d) for d in decades] + ["inf/NaN"]
        ax.set_yticks(ticks, labels if first else [""] * len(ticks))
        ax.minorticks_off()
        ax.yaxis.set_tick_params(which="minor", left=False)
        if first:
            ax.set_ylabel("max error (ULPs of the dtype)")
        ax.grid(axis="x", visible=False)

    def _axis_x(self, ax, axis: str, xs: list[float]) -> None:
        if axis == "gap" and min(xs) <= 0:
            ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
            lo, hi = min(xs), max(xs)
            cand = [0.0] + [10.0**k for k in range(1, 7)] + [-(10.0**k) for k in range(1, 7)]
            ticks = sorted(t for t in cand if lo <= t <= hi)
            if len(ticks) > 6:
                ticks = [t for t in ticks if t == 0 or round(math.log10(abs(t))) % 2 == 0]
            ax.set_xticks(ticks, [_signed_decade(t) for t in ticks])
            ax.set_xlim(lo - (abs(lo) * 0.3 if lo < 0 else 0.3), hi * 1.6 if hi > 0 else 1)
        else:
            ax.set_xscale("log")
            pos = [x for x in xs if x > 0]
            lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
            step = max(1, math.ceil((hi - lo) / 6))
            ticks = [10.0**k for k in range(lo, hi + 1, step)]
            ax.set_xticks(ticks, [_decade(round(math.log10(t))) for t in ticks])
            ax.set_xlim(min(pos) / 2.2, max(pos) * 2.2)
        ax.minorticks_off()

    # -- (c), (d): error distributions

    def distribution(self, kind: str) -> str | None:
        from matplotlib.lines import Line2D

        run = self.run
        agg: dict[tuple[str, str], list[float]] = {}
        edges_ref: list[float] | None = None
        for c in run.cells:
            if c["kind"] != kind or not c["metrics"]:
                continue
            h = c["metrics"].get("hist")
            if not isinstance(h, Mapping):
                continue
            counts = [_num(v) or 0.0 for v in h.get("counts") or []]
            edges = [_num(v) for v in h.get("edges") or []]
            if len(edges) != len(counts) + 1 or not counts:
                continue
            if edges_ref is None:
                edges_ref = edges
            if len(edges) != len(edges_ref):
                continue
            key = (c["impl"], c["dtype"])
            if key not in agg:
                agg[key] = [0.0] * len(counts)
            acc = agg[key]
            for i, v in enumerate(counts):
                acc[i] += v
        if not agg or edges_ref is None:
            return None
        dtypes = [d for d in run.dtypes if any(k[1] == d for k in agg)]
        impls = [i["name"] for i in run.impls if any(k[0] == i["name"] for k in agg)]
        fig, axes = self._figure(len(dtypes), 1, impls, [(
            Line2D([], [], color="#57606a", linestyle=(0, (2, 2)), linewidth=1.0),
            "strict ULP budget")])
        # thresholds: the finite positive edges; exceedance at edges[i] = bins i.. / total
        idx = [i for i, e in enumerate(edges_ref) if e is not None and 0 < e < math.inf]
        xs = [edges_ref[i] for i in idx]
        ymin = 1.0
        for counts in agg.values():
            total = sum(counts)
            if total:
                ymin = min(ymin, 1.0 / total)
        ylo = 10.0 ** math.floor(math.log10(ymin) - 0.2)
        for j, dtype in enumerate(dtypes):
            ax = axes[0][j]
            for k, name in enumerate(impls):
                counts = agg.get((name, dtype))
                if not counts or not sum(counts):
                    continue
                total = sum(counts)
                ys = []
                for i in idx:
                    f = sum(counts[i:]) / total
                    ys.append(f if f > 0 else math.nan)
                ax.plot(xs, ys, color=run.color[name], marker=run.marker[name], markevery=2,
                        markerfacecolor="white", markeredgewidth=1.2, linestyle=self._ls(name),
                        drawstyle="steps-post", transform=self._dodge(fig, ax, k, len(impls)),
                        zorder=3)
            bud = run.budgets.get(dtype, {}).get(vocabulary.budget_key(vocabulary.quantity(kind), "ulp"))
            if _finite(_num(bud)):
                ax.axvline(_num(bud), color="#57606a", linestyle=(0, (2, 2)), linewidth=1.0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(ylo, 1.6)
            ax.set_xlim(10**-3.6, 10**12.6)
            lx = list(range(-3, 13, 3))
            ax.set_xticks([10.0**k for k in lx], [_decade(k) for k in lx])
            ly = list(range(round(math.log10(ylo)), 1))
            step = max(1, math.ceil(len(ly) / 5))
            ly = ly[::-1][::step][::-1]
            ax.set_yticks([10.0**k for k in ly],
                          [_fraction(k) for k in ly] if j == 0 else [""] * len(ly))
            ax.minorticks_off()
            ax.set_title(dtype)
            ax.set_xlabel("error x (ULPs)")
            if j == 0:
                ax.set_ylabel("fraction of elements with error ≥ x")
        return _svg(fig, f"{kind}-dist")

    # -- (e): throughput

    def throughput(self) -> str | None:
        """GB/s per problem shape: one category per (N, C), smallest first, as shapes of the
        same size (the grid's 256×32768 and 32×262144) would share a point on a bytes axis;
        the same run's copy bandwidth at that shape as a short black bar over each."""
        from matplotlib.lines import Line2D

        run = self.run
        rows = [t for t in run.throughput if t["status"] == "ok" and _finite(t.get("gbps"))
                and _finite(t.get("N")) and _finite(t.get("C"))]
        if not rows:
            return None
        dtypes = sorted({str(t.get("dtype")) for t in rows}, key=_dtype_key)
        passes = [p for p in vocabulary.PASSES if any(t.get("pass") == p
                                                                     for t in rows)]
        passes += sorted({str(t.get("pass")) for t in rows} - set(passes))
        impls = self._impls_with(rows)
        shapes = sorted({(t["N"], t["C"]) for t in rows}, key=lambda nc: (nc[0] * nc[1], nc[1]))
        where = {nc: k for k, nc in enumerate(shapes)}
        copies = [c for c in run.copy if _finite(c.get("gbps"))]
        devices = sorted({str(c.get("device")) for c in copies}
                         & {str(t.get("device")) for t in rows})
        styles = ("solid", (0, (1, 1)), (0, (3, 1)))
        extra = [(Line2D([], [], color="#1f2328", linestyle=styles[i % 3], linewidth=2.2),
                  f"copy bandwidth, {dev} (same run)") for i, dev in enumerate(devices)]
        fig, axes = self._figure(len(passes), len(dtypes), impls, extra, panel_h=2.6,
                                 xlabel_h=0.68)
        ydata = [t["gbps"] for t in rows] + [c["gbps"] for c in copies
                                             if str(c.get("device")) in devices]
        ylo = min(ydata) / 1.4
        yhi = max(ydata) * 1.6
        n = len(impls)
        spread = min(0.56, 0.14 * (n - 1))  # impls side by side inside a category
        for r, dtype in enumerate(dtypes):
            for j, pas in enumerate(passes):
                ax = axes[r][j]
                sel = [t for t in rows if str(t.get("dtype")) == dtype and t.get("pass") == pas]
                for d_i, dev in enumerate(devices):
                    for (nn, cc), x in where.items():
                        cp = [c["gbps"] for c in copies if str(c.get("device")) == dev
                              and str(c.get("dtype")) == dtype and c.get("N") == nn
                              and c.get("C") == cc]
                        if cp and any(t.get("device") == dev and (t["N"], t["C"]) == (nn, cc)
                                      for t in sel):
                            ax.hlines(cp[0], x - 0.36, x + 0.36, color="#1f2328",
                                      linestyle=styles[d_i % 3], linewidth=2.2, zorder=2)
                for k, name in enumerate(impls):
                    pts = sorted((where[(t["N"], t["C"])], t) for t in sel if t["impl"] == name)
                    if not pts:
                        continue
                    dx = (k / (n - 1) - 0.5) * spread if n > 1 else 0.0
                    xs = [x + dx for x, _ in pts]
                    ys = [t["gbps"] for _, t in pts]
                    lo, hi = [], []
                    for _, t in pts:
                        med, iqr = t.get("median_s"), t.get("iqr_s")
                        if _finite(med) and _finite(iqr) and med > iqr / 2 > 0:
                            lo.append(t["gbps"] - t["gbps"] * med / (med + iqr / 2))
                            hi.append(t["gbps"] * med / (med - iqr / 2) - t["gbps"])
                        else:
                            lo.append(0.0)
                            hi.append(0.0)
                    ax.errorbar(xs, ys, yerr=[lo, hi], color=run.color[name],
                                marker=run.marker[name], markerfacecolor="white",
                                markeredgewidth=1.3, linestyle="none", capsize=2.5,
                                elinewidth=1.0, zorder=3)
                ax.set_yscale("log")
                ax.set_ylim(ylo / 1.3, yhi)
                labels = []
                for nn, cc in shapes:
                    b = [t.get("bytes") for t in sel if (t["N"], t["C"]) == (nn, cc)]
                    size = f"\n{_bytes(b[0])}" if b and _finite(b[0]) else ""
                    labels.append(f"{fmt_num(nn)}×{fmt_num(cc)}{size}")
                ax.set_xticks(range(len(shapes)), labels)
                ax.set_xlim(-0.6, len(shapes) - 0.4)
                ax.grid(axis="x", visible=False)
                yt = _nice_log_ticks(ylo / 1.3, yhi)
                ax.set_yticks(yt, [fmt_num(v) for v in yt] if j == 0 else [""] * len(yt))
                ax.minorticks_off()
                ax.set_title(f"{pas} · {dtype}")
                ax.set_xlabel("problem N×C and bytes moved (minimal model: N·C·b forward, "
                              "2·N·C·b with backward)" if len(passes) < 2 else
                              "problem N×C and bytes moved (minimal model)")
                if j == 0:
                    ax.set_ylabel("throughput (GB/s)")
        return _svg(fig, "throughput")


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks inside [lo, hi] when the range is short, decades when it is long."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    subs = (1, 2, 5) if k1 - k0 <= 3 else (1,)
    ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in subs if lo <= m * 10.0**k <= hi]
    step = max(1, math.ceil(len(ticks) / 8))
    return ticks[::step]


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade(k: int) -> str:
    if -3 <= k <= 3:
        return fmt_num(10.0**k)
    return "10" + str(k).translate(_SUPERSCRIPT)


def _signed_decade(t: float) -> str:
    if t == 0:
        return "0"
    s = _decade(round(math.log10(abs(t))))
    return ("−" + s) if t < 0 else s


def _fraction(k: int) -> str:
    return "1" if k == 0 else _decade(k)


# ----------------------------------------------------------------------------------------------
# The page


@cache
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":"),
                                         "allow_nan": False, "ensure_ascii": False}
    env.filters["num"] = fmt_num
    env.filters["bytes"] = _bytes
    env.filters["seconds"] = _seconds
    return env


def _state(c: dict) -> str:
    """A cell's status for display: a known failure or error is "known"."""
    return "known" if c["known"] else c["status"]


def _family_status(cells: list[dict]) -> str:
    if not cells:
        return "none"
    st = {_state(c) for c in cells}
    for s in ("fail", "error", "known", "pass"):
        if s in st:
            return s
    return "unsupported"


def _cell_title(cells: list[dict]) -> str:
    cnt = Counter(_state(c) for c in cells)
    parts = [f"{cnt[s]} {STATUS_WORD[s]}{'s' if s == 'known' and cnt[s] > 1 else ''}"
             for s in ("pass", "fail", "error", "known", "unsupported") if cnt[s]]
    text = ", ".join(parts) if parts else "no cells"
    reasons = sorted({c["known"] for c in cells if c["known"]})
    if reasons:
        text += " (documented, not gating: " + "; ".join(_clip(r, 160) for r in reasons) + ")"
    return text


def _clip(s: str, n: int) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _known_note(i: dict, cells: list[dict]) -> str:
    n = i["counts"].get("known", 0)
    if not n:
        return ""
    reasons = sorted({c["known"] for c in cells if c["impl"] == i["name"] and c["known"]})
    head = f"{n} known failure{'s' if n != 1 else ''} (not gating)"
    return head + (": " + "; ".join(_clip(r, 140) for r in reasons) if reasons else "")


def _view(run: _Run, baseline: _Run | None, plots: dict[str, str]) -> dict:
    impls = run.available_impls()
    unavailable = [i for i in run.impls if i not in impls]
    dtypes = run.dtypes
    counts = run.counts()
    total = sum(counts.values())

    # -- per implementation
    impl_rows = []
    for i in run.impls:
        v = i["verdict"] if i["available"] else "unavailable"
        notes = []
        if not i["available"]:
            notes.append(str(i.get("reason") or "not available here"))
        elif v == "skipped":
            notes.append(str(i.get("reason") or (
                vocabulary.CANARY_LEFT_OUT
                if i["canary"] else "not run")))
        elif i["canary"]:
            notes.append("canary: deliberately broken, expected to fail" if v != "pass" else
                         "canary passed: the harness missed a broken implementation")
        elif v == "error":
            notes.append("raised errors (see findings)")
        elif v == "fail":
            notes.append("failed budgets (see findings)")
        known_note = _known_note(i, run.cells)
        c = i["counts"]
        impl_rows.append({
            "name": i["name"], "id": f"impl-{_slug(i['name'])}", "verdict": v,
            "symbol": SYMBOL.get(v, "?"), "note": " · ".join(notes), "known_note": known_note,
            "canary": i["canary"],
            "origin": str(i.get("origin") or ""), "description": str(i.get("description") or ""),
            "devices": ", ".join(map(str, i.get("devices") or [])),
            "dtypes": ", ".join(DTYPE_SHORT.get(d, str(d)) for d in i.get("dtypes") or []),
            "counts": c, "color": run.color[i["name"]],
            "ran": v not in ("unavailable", "skipped") or i["ran"],
            "expected": i["canary"] and v in ("fail", "error"),
        })

    # -- verdict matrix: family x (implementation, dtype)
    by_ifd: dict[tuple, list[dict]] = defaultdict(list)
    for c in run.cells:
        by_ifd[(c["impl"], c["family"], c["dtype"])].append(c)
    matrix_rows = []
    for fam in run.families:
        row = {"family": fam, "cells": []}
        for i in impls:
            for d in dtypes:
                cs = by_ifd.get((i["name"], fam, d), [])
                st = _family_status(cs)
                bad = sum(_state(c) == st for c in cs) if st in ("fail", "error", "known") else 0
                row["cells"].append({"status": st, "symbol": SYMBOL[st], "n": bad,
                                     "title": _cell_title(cs)})
        matrix_rows.append(row)

    # -- findings
    fs = findings(run)

    # -- special values table
    with_special = {c["scenario"] for c in run.cells if c["kind"] == "special"}
    special_scen = [s for s in run.scenarios if s in with_special]
    special_scen += sorted(with_special - set(special_scen))
    special_rows = []
    for s in special_scen:
        row = {"scenario": s, "why": str(run.scenarios.get(s, {}).get("why") or ""), "cells": []}
        for i in impls:
            for d in dtypes:
                c = run.by_key.get((i["name"], d, s, "special"))
                if c is None:
                    row["cells"].append({"status": "none", "text": "", "title": "no cell",
                                         "href": ""})
                    continue
                mism, cnt = run.m(c, "mismatch"), run.m(c, "count")
                st = _state(c)
                text = ""
                if c["status"] == "fail" and mism is not None:
                    text = f"{fmt_num(mism)}/{fmt_num(cnt)}"
                title = STATUS_WORD[c["status"]]
                if c["metrics"]:
                    title = f"{fmt_num(mism)} of {fmt_num(cnt)} inf/NaN positions differ"
                    ex = (c["metrics"].get("examples") or [])[:1]
                    if ex and isinstance(ex[0], Mapping) and c["status"] == "fail":
                        title += f": y = {_value(ex[0].get('y'))}, reference " \
                                 f"{_value(ex[0].get('ref'))}"
                elif c["message"]:
                    title += f": {c['message'][:120]}"
                if c["known"]:
                    title = f"known failure (not gating): {_clip(c['known'], 200)}. {title}"
                row["cells"].append({"status": st, "symbol": SYMBOL[st], "text": text,
                                     "title": title, "href": "#" + c["id"]})
        special_rows.append(row)

    # -- throughput table
    tp_rows = []
    for t in sorted(run.throughput, key=lambda t: (
            [x["name"] for x in run.impls].index(t["impl"]) if t["impl"] in run.impl else 99,
            _dtype_key(str(t.get("dtype"))), str(t.get("pass")),
            (t.get("N") or 0) * (t.get("C") or 0), t.get("C") or 0)):
        frac = t.get("fraction_of_copy")
        if not _finite(frac) and _finite(t.get("gbps")) and _finite(t.get("copy_gbps")) \
                and t["copy_gbps"]:
            frac = t["gbps"] / t["copy_gbps"]
        tp_rows.append({
            "id": t["id"], "impl": t["impl"], "color": run.color.get(t["impl"], "#888"),
            "dtype": str(t.get("dtype")), "shape": f"{fmt_num(t.get('N'))}×{fmt_num(t.get('C'))}",
            "pass": str(t.get("pass")), "device": str(t.get("device") or ""),
            "threads": fmt_num(t.get("threads")), "status": t["status"],
            "message": str(t.get("message") or ""), "bytes": _bytes(t.get("bytes")),
            "time": _seconds(t.get("median_s")),
            "iqr": f"±{_num(t.get('iqr_s')) / _num(t.get('median_s')) * 50:.0f} %"
            if _finite(t.get("iqr_s")) and _finite(t.get("median_s")) and t["median_s"] else "",
            "gbps": _rate(t.get("gbps")), "copy_gbps": _rate(t.get("copy_gbps")),
            "frac": frac if _finite(frac) else None,
            "frac_text": f"{fmt_num(frac * 100, 2)} %" if _finite(frac) else "–",
            "frac_width": f"{min(max(frac, 0.0), 1.0) * 100:.1f}" if _finite(frac) else "0",
            "peak": _bytes(t.get("peak_memory_bytes")), "noisy": bool(t.get("noisy")),
        })

    # -- details data (rendered by the page's script)
    impl_names = [i["name"] for i in run.impls]
    scen_names = list(run.scenarios)
    scen_names += sorted({c["scenario"] for c in run.cells} - set(scen_names))
    scen_ix = {s: k for k, s in enumerate(scen_names)}
    impl_ix = {n: k for k, n in enumerate(impl_names)}
    dtype_ix = {d: k for k, d in enumerate(dtypes)}
    fam_ix = {f: k for k, f in enumerate(run.families)}
    kinds = list(KINDS) + sorted({c["kind"] for c in run.cells} - set(KINDS))
    # the status column: the four statuses, a pass by the scaled budget only, and the known
    # failures and errors (documented in [[tool.xent-harness.known-failures]], not gating)
    statuses = [*STATUSES, "pass (scaled)", "fail (known)", "error (known)"]
    msgs: dict[str, int] = {}
    budgets: dict[str, int] = {}
    rows = []
    for c in run.cells:
        m = c["metrics"] or {}
        msg = c["message"]
        if msg is None and c["kind"] == "special" and m and c["status"] != "pass":
            msg = f"{fmt_num(m.get('mismatch'))} of {fmt_num(m.get('count'))} inf/NaN positions differ"
        mi = -1 if msg is None else msgs.setdefault(msg, len(msgs))
        ki = -1 if not c["known"] else msgs.setdefault(c["known"], len(msgs))
        st = statuses.index(c["status"] + " (known)" if c["known"] else c["status"])
        u, bu = _num(m.get("ulp_max")), c["budget"].get("ulp")
        if c["status"] == "pass" and _finite(u) and bu is not None and u > bu:
            st = statuses.index("pass (scaled)")
        bud = c["budget"]
        btext = "" if not bud else f"{fmt_num(bud.get('ulp'))} / {fmt_num(bud.get('scaled'))}"
        # elements outside the budget (special cells: the inf/NaN positions that differ)
        outside = m.get("mismatch") if c["kind"] == "special" else m.get("failing")
        rows.append([
            impl_ix[c["impl"]], dtype_ix[c["dtype"]], scen_ix[c["scenario"]],
            kinds.index(c["kind"]), st, _jnum(m.get("ulp_max")), _jnum(m.get("ulp_median")),
            _jnum(m.get("ulp_p99")), _jnum(m.get("scaled_max")), _jnum(m.get("rel_max")),
            _jnum(m.get("normwise")), budgets.setdefault(btext, len(budgets)), mi,
            _jnum(outside), _jnum(m.get("count")) if m else None, ki,
        ])
    # worst first: failures, errors, known failures, passes above the ULP budget, passes,
    # not supported
    order = ("fail", "error", "fail (known)", "error (known)", "pass (scaled)", "pass",
             "unsupported")
    severity = {statuses.index(name): k for k, name in enumerate(order)}
    rows.sort(key=lambda r: (severity[r[4]], -_log(_num(r[5])) if r[5] is not None else 0.0))
    data = {
        "impls": impl_names, "implSlugs": [_slug(n) for n in impl_names], "dtypes": dtypes,
        "scenarios": scen_names, "scenSlugs": [_slug(s) for s in scen_names],
        "scenFamily": [fam_ix.get(str(run.scenarios.get(s, {}).get("family")), -1)
                       if s in run.scenarios else -1 for s in scen_names],
        "families": run.families, "kinds": kinds, "statuses": statuses,
        "messages": list(msgs), "budgets": list(budgets), "rows": rows,
    }
    # families of scenarios only seen in cells
    for c in run.cells:
        k = scen_ix[c["scenario"]]
        if data["scenFamily"][k] == -1:
            data["scenFamily"][k] = fam_ix.get(c["family"], -1)

    # -- provenance
    prov = run.prov
    git = prov.get("git") or {}
    cpu = prov.get("cpu") or {}
    gpu = prov.get("gpu")
    gpu_text = "none"
    if isinstance(gpu, Mapping):
        gpu_text = ", ".join(str(x) for x in (
            gpu.get("name"), gpu.get("driver") and f"driver {gpu.get('driver')}",
            gpu.get("cuda") and f"CUDA {gpu.get('cuda')}",
            gpu.get("memory_bytes") and _bytes(gpu.get("memory_bytes"))) if x)
    elif gpu:
        gpu_text = str(gpu)
    commit = str(git.get("commit") or "unknown")
    provenance = [
        ("command", str(run.run.get("command") or "–")),
        ("run id", str(run.run.get("id") or "–")),
        ("started", str(run.run.get("started") or prov.get("date") or "–")),
        ("finished", str(run.run.get("finished") or "not finished")),
        ("complete", "yes" if run.run.get("complete") else "no"),
        ("kinds", ", ".join(map(str, run.run.get("kinds") or [])) or "–"),
        ("dtypes", ", ".join(dtypes) or "–"),
        ("scenario patterns", ", ".join(map(str, run.run.get("scenario_patterns") or []))
         or "all"),
        ("harness", f"{prov.get('harness') or '?'} (commit {commit[:12]}"
                    f"{', uncommitted changes' if git.get('dirty') else ''})"),
        ("python", str(prov.get("python") or "–")),
        ("platform", str(prov.get("platform") or "–")),
        ("CPU", f"{cpu.get('model') or '?'} ({cpu.get('cores') or '?'} cores, "
                f"{prov.get('threads') or '?'} threads used)" if cpu else "–"),
        ("GPU", gpu_text),
        ("libraries", ", ".join(f"{k} {v}" for k, v in (prov.get("libraries") or {}).items())
         or "–"),
        ("budgets", str(run.raw.get("budgets_source") or "–")),
    ]
    budget_rows = []
    for d in sorted(run.budgets, key=_dtype_key):
        b = run.budgets[d] or {}
        budget_rows.append({"dtype": d, **{k: fmt_num(b.get(k)) for k in
                                          vocabulary.BUDGET_KEYS}})
    scen_rows = []
    for s in run.scenarios.values():
        ax = s.get("axis")
        scen_rows.append({
            "name": str(s.get("name")), "family": str(s.get("family") or ""),
            "seed": str(s.get("seed") if s.get("seed") is not None else "–"),
            "shape": "×".join(str(n) for n in s.get("shape") or []) or "–",
            "dtypes": ", ".join(DTYPE_SHORT.get(d, str(d)) for d in s.get("dtypes") or []),
            "axis": f"{ax[0]} = {fmt_num(ax[1])}" if isinstance(ax, list | tuple) and len(ax) == 2
            else "", "why": str(s.get("why") or ""),
        })

    # -- comparison
    comparison = None
    if baseline is not None:
        changes = compare(run, baseline)
        cnt = Counter(e["change"] for e in changes)
        shown = [e for e in changes if e["change"] not in ("unchanged",)]
        limit = 400
        comparison = {
            "baseline_id": str(baseline.run.get("id") or "baseline"),
            "baseline_date": str(baseline.run.get("started") or baseline.prov.get("date") or ""),
            "baseline_commit": str((baseline.prov.get("git") or {}).get("commit") or "?")[:12],
            "counts": [(k, cnt[k]) for k in _ORDER if cnt[k]],
            "regressions": sum(e["regression"] for e in changes),
            "new_failures": sum(e["new_failure"] for e in changes),
            "improvements": sum(e["improvement"] for e in changes),
            "noise": cnt["noise"],
            "rows": [_comparison_row(e) for e in shown[:limit]],
            "more": max(0, len(shown) - limit),
            "machine_differs": _machine(run) != _machine(baseline),
            "machine": _machine(run), "baseline_machine": _machine(baseline),
        }

    complete = bool(run.run.get("complete", True))
    verdict = run.verdict()
    bad = ("fail", "error")
    failing = [i["name"] for i in impls if i["verdict"] in bad and not i["canary"]]
    if verdict == "fail" and not failing:  # a canary named explicitly is judged like any other
        failing = [i["name"] for i in impls if i["verdict"] in bad]
    new_bad = sum(1 for c in run.cells if c["status"] in bad and not c["known"]
                  and c["impl"] in failing)
    canaries = [i for i in impls if i["canary"] and i["verdict"] != "skipped" and i["ran"]]
    n_known = counts["known"]
    known_text = (f"{n_known:,} known failure{'s' if n_known != 1 else ''} (documented, not "
                  "gating)") if n_known else ""
    if verdict == "pass":
        headline = "Every tested implementation is within its budgets"
        if known_text:
            headline += f" apart from {known_text}"
    else:
        headline = f"{_and(failing) or 'an implementation'} failed"
        if new_bad:
            headline += f": {new_bad:,} new failing cell{'s' if new_bad != 1 else ''}"
        if known_text:
            headline += f", besides {known_text}"
    if canaries:
        caught = all(i["verdict"] in bad for i in canaries)
        headline += (". The canary was caught, as it should be." if caught else
                     ". Warning: the canary was NOT caught.")
    elif not headline.endswith("."):
        headline += "."
    canary_fail = sum(1 for c in run.cells if c["status"] == "fail" and not c["known"]
                      and run.is_canary(c["impl"]))
    fail_note = ""
    if canary_fail and canary_fail == counts["fail"]:
        fail_note = "all the canary's" + (", expected" if verdict == "pass" else "")
    elif canary_fail:
        fail_note = f"{canary_fail:,} of them the canary's"

    # -- known failures: the entries of the results file and how many cells each matched
    known_rows = []
    for k in run.known_failures:
        globs = k.get("cells")
        globs = [globs] if isinstance(globs, str) else [str(g) for g in globs or []]
        reason = str(k.get("reason") or "")
        hits = [c for c in run.cells if c["known"] and any(fnmatchcase(vocabulary.cell_id(c), g) for g in globs)]
        known_rows.append({"reason": reason, "cells": globs, "matched": len(hits)})
    reasons_listed = {r["reason"] for r in known_rows}
    for reason in sorted({c["known"] for c in run.cells if c["known"]} - reasons_listed):
        known_rows.append({"reason": reason, "cells": [],
                           "matched": sum(c["known"] == reason for c in run.cells)})

    sections = [("summary", "Summary"), ("findings", "Findings"), ("accuracy", "Accuracy"),
                ("gradients", "Gradients"), ("special", "Special values"),
                ("throughput", "Throughput"), ("details", "Details"),
                ("provenance", "Provenance")]
    if comparison:
        sections.append(("comparison", "Comparison"))
    return {
        "title": f"xent-harness report {run.run.get('id') or ''}".strip(),
        "run_id": str(run.run.get("id") or "–"),
        "date": str(run.run.get("started") or prov.get("date") or "–"),
        "command": str(run.run.get("command") or "–"),
        "verdict": verdict, "headline": headline, "complete": complete,
        "counts": counts, "total": total, "fail_note": fail_note,
        "expected_only": bool(fail_note) and canary_fail == counts["fail"] and verdict == "pass",
        "known_rows": known_rows,
        "n_impls": len(impls), "n_all_impls": len(run.impls), "n_scenarios": len(run.scenarios),
        "dtypes": dtypes, "dtype_short": [DTYPE_SHORT.get(d, d) for d in dtypes],
        "impl_rows": impl_rows,
        "matrix_impls": [{"name": i["name"], "color": run.color[i["name"]],
                          "canary": i["canary"], "slug": _slug(i["name"])} for i in impls],
        "unavailable": [{"name": i["name"], "verdict": i["verdict"] if i["available"]
                         else "unavailable", "reason": str(i.get("reason") or (
                             "canary, left out of this gate" if i["canary"] else "not run"))}
                        for i in unavailable],
        "matrix_rows": matrix_rows,
        "findings": fs, "findings_shown": 10,
        "plots": plots,
        "special_rows": special_rows,
        "tp_rows": tp_rows,
        "data": data,
        "provenance": provenance, "budget_rows": budget_rows, "scen_rows": scen_rows,
        "comparison": comparison,
        "sections": sections,
        "legend": [(s, SYMBOL[s], STATUS_WORD[s] + (" (documented, not gating)" if s == "known"
                                                   else "")) for s in
                   ("pass", "fail", "error", "known", "unsupported", "none")],
        "has_known": bool(n_known),
        "throughput_measured": "throughput" in (run.run.get("kinds") or ["throughput"]),
        "kinds_text": ", ".join(map(str, run.run.get("kinds") or [])),
    }


def _machine(run: _Run) -> str:
    cpu = (run.prov.get("cpu") or {}).get("model") or "?"
    gpu = run.prov.get("gpu")
    gpu = gpu.get("name") if isinstance(gpu, Mapping) else None
    return f"{cpu}" + (f" + {gpu}" if gpu else "")


def _comparison_row(e: dict) -> dict:
    if e["type"] == "cell":
        unit = "mismatches" if e["kind"] == "special" else "ULP"
        what = f"{e['scenario']} · {KIND_WORDS.get(e['kind'], e['kind'])}"
        before = f"{fmt_num(e['before'])} {unit}" if e["before"] is not None else "–"
        after = f"{fmt_num(e['after'])} {unit}" if e["after"] is not None else "–"
        delta = f"×{fmt_num(e['ratio'], 2)}" if e["ratio"] else ""
    else:
        what = f"{e['pass']} · {fmt_num(e['N'])}×{fmt_num(e['C'])} · {e['device']}"
        before = f"{_rate(e.get('before_gbps'))} GB/s" if e.get("before_gbps") else "–"
        after = f"{_rate(e.get('after_gbps'))} GB/s" if e.get("after_gbps") else "–"
        delta = (f"{(1 / e['ratio'] - 1) * 100:+.0f} % speed (noise ±{e['threshold'] * 100:.0f} %)"
                 if e["ratio"] else "")
    if e["before_status"] != e["after_status"]:
        delta = (delta + " · " if delta else "") + \
            f"{e['before_status'] or 'absent'} → {e['after_status'] or 'absent'}"
    cls = ("new" if e["new_failure"] else "regression" if e["regression"] else
           "improvement" if e["improvement"] else "noise" if e["noise"] else "other")
    return {"change": e["change"], "cls": cls, "impl": e["impl"], "dtype": e["dtype"],
            "what": what, "before": before, "after": after, "delta": delta,
            "href": "#" + e["anchor"] if e["anchor"] else ""}


def render_html(results: dict, baseline: dict | None = None) -> str:
    """The report page for ``results`` (and its comparison with ``baseline``), as a string."""
    run = _as_run(results)
    base = _as_run(baseline) if baseline is not None else None
    plots = _Plotter(run).render()
    view = _view(run, base, plots)
    return _environment().get_template("report.html").render(**view)


def write_html(results: dict, path, baseline: dict | None = None) -> Path:
    """Write the report page to ``path`` (atomically) and return the path."""
    return _write(Path(path), render_html(results, baseline))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# Markdown


def _md(s) -> str:
    """Text safe inside a Markdown table cell / list item (and GitHub's HTML sanitizer)."""
    s = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = re.sub(r"([\\`*_\[\]|#~])", r"\\\1", s)
    return s.replace("\r", " ").replace("\n", " ")


_MD_BADGE = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error",
             "unavailable": "⚪ unavailable", "skipped": "⚪ skipped"}


def _known_groups(run: _Run) -> list[str]:
    """The known failures in a few lines: per reason and implementation, the scenarios that
    share their dtypes, e.g. "jax float16 and float32 special values: posinf-one and
    posinf-target — reason"."""
    by: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for c in run.cells:
        if c["known"]:
            by[(c["known"], c["impl"], c["kind"])][c["scenario"]].add(c["dtype"])
    out = []
    for (reason, impl, kind), scen in by.items():
        per: dict[tuple, list[str]] = defaultdict(list)
        for name, dts in scen.items():
            per[tuple(sorted(dts, key=_dtype_key))].append(name)
        for dts, names in per.items():
            names = sorted(names)
            shown = names[:5] + ([f"{len(names) - 5} more"] if len(names) > 5 else [])
            out.append(f"{impl} {_and(list(dts))} {KIND_WORDS.get(kind, kind)}: {_and(shown)} "
                       f"— {_clip(reason, 200)}")
    return out


def render_markdown(results: dict, baseline: dict | None = None, *, top: int = 5) -> str:
    """A short Markdown summary: verdict, one line per implementation, the new failures, the
    known failures (documented, not gating) apart, the top other findings, and the regressions
    against ``baseline``."""
    run = _as_run(results)
    verdict = run.verdict()
    counts = run.counts()
    total = sum(counts.values())
    known_part = (f", {counts['known']:,} known failure{'s' if counts['known'] != 1 else ''} "
                  "(not gating)") if counts["known"] else ""
    lines = [
        f"### xent-harness: {'✅ PASS' if verdict == 'pass' else '❌ FAIL'} "
        f"(run {_md(run.run.get('id') or '?')})",
        "",
        f"`{str(run.run.get('command') or 'xent-harness').replace('`', '')}` · {total:,} cells: "
        f"{counts['pass']:,} pass, {counts['fail']:,} fail, {counts['error']:,} error"
        f"{known_part}, {counts['unsupported']:,} not supported"
        + ("" if run.run.get("complete", True) else " · **incomplete run**"),
        "",
        "| implementation | verdict | pass | fail | error | known | not supported |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for i in run.impls:
        v = i["verdict"] if i["available"] else "unavailable"
        badge = _MD_BADGE.get(v, v)
        c = i["counts"]
        if not i["available"]:
            badge += f": {_md(i.get('reason') or 'not available')}"
        elif v == "skipped":
            badge += ": " + _md(i.get("reason") or ("canary, left out of this gate"
                                                    if i["canary"] else "not run"))
        elif i["canary"]:
            badge += " (canary, expected)" if v in ("fail", "error") else " (canary NOT caught!)"
        if c.get("known") and v not in ("unavailable", "skipped"):
            badge += f" · {c['known']:,} known"
        ran = v not in ("unavailable", "skipped") or i["ran"]
        nums = ("| | | | | " if not ran else
                f"| {c['pass']:,} | {c['fail']:,} | {c['error']:,} | {c['known']:,} "
                f"| {c['unsupported']:,} ")
        lines.append(f"| {_md(i['name'])} | {badge} {nums}|")
    fs = findings(run)
    new = [f for f in fs if f["severity"] in ("fail", "error", "special")]
    others = [f for f in fs if f["severity"] in ("surprise", "canary")]
    if new or counts["known"]:
        lines += ["", f"**New failures** ({len(new)}{f'; top {top}' if len(new) > top else ''}):"
                  if new else "**New failures**: none (the run gates on these)"]
        for k, f in enumerate(new[:top], 1):
            lines.append(f"{k}. {_md(f['text'])}")
    if counts["known"]:
        groups = _known_groups(run)
        lines += ["", f"**Known failures** ({counts['known']:,} cell"
                      f"{'s' if counts['known'] != 1 else ''}, documented, not gating):"]
        for g in groups[:top]:
            lines.append(f"- {_md(g)}")
        if len(groups) > top:
            lines.append(f"- … and {len(groups) - top} more (see the report)")
    if others:
        n = min(3, len(others)) if (new or counts["known"]) else min(top, len(others))
        lines += ["", f"**Other findings** ({len(others)}; top {n}):"
                  if (new or counts["known"]) else f"**Findings** ({len(others)}; top {n}):"]
        for k, f in enumerate(others[:n], 1):
            lines.append(f"{k}. {_md(f['text'])}")
    if baseline is not None:
        base = _as_run(baseline)
        ch = compare(run, base)
        reg = [e for e in ch if e["regression"]]
        cnt = Counter(e["change"] for e in ch)
        summary = ", ".join(f"{cnt[k]} {k}" for k in _ORDER if cnt[k] and k != "unchanged")
        lines += ["", f"**Compared with {_md(base.run.get('id') or 'the baseline')}**: "
                      f"{summary or 'no changes'}"]
        for e in reg[:top]:
            mark = "🆕 " if e["new_failure"] else "🔻 "
            lines.append(f"- {mark}{_md(e['text'])}")
        if len(reg) > top:
            lines.append(f"- … and {len(reg) - top} more regressions")
    return "\n".join(lines) + "\n"


def write_markdown(results: dict, path, baseline: dict | None = None) -> Path:
    return _write(Path(path), render_markdown(results, baseline))


def append_github_summary(md: str) -> bool:
    """Append ``md`` to the file named by $GITHUB_STEP_SUMMARY; False when it is not set."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as f:
        f.write(md if md.endswith("\n") else md + "\n")
    return True
