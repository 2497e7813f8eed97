"""The report's plots: matplotlib figures of a run as inline SVG strings.

Matplotlib is imported lazily, inside the functions that draw (Agg canvas, no pyplot state);
the SVG keeps text as text and has a fixed hash salt and no date, so the same results give the
same bytes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from types import MappingProxyType

from harness import vocabulary
from harness.report.fmt import _bytes, _dtype_key, _finite, _num, fmt_num
from harness.report.model import _Run


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
        # the axis stops at 1e300: a larger finite error (an output off by ~1e307 ULPs) is drawn
        # at the top instead of overflowing the axis arithmetic
        top = min(max([*finite, *budgets, 10.0]), 1e300)
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
