"""What a hunt leaves: every top row confirmed as a sweep cell (:class:`harness.fuzz.Judge`,
budgets and known failures in force) and saved as a golden-format case in ``<out>/cases``
(:func:`harness.found_cases.save_case`: ``check --cases DIR`` and the pytest plugin replay it),
the fixed catalogue's worst for the same implementation, ``hunt.json`` and ``hunt.html``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from harness.formats import FORMATS
from harness.hunt.search import single_problem
from harness.hunt.space import features, row

SUMMARY = "hunt.json"
PAGE = "hunt.html"
_KIND = {"loss": "accuracy", "grad": "gradient"}


def _num(v):
    """JSON-safe numbers: inf/NaN as strings, as results.json does not allow them either."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def words(cand, fmt, quantity: str, score: dict) -> str:
    """A top row in words: 'gap 87.3, C = 2, float32: 2.1e7 ULP (...)'."""
    x, t = row(cand, fmt)
    f = features(x, t)
    parts = [f"{cand.body} logits"]
    if f["gap"] is not None:
        parts.append(f"gap {f['gap']:.4g}")
    parts.append(f"max {f['max']:.4g}, min {f['min']:.4g}")
    if cand.nudges:
        parts.append(f"{len(cand.nudges)} logit(s) moved by ULPs")
    if cand.eps:
        parts.append(f"label smoothing {cand.eps:.3g}")
    parts.append(f"C = {cand.C}")
    return (", ".join(parts) + f", {fmt.name} {quantity}: {score['ulp']:.3g} ULP, "
            f"{score['scaled']:.3g} scaled units ({score['budget']:.3g}x the budget)")


def pair_record(entry, dtype: str, quantity: str, res: dict, base: dict | None, ev, req) -> dict:
    fmt = FORMATS[dtype]
    top = []
    for obj, _, cand, sc in res["top"]:
        x, t = row(cand, fmt)
        top.append({"objective": _num(obj), "candidate": cand.to_json(), "strategy": sc.get("strategy"),
                    "score": {k: _num(v) for k, v in sc.items() if k != "strategy"},
                    "features": features(x, t), "words": words(cand, fmt, quantity, sc)})
    rec = {"dtype": dtype, "quantity": quantity, "evaluations": res["evaluations"], "evaluated": ev.evaluations,
           "replayed": res["replayed"], "calls": ev.calls, "seconds": round(res["seconds"], 3),
           "worst": _num(res["worst"]), "convergence": [[a, b, _num(c)] for a, b, c in res["convergence"]], "top": top}
    if base is not None:
        rec["baseline"] = {"strategy": "uniform", "evaluations": base["evaluations"], "worst": _num(base["worst"]),
                           "seconds": round(base["seconds"], 3),
                           "convergence": [[a, b, _num(c)] for a, b, c in base["convergence"]],
                           "top": [{"words": words(c, fmt, quantity, s), "objective": _num(o)} for o, _, c, s in base["top"]]}
    return rec


def confirm_and_save(entry, pairs: list[dict], req, out: Path, table: dict, log) -> None:
    """Judge every top row as a sweep cell and save it as a case in ``out/cases``."""
    from harness.found_cases import case_name, save_case
    from harness.fuzz import Judge
    from harness.hunt.space import Candidate

    judge = Judge(entry, budgets=table)
    try:
        for p in pairs:
            fmt = FORMATS[p["dtype"]]
            kind = _KIND[p["quantity"]]
            for t in p["top"]:
                problem = single_problem(Candidate.from_json(t["candidate"]), fmt)
                cells = [c for c in judge.cells(problem) if c["kind"] in (kind, "special")]
                cell = next((c for c in cells if c["kind"] == kind), None)
                m = (cell or {}).get("metrics") or {}
                t["case"] = case_name(problem)
                t["cell"] = {"status": (cell or {}).get("status"), "known": bool((cell or {}).get("known")),
                             "message": (cell or {}).get("message"), "ulp_max": _num(m.get("ulp_max")),
                             "scaled_max": _num(m.get("scaled_max"))}
                messages = [c["message"] for c in cells if c.get("message")] or [t["words"]]
                save_case(problem, {"impl": entry.name, "kinds": sorted({c["kind"] for c in cells}) or [kind],
                                    "messages": messages, "seed": req.seed}, out / "cases")
    finally:
        judge.close()


def catalogue_worst(entry, req, out: Path, log) -> tuple[dict, str]:
    """Per 'dtype/quantity': the fixed catalogue's largest ulp_max and scaled_max for this
    implementation, from ``--against`` results or a quick accuracy + gradient run."""
    from harness import campaign
    from harness import results as results_mod

    if req.against:
        data, source = results_mod.load(req.against), req.against
    else:
        log(f"hunt: the fixed catalogue's quick subset for {entry.name} (for the comparison)")
        done = campaign.run(campaign.Request(kinds=("accuracy", "gradient"), impls=[req.impl], dtypes=list(req.dtypes),
                                             quick=True, out=out / "catalogue" / "run", force=True,
                                             reports=out / "catalogue"), log=lambda m: None)
        data, source = done.data, f"{out / 'catalogue' / 'run'} (quick subset)"
    worst: dict = {}
    for c in data.get("cells", []):
        if c.get("impl") != entry.name or c.get("kind") not in ("accuracy", "gradient") or str(c.get("scenario", "")).startswith("found-"):
            continue
        m = c.get("metrics") or {}
        key = f"{c['dtype']}/{'loss' if c['kind'] == 'accuracy' else 'grad'}"
        w = worst.setdefault(key, {"ulp": 0.0, "scaled": 0.0, "scenario": None, "cells": 0})
        w["cells"] += 1
        u = _f(m.get("ulp_max"))
        if u > w["ulp"]:
            w["ulp"], w["scenario"] = u, c["scenario"]
        w["scaled"] = max(w["scaled"], _f(m.get("scaled_max")))
    return worst, source


def _f(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return math.inf if math.isnan(v) else v


def finish(data: dict, entry, req, out: Path, table: dict, *, log: Callable[[str], None] = print) -> None:
    confirm_and_save(entry, data["pairs"], req, out, table, log)
    data["cases"] = str(out / "cases")
    if req.catalogue:
        worst, source = catalogue_worst(entry, req, out, log)
        data["catalogue"] = {"source": source, "worst": {k: {kk: _num(vv) for kk, vv in v.items()} for k, v in worst.items()}}
        for p in data["pairs"]:
            cw = worst.get(f"{p['dtype']}/{p['quantity']}")
            hunt_ulp = max((_f(t["score"]["ulp"]) for t in p["top"]), default=0.0)
            p["catalogue"] = None if cw is None else {
                "ulp": _num(cw["ulp"]), "scaled": _num(cw["scaled"]), "scenario": cw["scenario"],
                "hunt_ulp": _num(hunt_ulp), "hunt_beats_catalogue": hunt_ulp > cw["ulp"]}
    for p in data["pairs"]:
        for t in p["top"][:3]:
            log(f"  {t['case']}: {t['words']} [{t['cell']['status']}]")
    _write(out / SUMMARY, json.dumps(data, indent=1, sort_keys=True) + "\n")
    try:
        from harness.hunt import page
    except ImportError as exc:  # matplotlib / jinja2 missing: the JSON and the cases stand
        log(f"hunt: no {PAGE} ({exc}; install the 'report' extra)")
        return
    _write(out / PAGE, page.render(data))
    log(f"hunt: {out / SUMMARY}, {out / PAGE}, cases in {out / 'cases'} (xent-harness check --impl {req.impl} "
        f"--cases {out / 'cases'})")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
