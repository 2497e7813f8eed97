"""The HTML page: the Jinja2 environment over ``harness/templates`` and the page's rendering
and atomic writing."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from harness.report.fmt import _bytes, _seconds, fmt_num
from harness.report.model import _as_run
from harness.report.plots import _Plotter
from harness.report.view import _view

#: The page's templates (``harness/templates``, next to this package).
TEMPLATES = Path(__file__).parent.parent / "templates"


@cache
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":"),
                                         "allow_nan": False, "ensure_ascii": False}
    env.filters["num"] = fmt_num
    env.filters["bytes"] = _bytes
    env.filters["seconds"] = _seconds
    return env


def render_html(results: dict, baseline: dict | None = None) -> str:
    """The report page for ``results`` (and its comparison with ``baseline``), as a string."""
    run = _as_run(results)
    base = _as_run(baseline) if baseline is not None else None
    plots = _Plotter(run).render()
    view = _view(run, base, plots)
    return _environment().get_template("report.html").render(**view)


def write_html(results: dict, path, baseline: dict | None = None) -> Path:
    """Write the report page to ``path`` (atomically) and return the path."""
    return write_atomic(Path(path), render_html(results, baseline))


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` atomically (temporary file + rename); OSError becomes a one-line
    ValueError naming the file, and no temporary file is left behind."""
    if path.is_dir():
        raise ValueError(f"report: {path} is a directory; name a file to write")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # its folder could not be made either
            pass
        raise ValueError(f"report: cannot write {path} ({exc.strerror or exc})") from None
    return path
