"""The view model of the HTML page: one builder per section of ``report.html``, and
:func:`_view`, which puts them together into the template's variables."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from fnmatch import fnmatchcase

from harness import vocabulary
from harness.report.baseline import _ORDER, compare
from harness.report.finding import findings
from harness.report.fmt import (
    KIND_WORDS,
    _and,
    _bytes,
    _clip,
    _dtype_key,
    _finite,
    _jnum,
    _log,
    _num,
    _rate,
    _seconds,
    _slug,
    _value,
    fmt_num,
)
from harness.report.model import KINDS, STATUSES, _Run

DTYPE_SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
SYMBOL = {
    "pass": "✓",
    "fail": "✗",
    "error": "!",
    "known": "✗ₖ",
    "unsupported": "–",
    "convention": "≈",
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
    "convention": "convention difference",
    "unavailable": "unavailable",
    "skipped": "skipped",
    "none": "no cells",
}


def _state(c: dict) -> str:
    """A cell's status for display: a known failure or error is "known"."""
    return "known" if c["known"] else c["status"]


def _family_status(cells: list[dict]) -> str:
    if not cells:
        return "none"
    st = {_state(c) for c in cells}
    for s in ("fail", "error", "known", "convention", "pass"):
        if s in st:
            return s
    return "unsupported"


def _cell_title(cells: list[dict]) -> str:
    cnt = Counter(_state(c) for c in cells)
    parts = [f"{cnt[s]} {STATUS_WORD[s]}{'s' if s == 'known' and cnt[s] > 1 else ''}"
             for s in ("pass", "fail", "error", "known", "convention", "unsupported") if cnt[s]]
    text = ", ".join(parts) if parts else "no cells"
    reasons = sorted({c["known"] for c in cells if c["known"]})
    if reasons:
        text += " (documented, not gating: " + "; ".join(_clip(r, 160) for r in reasons) + ")"
    return text


def _known_note(i: dict, cells: list[dict]) -> str:
    n = i["counts"].get("known", 0)
    if not n:
        return ""
    reasons = sorted({c["known"] for c in cells if c["impl"] == i["name"] and c["known"]})
    head = f"{n} known failure{'s' if n != 1 else ''} (not gating)"
    return head + (": " + "; ".join(_clip(r, 140) for r in reasons) if reasons else "")


def _contract_notes(i: dict, cells: list[dict]) -> list[str]:
    """The contract an implementation was judged by and declares (harness.contracts), and its
    convention differences (cells failing the run's contract, passing its own profile)."""
    mine = [c for c in cells if c["impl"] == i["name"]]
    judged = sorted({c["contract"] for c in mine}) or ["pytorch"]
    own = str(i.get("contract") or "pytorch")
    notes = [f"contract: {', '.join(judged)}" + (f" (declares {own})" if own not in judged else "")]
    conv = [c for c in mine if c["status"] == "convention"]
    if conv:
        diffs = sorted({d for c in conv for d in (c["convention"] or {}).get("differences", [])})
        notes.append(f"{len(conv)} convention difference{'s' if len(conv) != 1 else ''} "
                     f"({own}: {', '.join(diffs)}; not defects, not gating)")
    return notes


# ----------------------------------------------------------------------------------------------
# Summary


def _impl_rows(run: _Run) -> list[dict]:
    """One row per implementation: verdict, notes, counts."""
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
        notes += _contract_notes(i, run.cells)
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
    return impl_rows


def _matrix_rows(run: _Run, impls: list[dict], dtypes: list[str]) -> list[dict]:
    """The verdict matrix: family x (implementation, dtype)."""
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
    return matrix_rows


def _headline(run: _Run, impls: list[dict], counts: dict[str, int]) -> dict:
    """The verdict, the headline sentence and the note on the canary's failures."""
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
    return {
        "verdict": verdict, "headline": headline, "fail_note": fail_note,
        "expected_only": bool(fail_note) and canary_fail == counts["fail"] and verdict == "pass",
        "has_known": bool(n_known),
    }


def _known_rows(run: _Run) -> list[dict]:
    """The known failures: the entries of the results file and how many cells each matched."""
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
    return known_rows


# ----------------------------------------------------------------------------------------------
# Special values and throughput


def _special_rows(run: _Run, impls: list[dict], dtypes: list[str]) -> list[dict]:
    """The special-values table: scenario x (implementation, dtype)."""
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
    return special_rows


def _throughput_rows(run: _Run) -> list[dict]:
    """The throughput table, by implementation, dtype, pass and problem size."""
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
    return tp_rows


# ----------------------------------------------------------------------------------------------
# Details


def _details_data(run: _Run, dtypes: list[str]) -> dict:
    """Every cell as a compact row of indexes and numbers (rendered by the page's script)."""
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
    details: dict[str, int] = {}
    repros: dict[str, int] = {}  # reproducers' paths (harness/repro.py), relative to the results
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
        row = [
            impl_ix[c["impl"]], dtype_ix[c["dtype"]], scen_ix[c["scenario"]],
            kinds.index(c["kind"]), st, _jnum(m.get("ulp_max")), _jnum(m.get("ulp_median")),
            _jnum(m.get("ulp_p99")), _jnum(m.get("scaled_max")), _jnum(m.get("rel_max")),
            _jnum(m.get("normwise")), budgets.setdefault(btext, len(budgets)), mi,
            _jnum(outside), _jnum(m.get("count")) if m else None, ki,
            -1 if not c["detail"] else details.setdefault(c["detail"], len(details)),
        ]
        if c["diagnosis"]:  # the diagnosis (harness/diagnosis.py) and the reproducer written with it
            repro = c["diagnosis"]["repro"]
            row += [msgs.setdefault(c["diagnosis"]["text"], len(msgs)),
                    -1 if not repro else repros.setdefault(repro, len(repros))]
        rows.append(row)
    # worst first: failures, errors, known failures, passes above the ULP budget, passes,
    # not supported
    order = ("fail", "error", "fail (known)", "error (known)", "convention", "pass (scaled)", "pass",
             "unsupported")
    severity = {statuses.index(name): k for k, name in enumerate(order)}
    rows.sort(key=lambda r: (severity[r[4]], -_log(_num(r[5])) if r[5] is not None else 0.0))
    data = {
        "impls": impl_names, "implSlugs": [_slug(n) for n in impl_names], "dtypes": dtypes,
        "scenarios": scen_names, "scenSlugs": [_slug(s) for s in scen_names],
        "scenFamily": [fam_ix.get(str(run.scenarios.get(s, {}).get("family")), -1)
                       if s in run.scenarios else -1 for s in scen_names],
        "families": run.families, "kinds": kinds, "statuses": statuses,
        "messages": list(msgs), "details": list(details), "budgets": list(budgets), "rows": rows,
        "repros": list(repros),
    }
    # families of scenarios only seen in cells
    for c in run.cells:
        k = scen_ix[c["scenario"]]
        if data["scenFamily"][k] == -1:
            data["scenFamily"][k] = fam_ix.get(c["family"], -1)
    return data


# ----------------------------------------------------------------------------------------------
# Provenance


def _provenance(run: _Run, dtypes: list[str]) -> list[tuple[str, str]]:
    """The run's provenance as (label, text) pairs."""
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
    return [
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
        ("known failures", str(run.raw.get("known_failures_source") or "–")),
    ]


def _budget_rows(run: _Run) -> list[dict]:
    budget_rows = []
    for d in sorted(run.budgets, key=_dtype_key):
        b = run.budgets[d] or {}
        budget_rows.append({"dtype": d, **{k: fmt_num(b.get(k)) for k in
                                          vocabulary.BUDGET_KEYS}})
    return budget_rows


def _scenario_rows(run: _Run) -> list[dict]:
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
    return scen_rows


# ----------------------------------------------------------------------------------------------
# Comparison


def _comparison(run: _Run, baseline: _Run | None) -> dict | None:
    """The comparison section: counts per kind of change and the changed rows (at most 400)."""
    if baseline is None:
        return None
    changes = compare(run, baseline)
    cnt = Counter(e["change"] for e in changes)
    shown = [e for e in changes if e["change"] not in ("unchanged",)]
    limit = 400
    return {
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


# ----------------------------------------------------------------------------------------------
# The page


def _view(run: _Run, baseline: _Run | None, plots: dict[str, str]) -> dict:
    """The template's variables for ``run`` (and its comparison with ``baseline``)."""
    impls = run.available_impls()
    unavailable = [i for i in run.impls if i not in impls]
    dtypes = run.dtypes
    counts = run.counts()
    comparison = _comparison(run, baseline)
    sections = [("summary", "Summary"), ("findings", "Findings"), ("accuracy", "Accuracy"),
                ("gradients", "Gradients"), ("special", "Special values"),
                ("throughput", "Throughput"), ("details", "Details"),
                ("provenance", "Provenance")]
    if comparison:
        sections.append(("comparison", "Comparison"))
    return {
        "title": f"xent-harness report {run.run.get('id') or ''}".strip(),
        "run_id": str(run.run.get("id") or "–"),
        "date": str(run.run.get("started") or run.prov.get("date") or "–"),
        "command": str(run.run.get("command") or "–"),
        "complete": bool(run.run.get("complete", True)),
        **_headline(run, impls, counts),
        "counts": counts, "total": sum(counts.values()), "throughput_errors": run.throughput_errors(),
        "known_rows": _known_rows(run),
        "n_impls": len(impls), "n_all_impls": len(run.impls), "n_scenarios": len(run.scenarios),
        "dtypes": dtypes, "dtype_short": [DTYPE_SHORT.get(d, d) for d in dtypes],
        "impl_rows": _impl_rows(run),
        "matrix_impls": [{"name": i["name"], "color": run.color[i["name"]],
                          "canary": i["canary"], "slug": _slug(i["name"])} for i in impls],
        "unavailable": [{"name": i["name"], "verdict": i["verdict"] if i["available"] or i["verdict"] == "error"
                         else "unavailable", "reason": str(i.get("reason") or (
                             "canary, left out of this gate" if i["canary"] else "not run"))}
                        for i in unavailable],
        "matrix_rows": _matrix_rows(run, impls, dtypes),
        "findings": findings(run), "findings_shown": 10,
        "plots": plots,
        "special_rows": _special_rows(run, impls, dtypes),
        "tp_rows": _throughput_rows(run),
        "data": _details_data(run, dtypes),
        "provenance": _provenance(run, dtypes), "budget_rows": _budget_rows(run),
        "scen_rows": _scenario_rows(run),
        "comparison": comparison,
        "sections": sections,
        "legend": [(s, SYMBOL[s], STATUS_WORD[s] + (" (documented, not gating)" if s == "known"
                                                   else "")) for s in
                   ("pass", "fail", "error", "known", "convention", "unsupported", "none")],
        "throughput_measured": "throughput" in (run.run.get("kinds") or ["throughput"]),
        "kinds_text": ", ".join(map(str, run.run.get("kinds") or [])),
    }
