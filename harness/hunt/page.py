"""The hunt's offline page (``hunt.html``): per dtype x quantity the convergence of the worst
error over evaluations (the hunt and its uniform baseline; matplotlib, inline SVG as the main
report), the worst rows in words, and the fixed catalogue's worst for comparison."""

from __future__ import annotations

import math
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def convergence_svg(p: dict, objective: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from harness.report.plots import _svg

    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    try:
        for label, conv, style in (("hunt", p["convergence"], "-"),
                                   ("uniform baseline", (p.get("baseline") or {}).get("convergence", []), "--")):
            if conv:
                xs = [c[0] for c in conv]
                # the plot caps inf at 1e300 (a nonfinite result) so the curve stays drawable
                ys = [min(max(_f(c[2]), 1e-3), 1e300) for c in conv]
                ax.step(xs, ys, style, where="post", label=label)
        cat = p.get("catalogue")
        if cat and objective == "ulp":
            ax.axhline(max(_f(cat["ulp"]), 1e-3), color="gray", lw=0.8, ls=":", label="fixed catalogue's worst")
        ax.set_yscale("log")
        ax.set_xlabel("evaluations (rows)")
        ax.set_ylabel(f"worst {objective}")
        ax.set_title(f"{p['dtype']} {p['quantity']}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return _svg(fig, f"hunt-{p['dtype']}-{p['quantity']}")
    finally:
        plt.close(fig)


def render(data: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]))
    objective = data["request"]["objective"]
    pairs = [dict(p, svg=convergence_svg(p, objective)) for p in data["pairs"]]
    return env.get_template("hunt.html").render(data=data, pairs=pairs, objective=objective)
