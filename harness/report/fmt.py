"""Formatting helpers shared by the report's modules: numbers, sizes, times and rates for people,
numbers for the embedded JSON, id fragments and anchors, and lists in sentences."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping

from harness import vocabulary

DTYPE_ORDER = vocabulary.DTYPES
KIND_WORDS = {"accuracy": "loss", "gradient": "gradient", "special": "special values"}


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
    """An output or reference value in a sentence: :func:`fmt_num`, but an unknown value is "?"
    and +inf is signed, so that it reads against −inf."""
    x = _num(x)
    if x is None:
        return "?"
    return "+inf" if x == math.inf else fmt_num(x)


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


def _log(x: float | None) -> float:
    """log10 for ranking: no value lowest, NaN and inf highest."""
    if x is None:
        return -400.0
    if math.isnan(x):
        return 400.0
    if math.isinf(x):
        return 400.0
    return math.log10(x) if x > 0 else -400.0


def _clip(s: str, n: int) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"

