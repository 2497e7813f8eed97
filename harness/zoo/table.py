"""``xent-harness zoo``: judge every available zoo adapter and the built-ins in one run, then
write the comparison table (docs/zoo.md) from that run's results.

The run is a ``check``-like campaign (accuracy, gradient and special-value cells, no timing) of
every available built-in (the canary included, so the table shows the harness catching it) and
every available adapter of :data:`harness.zoo.ADAPTERS` into one run directory, with its
results.json, report.html and summary.md as any run. Adapters are named by their entry point
when this installation registers them, else by their ``module:Class`` (a checkout whose
metadata predates them); unavailable ones are listed with their reason. ``--quick`` takes the
CI scenarios plus :data:`QUICK_EXTRA`, the few scenarios where libraries' conventions differ
most (−inf masks next to the target, unnormalised probability targets), so a quick table still
shows them.

The Markdown page is a function of the results file alone (:func:`render`), so it can be
regenerated from any finished zoo run: ``python -m harness.zoo.table RUN_DIR [OUT.md]`` (the
run directory keeps ``zoo.json``: the command, the unavailable adapters, the versions).
The zoo is a benchmark, not a gate: findings are its content, and the command exits 0 when the
run finished (2 on bad input, as every command).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness import zoo

#: Added to the quick (CI) scenarios in ``zoo --quick``: where libraries' conventions part.
QUICK_EXTRA = ("masked-next", "masked-most", "prob-raw-sum")
#: Finding lines (status × kind × dtype) shown per implementation (the results have every cell).
FINDINGS_SHOWN = 8
#: The zoo's diagnosis budget (cells, seconds): enough for the first cell of every (library,
#: kind, dtype) finding on the quick scenarios (~40 groups; a run's default is 32 cells, 60 s).
DIAGNOSE = (160, 300.0)
DEFAULT_DOC = Path("docs") / "zoo.md"
#: What a zoo run keeps beside its results for the page: the command, the unavailable
#: adapters and each implementation's library version at the time of the run.
SIDECAR = "zoo.json"


def scenario_names(quick: bool, patterns: list[str] | None) -> list[str] | None:
    """The scenarios of a zoo run: the patterns given, else the quick set plus
    :data:`QUICK_EXTRA` with ``quick``, else None (every non-large scenario)."""
    if patterns:
        return list(patterns)
    if not quick:
        return None
    from harness import scenarios

    names = [s.name for s in scenarios.select(None, quick=True)]
    return names + [n for n in QUICK_EXTRA if n not in names]


def implementations(timeout: float = 60.0, log: Callable[[str], None] = print) -> tuple[list[str], list[dict]]:
    """(what to run, the unavailable rows): the available built-ins and zoo adapters, by registry
    name or, for adapters this installation has not registered, by ``module:Class``. Plugins are
    probed in children, as always; other plugins installed here are not part of the zoo."""
    from harness import registry

    entries = registry.discover(timeout=timeout)
    names = {e.name for e in entries}
    specs = [a.target for a in zoo.ADAPTERS if a.name not in names]
    if specs:
        log(f"zoo: {len(specs)} adapters are not registered by this installation (reinstall it to register "
            "them); loading them by module:Class")
        entries += [e for e in registry.discover(specs, timeout=timeout) if e.extra.get("spec") in specs]
    wanted = set(registry.BUILTINS) | set(zoo.by_name())
    run, unavailable = [], []
    for e in entries:
        spec = e.extra.get("spec")
        by_target = {a.target: a.name for a in zoo.ADAPTERS}
        name = e.impl.name if e.impl is not None else by_target.get(spec, e.name)
        if name not in wanted and spec not in specs:
            continue
        reason = e.unavailable()
        if reason:
            unavailable.append({"name": name, "reason": reason})
        else:
            run.append(spec if spec in specs else e.name)
    return run, unavailable


def run(*, quick: bool = False, dtypes: list[str] | None = None, patterns: list[str] | None = None,
        out: Path | str | None = None, force: bool = False, doc: Path | str | None = DEFAULT_DOC,
        workers: int | None = None, timeout: float = 60.0, argv: list[str] | None = None,
        log: Callable[[str], None] = print, progress=None):
    """The zoo run and its page: returns (the campaign's Outcome, the page's path or None)."""
    from harness import campaign

    impls, unavailable = implementations(timeout, log)
    for row in unavailable:
        log(f"skip {row['name']}: {row['reason']}")
    req = campaign.Request(kinds=campaign.CHECK, impls=impls, dtypes=dtypes,
                           scenarios=scenario_names(quick, patterns), quick=False, out=out, force=force,
                           workers=workers, timeout=timeout, argv=argv, diagnose=DIAGNOSE)
    done = campaign.run(req, log=log, progress=progress)
    if done.interrupted or doc is None:
        return done, None
    names = [r["name"] for r in done.data.get("implementations", [])] + [u["name"] for u in unavailable]
    side = {"command": _command(argv), "unavailable": unavailable,
            "libraries": {n: _library(n) for n in names}}
    _write_text(done.out / SIDECAR, json.dumps(side, indent=1) + "\n")
    path = Path(doc)
    _write_text(path, render(done.data, side))
    log(f"zoo: {path} written ({len(impls)} implementations judged, {len(unavailable)} unavailable)")
    return done, path


def _command(argv: list[str] | None) -> str:
    """The command that reproduces the page: the run's arguments less where it wrote
    (``--out``, ``--force``, ``--doc``), which do not change what is judged."""
    import shlex

    args, kept, skip = list(argv if argv is not None else sys.argv[1:]), [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--out", "--doc"):
            skip = True
        elif a != "--force" and not a.startswith(("--out=", "--doc=")):
            kept.append(a)
    return "xent-harness " + " ".join(shlex.quote(a) for a in kept)


def _write_text(path: Path, text: str) -> None:
    """``text`` into ``path`` atomically (a temporary file beside it, renamed into place)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the page ----------------------------------------------------------------------------------


def _library(name: str) -> str:
    entry = zoo.by_name().get(name)
    dists = entry.distribution if entry else zoo.BUILTIN_LIBRARIES.get(name, ())
    return zoo.library_version(dists) or "-"


def _extra(name: str) -> str:
    entry = zoo.by_name().get(name)
    return f"`{entry.extra}`" if entry else "built-in"


def _cpu(cpu) -> str:
    if isinstance(cpu, dict):
        return f"{cpu.get('model') or '?'} ({cpu.get('cores') or '?'} cores)"
    return str(cpu or "-")


def _findings(cells: list[dict], name: str) -> list[str]:
    """One implementation's failing and erroring cells (and its convention differences,
    harness.contracts), one line per (status, kind, dtype): how
    many scenarios, which (the first few), and the first one's message as the example. Most
    frequent first, so a library's main finding leads."""
    groups: dict = {}
    for c in cells:
        if c["impl"] != name or c["status"] not in ("fail", "error", "convention"):
            continue
        groups.setdefault((c["status"], c["kind"], c["dtype"]), []).append(c)
    order = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}
    lines = []
    for (status, kind, dtype), group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), order.get(kv[0][2], 9),
                                                                                 kv[0][1], kv[0][0])):
        scen = [c["scenario"] for c in group]
        shown = ", ".join(f"`{n}`" for n in scen[:4]) + (f", ... ({len(scen) - 4} more)" if len(scen) > 4 else "")
        first = group[0]
        message = (first.get("message") or "").replace("|", "\\|")
        known = sum(1 for c in group if c.get("known"))
        tag = f" *({known} known: pyproject.toml)*" if known else ""
        noun = "scenario" if len(scen) == 1 else "scenarios"
        line = f"{status} {kind} {dtype}: {len(scen)} {noun} ({shown}){tag}; e.g. `{first['scenario']}`: {message}"
        # the diagnosis of the group's first diagnosed cell that is not a known failure (those
        # have their reason in pyproject.toml already)
        diagnosed = [c for c in group if not c.get("known") and (c.get("diagnosis") or {}).get("text")]
        if diagnosed:
            d = diagnosed[0]
            line += f" — **diagnosis** (`{d['scenario']}`): {d['diagnosis']['text'].replace('|', chr(92) + '|')}"
        lines.append(line)
    return lines


def render(data: dict, side: dict | None = None) -> str:
    """docs/zoo.md from a zoo run's results and its :data:`SIDECAR` (without it: the command
    the results record, no unavailable rows, the versions installed now)."""
    side = side or {}
    unavailable = side.get("unavailable") or []
    versions = side.get("libraries") or {}

    def library(name: str) -> str:
        return versions.get(name) or _library(name)

    prov = data.get("provenance") or {}
    run_ = data.get("run") or {}
    cells = data.get("cells") or []
    rows = data.get("implementations") or []
    scen = data.get("scenarios") or []
    dtypes = run_.get("dtypes") or []
    command = side.get("command") or run_.get("command") or "xent-harness zoo"
    out = ["# The zoo: softmax cross-entropy across libraries", "",
           "Generated by `" + command + "` (`harness/zoo/table.py`); do not edit by hand, rerun it.",
           f"Run {run_.get('id', '-')} on {prov.get('date') or run_.get('started') or '-'}: "
           f"xent-harness {prov.get('harness', '-')}, Python {prov.get('python', '-')}, "
           f"{prov.get('platform', '-')}, CPU {_cpu(prov.get('cpu'))}, {prov.get('threads', '-')} threads.",
           f"{len(scen)} scenarios × {len(dtypes)} dtypes ({', '.join(dtypes)}); cells: accuracy (the loss), "
           "gradient and special values (the contract's inf/NaN), each judged against the correctly rounded "
           "reference with the budgets of `harness/budgets.toml`. A *finding* is a failing or erroring cell; "
           "*unsupported* cells are what the adapter declares its library does not offer.",
           "", "Install every library with `pip install 'xent-harness[zoo]'` (or one extra each, in the table), "
           "rerun the command above and commit the page. How each adapter calls its library, and what it declares "
           "unsupported, is in its module's docstring (`harness/zoo/`).",
           "", "| implementation | library | extra | verdict | pass | fail | error | unsupported | convention |",
           "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r.get("counts") or {}
        fail = str(c.get("fail", 0) + c.get("known", 0)) + (f" ({c['known']} known)" if c.get("known") else "")
        kind = " (canary)" if r.get("canary") else ""
        out.append(f"| `{r['name']}`{kind} | {library(r['name'])} | {_extra(r['name'])} | {r['verdict']} | "
                   f"{c.get('pass', 0)} | {fail} | {c.get('error', 0)} | {c.get('unsupported', 0)} | "
                   f"{c.get('convention', 0)} |")
    for u in unavailable:
        out.append(f"| `{u['name']}` | {library(u['name'])} | {_extra(u['name'])} | unavailable: {u['reason']} "
                   "| | | | | |")
    out += ["", "'fail' counts known failures too (pyproject.toml lists them so that `check` gates on new "
            "ones); 'convention' counts the cells that differ from PyTorch's contract only by the library's "
            "documented convention (its contract profile, docs/contracts.md): not defects. The zoo is a benchmark, "
            "not a gate.", "", "## Findings per library", "",
            "Failing and erroring cells of each implementation, one line per status, kind and dtype (the "
            f"most frequent first, at most {FINDINGS_SHOWN}): how many scenarios, which, and the first one's "
            "message. The run's report.html and results.json have every cell.", ""]
    for r in rows:
        lines = _findings(cells, r["name"])
        out.append(f"### `{r['name']}` ({library(r['name'])})")
        out.append("")
        desc = r.get("description")
        if desc:
            out += [desc, ""]
        if not lines:
            out += ["No finding: every supported cell passes.", ""]
            continue
        out += [f"- {line}" for line in lines[:FINDINGS_SHOWN]]
        if len(lines) > FINDINGS_SHOWN:
            out.append(f"- ... and {len(lines) - FINDINGS_SHOWN} more lines (see the run's report)")
        out.append("")
    libs = prov.get("libraries") or {}
    if libs:
        out += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in sorted(libs.items()) if v), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.zoo.table RUN_DIR [OUT.md]``: the page of a finished zoo run."""
    from harness import results

    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m harness.zoo.table RUN_DIR [OUT.md]", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    side_path = run_dir / SIDECAR
    side = json.loads(side_path.read_text(encoding="utf-8")) if side_path.exists() else None
    text = render(results.load(run_dir / results.RESULTS), side)
    if len(args) == 2:
        _write_text(Path(args[1]), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
