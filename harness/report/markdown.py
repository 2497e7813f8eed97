"""The Markdown summary: a few lines for CI logs, pull-request comments and GitHub's job
summary."""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from harness.report.baseline import _ORDER, compare
from harness.report.finding import findings
from harness.report.fmt import KIND_WORDS, _and, _clip, _dtype_key
from harness.report.model import _as_run, _Run
from harness.report.page import write_atomic


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
    diagnoses: dict[tuple, set] = defaultdict(set)
    for c in run.cells:
        if c["known"]:
            by[(c["known"], c["impl"], c["kind"])][c["scenario"]].add(c["dtype"])
            d = c["diagnosis"]
            diagnoses[(c["known"], c["impl"], c["kind"])].add(d["best"] if d and d["matched"] else None)
    out = []
    for (reason, impl, kind), scen in by.items():
        per: dict[tuple, list[str]] = defaultdict(list)
        for name, dts in scen.items():
            per[tuple(sorted(dts, key=_dtype_key))].append(name)
        # the diagnosis, when every diagnosed cell of the group has the same closest match
        found = diagnoses[(reason, impl, kind)] - {None}
        diag = f" (diagnosis: {_clip(next(iter(found)), 200)})" if len(found) == 1 else ""
        for dts, names in per.items():
            names = sorted(names)
            shown = names[:5] + ([f"{len(names) - 5} more"] if len(names) > 5 else [])
            out.append(f"{impl} {_and(list(dts))} {KIND_WORDS.get(kind, kind)}: {_and(shown)} "
                       f"— {_clip(reason, 200)}{diag}")
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
        + (f", {run.throughput_errors():,} throughput errors" if run.throughput_errors() else "")
        + ("" if run.run.get("complete", True) else " · **incomplete run**"),
        "",
        "| implementation | verdict | pass | fail | error | known | not supported |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for i in run.impls:
        v = i["verdict"] if i["available"] or i["verdict"] == "error" else "unavailable"
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
    return write_atomic(Path(path), render_markdown(results, baseline))


def append_github_summary(md: str) -> bool:
    """Append ``md`` to the file named by $GITHUB_STEP_SUMMARY; False when it is not set."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as f:
        f.write(md if md.endswith("\n") else md + "\n")
    return True
