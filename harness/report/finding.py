"""Findings: the most important failures and surprises of a run as plain-language sentences."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from harness.report.fmt import (
    KIND_WORDS,
    _and,
    _dtype_key,
    _finite,
    _log,
    _num,
    _slug,
    _value,
    fmt_num,
)
from harness.report.model import _as_run, _Run

PRECISION = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
AXIS_WORDS = {"scale": "logit scale", "gap": "target gap", "loc": "logit offset", "C": "C ="}
#: A passing cell whose strict ULP error is this many times its ULP budget is a finding.
SURPRISE_FACTOR = 16


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
    convention | surprise | canary), ``rank`` (smaller is worse), ``impl``, ``dtypes``, ``kind``,
    ``scenario`` (the example the sentence names), ``anchor`` (the id of its row in the HTML
    report), ``cells`` (how many cells it summarises), ``canary`` (True for the canary's own),
    ``known`` (the documented reason of a known failure, else None), ``diagnosis`` (the
    example cell's diagnosis in one sentence, harness/diagnosis.py, else None), ``diagnosed``
    (a bug hypothesis matched: the sentence ends with the closest, "— matches: ...") and
    ``repro`` (the path of its reproducer relative to the results file, else None).

    Known failures (cells matching ``[[tool.xent-harness.known-failures]]``) stay findings,
    with severity "known" and their reason, ranked after the new failures and errors.
    """
    run = _as_run(results)
    out: list[dict] = []

    def add(severity, rank, text, *, impl, dtypes=(), kind=None, scenario=None, anchor=None,
            cells=1, known=None, diagnosis=None):
        canary = run.is_canary(impl) if impl else False
        if diagnosis and diagnosis["matched"]:
            text += f" — {diagnosis['short']}"
        if known and severity in ("fail", "error", "special"):
            severity, rank = "known", (3, *rank[1:])
        elif canary and severity in ("fail", "error", "special"):
            text += " — the canary, expected to fail"
            severity, rank = "canary", (5, *rank[1:])
        out.append({"severity": severity, "rank": rank, "text": text, "impl": impl,
                    "dtypes": sorted(set(dtypes), key=_dtype_key), "kind": kind,
                    "scenario": scenario, "anchor": anchor, "cells": cells, "canary": canary,
                    "known": known, "diagnosis": diagnosis["text"] if diagnosis else None,
                    "diagnosed": bool(diagnosis and diagnosis["matched"]),
                    "repro": diagnosis["repro"] if diagnosis else None})

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
            bound = 10.0 ** min(math.ceil(math.log10(top)), 308) if top > 0 else 0
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
        # the example's diagnosis, else the first matching one of the group
        diagnosed = [example] + [c for c in cs if c is not example]
        diagnosis = next((c["diagnosis"] for c in diagnosed if c["diagnosis"] and c["diagnosis"]["matched"]),
                         example["diagnosis"])
        add("fail", (1, tier_mode, -_log(mag), -len(cs)), text, impl=impl, dtypes=dtypes,
            kind=kind, scenario=example["scenario"], anchor=example["id"], cells=len(cs),
            known=known, diagnosis=diagnosis)

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

    # 2b. convention differences (harness.contracts): apart from the defects, after the known
    #     failures -- per implementation, profile and differences, dtypes and kinds merged
    cgroups: dict[tuple, list[dict]] = defaultdict(list)
    for c in run.cells:
        if c["status"] == "convention":
            conv = c["convention"] or {}
            cgroups[(c["impl"], str(conv.get("profile", "?")), tuple(conv.get("differences", ())),
                     c["contract"])].append(c)
    for (impl, profile, diffs, judged), cs in cgroups.items():
        scen = sorted({c["scenario"] for c in cs})
        text = (f"{_subject(run, impl, [c['dtype'] for c in cs])} differs from the {judged} contract "
                f"by {profile}'s convention ({', '.join(diffs)}) in {len(cs)} cell{'s' if len(cs) != 1 else ''} "
                f"(scenario {_and(scen[:3])}{', …' if len(scen) > 3 else ''}): a convention difference, "
                "not a defect (docs/contracts.md)")
        add("convention", (4, -float(len(cs))), text, impl=impl, dtypes=[c["dtype"] for c in cs],
            kind=cs[0]["kind"], scenario=cs[0]["scenario"], anchor=cs[0]["id"], cells=len(cs))

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
