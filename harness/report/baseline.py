"""The comparison with a baseline run: per-cell error changes and per-row speed changes."""

from __future__ import annotations

import math

from harness.report.fmt import KIND_WORDS, _finite, _log, _seconds, fmt_num
from harness.report.model import _as_run

#: Speed changes below this fraction are noise whatever the measured spread.
MIN_NOISE = 0.10
#: A cell's error changed when it moved by this factor and by at least half an ULP.
ERROR_CHANGE_FACTOR = 1.5

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
