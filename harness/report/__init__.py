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

The package, one module per job: :mod:`~harness.report.model` (the results, indexed),
:mod:`~harness.report.finding`, :mod:`~harness.report.baseline` (the comparison),
:mod:`~harness.report.plots`, :mod:`~harness.report.view` (the page's view model, one builder
per section), :mod:`~harness.report.page` (the HTML page), :mod:`~harness.report.markdown` and
:mod:`~harness.report.fmt` (number formatting). Every name below stays importable from
``harness.report``.
"""

from __future__ import annotations

from harness.report.baseline import ERROR_CHANGE_FACTOR as ERROR_CHANGE_FACTOR
from harness.report.baseline import MIN_NOISE as MIN_NOISE
from harness.report.baseline import compare
from harness.report.finding import AXIS_WORDS as AXIS_WORDS
from harness.report.finding import PRECISION as PRECISION
from harness.report.finding import SURPRISE_FACTOR as SURPRISE_FACTOR
from harness.report.finding import findings
from harness.report.fmt import DTYPE_ORDER as DTYPE_ORDER
from harness.report.fmt import KIND_WORDS as KIND_WORDS
from harness.report.fmt import _bytes as _bytes
from harness.report.fmt import _clip as _clip
from harness.report.fmt import _num as _num
from harness.report.fmt import _seconds as _seconds
from harness.report.fmt import _slug as _slug
from harness.report.fmt import cell_id as cell_id
from harness.report.fmt import fmt_num as fmt_num
from harness.report.fmt import throughput_id as throughput_id
from harness.report.markdown import _md as _md
from harness.report.markdown import append_github_summary, render_markdown, write_markdown
from harness.report.model import CANARY_COLOR as CANARY_COLOR
from harness.report.model import COUNT_KEYS as COUNT_KEYS
from harness.report.model import KINDS as KINDS
from harness.report.model import MARKERS as MARKERS
from harness.report.model import PALETTE as PALETTE
from harness.report.model import STATUSES as STATUSES
from harness.report.model import _as_run as _as_run
from harness.report.model import _Run as _Run
from harness.report.page import render_html, write_atomic, write_html
from harness.report.plots import FAIL_MARK as FAIL_MARK
from harness.report.plots import KNOWN_MARK as KNOWN_MARK
from harness.report.plots import _Plotter as _Plotter
from harness.report.view import DTYPE_SHORT as DTYPE_SHORT
from harness.report.view import STATUS_WORD as STATUS_WORD
from harness.report.view import SYMBOL as SYMBOL
from harness.report.view import _view as _view

__all__ = [
    "append_github_summary",
    "compare",
    "findings",
    "render_html",
    "render_markdown",
    "write_atomic",
    "write_html",
    "write_markdown",
]
