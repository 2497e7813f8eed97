"""The results, indexed: :class:`_Run` wraps a results dict (or file) with the normalised cells,
implementations, throughput rows and the lookups the rest of the report needs."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

from harness import vocabulary
from harness.report.fmt import _dtype_key, _num, cell_id, throughput_id

#: ... and "convention": a convention difference (harness.contracts), not a defect.
STATUSES = (*vocabulary.STATUSES[:4], "convention")
#: Per-implementation counts: a failing or erroring cell that matches a known failure
#: (``[[tool.xent-harness.known-failures]]``) is counted as "known", not as "fail" / "error".
COUNT_KEYS = vocabulary.STATUSES
KINDS = vocabulary.KINDS

# Okabe-Ito (colour-blind safe) first, then Tableau; the canary is drawn grey and dashed.
PALETTE = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
    "#8C564B", "#BCBD22", "#17BECF", "#7F3C8D", "#11A579",
)  # fmt: skip
CANARY_COLOR = "#8A8A8A"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")


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
            "detail": None if not c.get("detail") else str(c.get("detail")),
            "diagnosis": _diagnosis(c.get("diagnosis")),
            # the contract profile it was judged by; for a convention difference, whose (contracts)
            "contract": str(c.get("contract") or "pytorch"),
            "convention": dict(c["convention"]) if isinstance(c.get("convention"), Mapping) else None,
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

    def throughput_errors(self) -> int:
        """Throughput rows that erred (they fail the run like error cells)."""
        return sum(1 for t in self.throughput if t.get("status") == "error")

    def counts(self) -> dict[str, int]:
        """Cells per status; known failures and errors under "known" only."""
        got = Counter("known" if c["known"] else c["status"] for c in self.cells)
        return {k: got[k] for k in COUNT_KEYS}


def _diagnosis(d) -> dict | None:
    """A cell's diagnosis (harness/diagnosis.py) for display: ``text`` (one sentence),
    ``short`` (the closest match, and how many others, for findings), ``best`` (the closest
    match alone), ``matched`` (a bug hypothesis matched), ``names`` (theirs) and ``repro`` (the reproducer's
    path relative to the results file, or None)."""
    if not isinstance(d, Mapping) or not d.get("text"):
        return None
    matches = [m for m in d.get("matches") or [] if isinstance(m, Mapping)]
    repro = d.get("repro")
    short = best = str(d["text"])
    if matches:  # the closest match; the others are in the details
        short = best = f"matches: {matches[0].get('text')}"
        if len(matches) > 1:
            short += f" ({len(matches) - 1} more hypothes{'es' if len(matches) > 2 else 'is'} also consistent)"
    return {"text": str(d["text"]), "short": short, "best": best, "matched": bool(matches),
            "names": [str(m.get("name")) for m in matches],
            "repro": str(repro) if isinstance(repro, str) and repro else None}


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
