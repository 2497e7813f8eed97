"""The ``xent-harness`` command line.

Exit codes: 0 everything passed, 1 a verdict failed, 2 usage or input error (one line on stderr,
no traceback). Heavy modules are imported inside the commands so ``list`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + exits 2; keep it to one line
        raise UsageError(f"{self.prog}: {message}")


def _impl_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", action="append", default=[], metavar="NAME|MODULE:ATTR|FILE.py:ATTR",
                   help="implementation to use (repeatable): a registered name, an entry point, "
                        "MODULE:ATTR or path/to/file.py:ATTR; default: every available one")


# -- list ------------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    if args.scenarios:
        from harness import scenarios

        chosen = scenarios.select(args.scenario or None, quick=args.quick)
        rows = [scenarios.describe(s) for s in chosen]
        if args.json:
            print(json.dumps(rows, indent=1))
            return EXIT_OK
        for r in rows:
            dtypes = ",".join(d.replace("float", "f") for d in r["dtypes"])
            print(f"{r['name']:32s} {r['family']:13s} {dtypes:16s} {r['why']}")
        print(f"{len(rows)} scenarios")
        return EXIT_OK

    from harness import registry

    try:
        entries = registry.discover(args.impl)
    except registry.ImplementationError as exc:
        raise UsageError(str(exc)) from None
    rows = []
    for e in entries:
        reason = e.unavailable()
        row = {"name": e.name, "origin": e.origin, "available": reason is None, "reason": reason}
        if e.impl is not None:
            row |= {k: v for k, v in e.impl.describe().items() if k not in ("name", "origin")}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    for r in rows:
        status = "available" if r["available"] else f"unavailable: {r['reason']}"
        print(f"{r['name']:14s} {status}")
        if "dtypes" in r:
            canary = "  [canary: deliberately broken]" if r.get("canary") else ""
            print(f"{'':14s} {r['origin']}; devices {','.join(r['devices'])}; dtypes {','.join(r['dtypes'])}; "
                  f"grad {'yes' if r['grad'] else 'no'}{canary}")
            print(f"{'':14s} features {','.join(r['features'])}")
    return EXIT_OK


# -- references ------------------------------------------------------------------------------------


def cmd_references(args) -> int:
    from harness import golden

    directory = args.dir
    if args.action == "generate":
        if args.certify:
            raise UsageError("references: --certify applies to `references verify` (certify after generating)")
        print(f"generating golden references in {directory or golden.default_dir()}")
        try:
            golden.generate(directory, workers=args.workers)
        except OSError as exc:
            raise UsageError(f"references generate: cannot write {exc.filename or directory} "
                             f"({exc.strerror or exc}); pass a writable --dir") from None
        return EXIT_OK
    from harness.certify import CertifyUnavailable

    try:
        found = golden.verify(directory, recompute=None if args.all else args.sample, seed=args.seed,
                              certify=args.certify)
    except (FileNotFoundError, ValueError, CertifyUnavailable) as exc:
        msg = str(exc)
        raise UsageError(msg if msg.startswith("references") else f"references: {msg}") from None
    for line in found:
        print(f"FAIL {line}")
    print("references: OK" if not found else f"references: {len(found)} problem(s)")
    return EXIT_FAIL if found else EXIT_OK


# -- sweeps: run | accuracy | gradient | throughput | check ---------------------------------------


def _sweep_args(p: argparse.ArgumentParser, *, timing: bool = True) -> None:
    _impl_arg(p)
    p.add_argument("--dtype", action="append", metavar="DTYPE", help="float16, bfloat16, float32, float64 (repeatable; default all)")
    p.add_argument("--scenario", action="append", metavar="NAME|GLOB", help="scenario names, families or globs (repeatable; default all)")
    subset = p.add_mutually_exclusive_group()
    subset.add_argument("--quick", action="store_true", help="the small CI subset of scenarios%s" % (" and shapes" if timing else ""))
    subset.add_argument("--full", action="store_true",
                        help="the whole generated scenario space (harness/space.toml), not only the gate's covering subset")
    p.add_argument("--out", metavar="DIR", help="run directory (default reports/<timestamp>/, copied to reports/latest/)")
    p.add_argument("--json", action="store_true", help="print the results JSON on stdout instead of tables")
    p.add_argument("--force", action="store_true", help="with --out: replace the run that directory holds")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (default: the newest under reports/) without recomputing finished cells")
    p.add_argument("--workers", type=int, default=None, help="processes for the reference (default: all cores)")
    p.add_argument("--budgets", metavar="FILE", help="TOML budgets overriding the defaults and pyproject.toml")
    p.add_argument("--known", metavar="FILE", help="TOML [[known-failures]] (cells glob + reason) besides pyproject.toml's")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="run implementations in subprocesses (default: only --impl plugins)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds for isolated calls (default 60)")
    p.add_argument("--include-large", action="store_true", help="also the 'large' scenarios (C up to 262,144) in accuracy sweeps")
    p.add_argument("--scheduler", metavar="local[:N]|tcp://HOST:8786",
                   help="run the references and cells on Dask: a LocalCluster of N worker processes (default 2) "
                        "or a running scheduler (docs/dask.md; needs the 'dask' extra)")
    p.add_argument("--contract", default="pytorch", metavar="NAME",
                   help="the contract profile the cells are judged by: pytorch (default), optax, scipy, tensorflow, "
                        "keras (docs/contracts.md); a cell that fails it but passes its implementation's own "
                        "profile is a convention difference")


def _progress_factory(args):
    if args.json or not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return lambda total: tqdm(total=total, unit="cell", leave=False, dynamic_ncols=True)


def _execute(args, kinds: tuple[str, ...], *, gate: bool) -> int:
    """Shared body of run/accuracy/gradient/throughput/check: the campaign, then its tables."""
    from harness import campaign, results

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    req = campaign.Request(kinds=kinds, impls=args.impl, dtypes=args.dtype, scenarios=args.scenario,
                           quick=args.quick, full=args.full, include_large=args.include_large, out=args.out, resume=args.resume, force=args.force,
                           workers=args.workers, budgets=args.budgets, known=args.known, isolate=args.isolate,
                           timeout=args.timeout, gate=gate, argv=args.argv, scheduler=args.scheduler,
                           contract=args.contract)
    try:
        done = campaign.run(req, log=log, progress=_progress_factory(args))
    except campaign.CampaignError as exc:
        raise UsageError(str(exc)) from None
    if done.interrupted:
        return 130
    if args.json:
        print(results.dumps(done.data))
    else:
        _print_tables(done.data, gate=gate)
        report = done.out / "report.html"
        log(f"results: {done.results.path}" + (f"  report: {report}" if report.exists() else ""))
    return EXIT_FAIL if done.verdict == "fail" else EXIT_OK


def _print_tables(data: dict, *, gate: bool) -> None:
    cells = data["cells"]
    order = {"fail": 0, "error": 1}
    bad = sorted((c for c in cells if c["status"] in order and not c.get("known")),
                 key=lambda c: (order[c["status"]], c["impl"], c["dtype"], c["scenario"]))
    if bad:
        print(f"\n{'status':6s} {'implementation':14s} {'dtype':9s} {'kind':9s} {'scenario':30s} message")
        for c in bad[:25]:
            print(f"{c['status']:6s} {c['impl']:14s} {c['dtype']:9s} {c['kind']:9s} {c['scenario']:30s} {c['message'] or ''}"[:220])
        if len(bad) > 25:
            print(f"... and {len(bad) - 25} more failing cells (see the results file)")
    errs = [r for r in data.get("throughput", []) if r.get("status") == "error"]
    if errs:
        print(f"\n{'status':6s} {'implementation':14s} {'dtype':9s} {'N x C':>14s} {'pass':17s} message")
        for r in errs[:25]:
            print(f"{'error':6s} {r['impl']:14s} {r['dtype']:9s} {r['N']:>6d} x {r['C']:<6d} {r['pass']:17s} "
                  f"{r['message'] or ''}"[:220])
    rows = [r for r in data.get("throughput", []) if r.get("status") == "ok"]
    if rows:
        print(f"\n{'implementation':14s} {'dtype':9s} {'N x C':>14s} {'pass':17s} {'time':>10s} {'GB/s':>7s} {'of copy':>8s}")
        for r in sorted(rows, key=lambda r: (r['N'] * r['C'], r['dtype'], r['pass'], -r['gbps'])):
            noisy = " noisy" if r.get("noisy") else ""
            print(f"{r['impl']:14s} {r['dtype']:9s} {r['N']:>6d} x {r['C']:<6d} {r['pass']:17s} "
                  f"{r['median_s'] * 1e3:8.2f}ms {r['gbps']:7.2f} {r['fraction_of_copy']:7.0%}{noisy}")
    print()
    for r in data["implementations"]:
        c = r["counts"]
        extra = f" ({r['reason']})" if r.get("reason") else ""
        canary = " [canary]" if r.get("canary") else ""
        known = f", {c['known']} known failures" if c.get("known") else ""
        known += f", {c['convention']} convention differences ({r.get('contract')})" if c.get("convention") else ""
        timing = f", {r['throughput_errors']} throughput error" if r.get("throughput_errors") else ""
        print(f"{r['verdict'].upper():11s} {r['name']}{canary}: {c['pass']} pass, {c['fail']} fail, {c['error']} error, "
              f"{c['unsupported']} unsupported{timing}{known}{extra}")
    print(f"\nbudgets: {data.get('budgets_source') or '-'}; known failures: {data.get('known_failures_source') or 'none'}")
    s = data["summary"]
    print(f"\nverdict: {s['verdict'].upper()}" + (f" (failing: {', '.join(s['failing'])})" if s["failing"] else ""))


def cmd_run(args) -> int:
    return _execute(args, ("accuracy", "gradient", "special", "throughput"), gate=False)


def cmd_accuracy(args) -> int:
    return _execute(args, ("accuracy", "special"), gate=False)


def cmd_gradient(args) -> int:
    return _execute(args, ("gradient", "special"), gate=False)


def cmd_throughput(args) -> int:
    return _execute(args, ("throughput",), gate=False)


def cmd_check(args) -> int:
    if getattr(args, "cases", None):  # replay saved cases (hunt, fuzz): only them, unless --scenario says more
        import os
        from pathlib import Path

        if not (Path(args.cases) / "manifest.json").is_file():
            raise UsageError(f"check --cases: {args.cases} has no manifest.json; name a cases directory "
                             "(a hunt's <out>/cases or references/found)")
        os.environ["XENT_FOUND"] = str(args.cases)
        args.scenario = args.scenario or ["found"]
    return _execute(args, ("accuracy", "gradient", "special"), gate=True)


def cmd_report(args) -> int:
    from pathlib import Path

    from harness import results

    data = results.load(args.results)
    baseline = results.load(args.baseline) if args.baseline else None
    if args.markdown and Path(args.markdown).is_dir():
        raise UsageError(f"report --markdown: {args.markdown} is a directory; name a file to write")
    try:
        from harness import report
    except ImportError as exc:
        raise UsageError(f"report: {exc}; install the 'report' extra (jinja2, matplotlib)") from None
    out = Path(args.output) if args.output else Path(args.results).with_name("report.html")
    if Path(args.results).is_dir():
        out = Path(args.output) if args.output else Path(args.results) / "report.html"
    report.write_html(data, out, baseline=baseline)
    md = report.render_markdown(data, baseline=baseline)
    if args.markdown:
        report.write_atomic(Path(args.markdown), md)
    report.append_github_summary(md)
    print(f"report: {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return EXIT_OK


def _add_sweep_commands(sub) -> None:
    for name, func, helptext, timing in (
        ("run", cmd_run, "the main job: accuracy + gradient + special values + throughput, then the report", True),
        ("accuracy", cmd_accuracy, "accuracy of the loss (and special values)", False),
        ("gradient", cmd_gradient, "accuracy of the gradient (and special values)", False),
        ("throughput", cmd_throughput, "forward and forward+backward GB/s against a same-run copy", True),
        ("check", cmd_check, "the CI gate: accuracy + gradient + special values, exit 1 on any failure", False),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        _sweep_args(p, timing=timing)
        if name == "check":
            p.add_argument("--cases", metavar="DIR",
                           help="replay the saved cases of DIR (a hunt's <out>/cases, a fuzz directory) instead of the catalogue")
        p.set_defaults(func=func, argv=None)
    p = sub.add_parser("report", help="render the HTML report (and Markdown summary) of a results file")
    p.add_argument("results", help="results.json or a run directory")
    p.add_argument("-o", "--output", help="HTML file (default: report.html next to the results)")
    p.add_argument("--baseline", help="another results file to compare against")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown summary here")
    p.set_defaults(func=cmd_report)


# -- hunt ------------------------------------------------------------------------------------------


def cmd_hunt(args) -> int:
    from harness import hunt

    req = hunt.Request(impl=args.impl, dtypes=args.dtype or ["float32", "bfloat16"],
                       quantities=[args.quantity] if args.quantity else ["loss", "grad"], seconds=args.seconds,
                       evaluations=args.evaluations, seed=args.seed, top=args.top, out=args.out, resume=args.resume,
                       strategies=args.strategy or list(hunt.STRATEGIES), objective=args.objective,
                       baseline=not args.no_baseline, against=args.against, catalogue=not args.no_catalogue,
                       budgets=args.budgets, scheduler=args.scheduler)
    bars: list = []

    def progress(pair, total):
        if not sys.stderr.isatty():
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        bar = tqdm(total=total, unit="row", desc=f"hunt {pair}", leave=False, dynamic_ncols=True)
        bars.append(bar)

        def update(n, worst):
            if n is None:
                bar.close()
                return
            bar.update(n)
            bar.set_postfix_str(f"worst {args.objective} {worst:.3g}")
        return update

    try:
        hunt.run(req, progress=progress)
    except hunt.HuntError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _add_hunt_command(sub) -> None:
    from harness.hunt import OBJECTIVES, STRATEGIES

    p = sub.add_parser("hunt", help="search the input space for the rows where an implementation is least accurate",
                       description="worst-case hunt (docs/hunt.md): strategies search the logits' space for the largest "
                                   "error per dtype and quantity; the top rows are saved as cases `check --cases` replays")
    p.add_argument("--impl", required=True, metavar="NAME|MODULE:ATTR|FILE.py:ATTR", help="the implementation to hunt")
    p.add_argument("--dtype", action="append", metavar="DTYPE", help="float16, bfloat16, float32, float64 (repeatable; default float32 and bfloat16)")
    p.add_argument("--quantity", choices=("loss", "grad"), help="hunt only this quantity (default both)")
    p.add_argument("--seconds", type=float, default=None, help="search time, shared by the dtype x quantity pairs (default 60 unless --evaluations)")
    p.add_argument("--evaluations", type=int, default=None, help="rows per dtype x quantity pair: a time-independent, deterministic run")
    p.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    p.add_argument("--top", type=int, default=5, help="worst rows kept and saved per pair (default 5)")
    p.add_argument("--out", metavar="DIR", help="run directory (default reports/hunt-<timestamp>/)")
    p.add_argument("--resume", action="store_true", help="continue the hunt in --out (default: the newest reports/hunt-*) from its journal")
    p.add_argument("--strategy", action="append", choices=STRATEGIES, help="strategies to use (repeatable; default all)")
    p.add_argument("--objective", choices=OBJECTIVES, default="ulp",
                   help="what to maximise: ulp (default), scaled, or budget (the ratio to the budget; > 1 fails)")
    p.add_argument("--no-baseline", action="store_true", help="skip the same-size uniform-sampling baseline")
    p.add_argument("--against", metavar="RESULTS", help="the fixed catalogue's worst from this results.json (default: run the quick subset)")
    p.add_argument("--no-catalogue", action="store_true", help="no comparison with the fixed catalogue")
    p.add_argument("--budgets", metavar="FILE", help="TOML budgets overriding the defaults and pyproject.toml")
    p.add_argument("--scheduler", metavar="local[:N]|tcp://HOST:8786",
                   help="search on Dask: one branch per worker, the best rows exchanged every round (docs/dask.md)")
    p.set_defaults(func=cmd_hunt, argv=None)


# -- fuzz ------------------------------------------------------------------------------------------


def cmd_fuzz(args) -> int:
    from harness import fuzz

    req = fuzz.Request(impls=args.impl, seconds=args.seconds, seed=args.seed, dtypes=args.dtype, out=args.out,
                       save_to=args.save_to, budgets=args.budgets, known=args.known, timeout=args.timeout,
                       shrink_seconds=args.shrink_seconds, isolate=args.isolate, max_logits=args.max_logits,
                       examples=args.examples, argv=args.argv)
    try:
        done = fuzz.run(req)
    except fuzz.FuzzError as exc:
        raise UsageError(f"fuzz {exc}") from None
    print()
    for f in done.findings:
        where = f"saved: {f['file']}" if f["file"] else f"NOT saved: {f['save_error']}"
        print(f"{f['impl']:14s} {f['dtype']:9s} {','.join(f['kinds']):24s} {f['shape']!s:12s} {f['messages'][0]}"[:200])
        print(f"{'':14s} {where} (seed {f['seed']}, round {f['round']})")
    print(f"\nsummary: {done.out / fuzz.SUMMARY}")
    s = done.data["summary"]
    print(f"verdict: {s['verdict'].upper()} ({s['findings']} finding(s)"
          + (f"; failing: {', '.join(s['failing'])})" if s["failing"] else ")"))
    return EXIT_FAIL if s["verdict"] == "fail" else EXIT_OK


# -- budgets ---------------------------------------------------------------------------------------


def cmd_budgets(args) -> int:
    """`budgets measure`: the largest errors of the correct implementations and the budgets
    derived from them (harness/budget_measure.py), `--write` records both in budgets.toml;
    `budgets show`: the budgets in force and the recorded measurement."""
    from harness import budget_measure as bm
    from harness import budgets

    if args.action == "show":
        if args.write or args.out or args.run:
            raise UsageError("budgets show: --write, --out and --run apply to `budgets measure`")
        try:
            table, source = budgets.load(args.budgets)
        except budgets.BudgetError as exc:
            raise UsageError(str(exc)) from None
        record = budgets.measured()
        if args.json:
            print(json.dumps({"budgets": table, "source": source, "measured": record}, indent=1))
            return EXIT_OK
        print(f"budgets: {source}")
        for d, row in table.items():
            print(f"  {d:9s} " + "  ".join(f"{k} {row[k]:g}" for k in budgets.KEYS if k in row))
        if record:
            print(f"measured {record.get('date')}: {record.get('problems')} problems "
                  f"({record.get('scenarios')} scenarios), {', '.join(record.get('implementations', []))}, "
                  f"headroom {record.get('headroom')}; re-derive with `{record.get('command')}`")
        return EXIT_OK
    if args.budgets:
        raise UsageError("budgets measure: --budgets does not apply (the measurement judges with budgets "
                         "under which every finite error passes)")
    argv = ["xent-harness", *(args.argv if args.argv is not None else sys.argv[1:])]
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    try:
        m = bm.measure(args.impl, scenarios=args.scenario, dtypes=args.dtype, quick=args.quick,
                       include_large=args.include_large, full=args.full, workers=args.workers, known=args.known,
                       run_dir=args.run, timeout=args.timeout, command=" ".join(argv), log=log)
        derived = bm.derive(m, args.headroom)
    except bm.MeasureError as exc:
        raise UsageError(str(exc)) from None
    if args.out:
        from pathlib import Path

        try:
            Path(args.out).write_text(json.dumps(bm.as_json(m, derived, args.headroom), indent=1) + "\n")
        except OSError as exc:
            raise UsageError(f"budgets measure --out: cannot write {args.out} ({exc.strerror or exc})") from None
    if args.json:
        print(json.dumps(bm.as_json(m, derived, args.headroom), indent=1))
    else:
        print(bm.table(m, derived, budgets.defaults(), args.headroom))
    if args.write:
        try:
            path = bm.write(bm.budgets_path() if args.write is True else args.write, m, derived, args.headroom)
        except bm.MeasureError as exc:
            raise UsageError(str(exc)) from None
        log(f"budgets: wrote {path}")
    return EXIT_OK


def _add_budgets_command(sub) -> None:
    p = sub.add_parser("budgets", help="measure the correct implementations' largest errors and derive the budgets",
                       description="budgets measure: run the accuracy and gradient sweeps of numpy, torch, jax "
                                   "and a float64 control, print their largest errors per dtype and quantity and "
                                   "the budgets derived from them (--write records both in budgets.toml); "
                                   "budgets show: the budgets in force and the recorded measurement")
    p.add_argument("action", choices=["measure", "show"])
    _impl_arg(p)
    p.add_argument("--dtype", action="append", metavar="DTYPE", help="float16, bfloat16, float32, float64 (repeatable; default all)")
    p.add_argument("--scenario", action="append", metavar="NAME|GLOB", help="scenario names, families or globs (default: all but the large ones)")
    p.add_argument("--quick", action="store_true", help="the small CI subset of scenarios")
    p.add_argument("--include-large", action="store_true", help="also the 'large' scenarios")
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=True,
                   help="the whole generated scenario space, beyond check's subset (default; --no-full: what check runs)")
    p.add_argument("--headroom", type=float, default=2.0, help="budget = measured maximum x this, rounded up on the grid (default 2)")
    p.add_argument("--known", metavar="FILE", help="TOML [[known-failures]] besides pyproject.toml's (their cells define no budget)")
    p.add_argument("--workers", type=int, default=None, help="processes for the reference (default: all cores)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds for isolated calls (default 60)")
    p.add_argument("--out", metavar="FILE", help="write the measurement (maxima, cells, derived budgets) as JSON")
    p.add_argument("--run", metavar="DIR", help="keep the sweeps' run directory (results.json) here, replacing a run it holds (default: a temporary one)")
    p.add_argument("--write", nargs="?", const=True, default=None, metavar="FILE",
                   help="rewrite the budgets and the [measured] record in FILE (default: the package's budgets.toml), keeping its comments")
    p.add_argument("--budgets", metavar="FILE", help="(show) TOML budgets overriding the defaults and pyproject.toml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_budgets, argv=None)


# -- zoo -------------------------------------------------------------------------------------------


def cmd_zoo(args) -> int:
    """Every available zoo adapter and built-in in one check-like run, and the page docs/zoo.md
    from its results (harness/zoo/table.py). A benchmark, not a gate: exit 0 when it finished."""
    from harness import campaign
    from harness.zoo import table

    argv = args.argv if args.argv is not None else sys.argv[1:]
    try:
        done, page = table.run(quick=args.quick, dtypes=args.dtype, patterns=args.scenario, out=args.out,
                               force=args.force, doc=None if args.no_doc else args.doc, workers=args.workers,
                               timeout=args.timeout, argv=argv, progress=_progress_factory(args))
    except (campaign.CampaignError, OSError) as exc:
        raise UsageError(f"zoo: {exc}") from None
    if done.interrupted:
        return 130
    _print_tables(done.data, gate=False)
    print(f"results: {done.results.path}  report: {done.out / 'report.html'}" + (f"  page: {page}" if page else ""))
    return EXIT_OK


# -- repro ---------------------------------------------------------------------------------------------


def cmd_repro(args) -> int:
    """A failing cell's reproducer (.npz + standalone .py) and its diagnosis (harness/repro.py):
    exit 0 when the failure reproduces, 1 when the recomputed output passes."""
    from harness import repro

    try:
        done = repro.reproduce(args.results, args.cell, out=args.out, timeout=args.timeout)
    except repro.ReproError as exc:
        raise UsageError(str(exc)) from None
    for line in done.lines:
        print(line)
    return EXIT_OK if done.reproduced else EXIT_FAIL


# -- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from harness import __version__

    parser = _Parser(prog="xent-harness", description="Prove a softmax cross-entropy right and fast.")
    parser.add_argument("--version", action="version", version=f"xent-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="implementations (default) or scenarios")
    _impl_arg(p)
    p.add_argument("--scenarios", action="store_true", help="list the scenario catalogue instead")
    p.add_argument("--scenario", action="append", metavar="NAME|GLOB", help="filter scenarios")
    p.add_argument("--quick", action="store_true", help="only the quick (CI) scenarios")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("references", help="golden reference files: generate or verify")
    p.add_argument("action", choices=["generate", "verify"])
    p.add_argument("--dir", default=None, help="directory (default: references/ of the checkout)")
    p.add_argument("--sample", type=int, default=6, help="cases to recompute when verifying (default 6)")
    p.add_argument("--all", action="store_true", help="recompute every case when verifying")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the verify sample (default: a fresh one, printed, so a failure can be replayed)")
    p.add_argument("--certify", action="store_true",
                   help="also re-derive every case with the independent arb oracle (python-flint) and check the "
                        "stored values and their roundings against its balls")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=cmd_references)

    _add_sweep_commands(sub)

    p = sub.add_parser("zoo", help="judge every available zoo adapter and built-in in one run; write docs/zoo.md",
                       description="a check-like run (accuracy, gradient, special values) of every available built-in "
                                   "and zoo adapter (harness/zoo/) into one run directory and report, then the "
                                   "comparison page (library, version, verdict, counts, first findings); exit 0 "
                                   "when it finished: findings are its content, not a failure")
    p.add_argument("--quick", action="store_true", help="the CI scenarios plus the few where libraries' conventions differ")
    p.add_argument("--dtype", action="append", metavar="DTYPE", help="float16, bfloat16, float32, float64 (repeatable; default all)")
    p.add_argument("--scenario", action="append", metavar="NAME|GLOB", help="scenario names, families or globs (default: all but the large ones)")
    p.add_argument("--out", metavar="DIR", help="run directory (default reports/<timestamp>/, copied to reports/latest/)")
    p.add_argument("--force", action="store_true", help="with --out: replace the run that directory holds")
    p.add_argument("--doc", default="docs/zoo.md", metavar="FILE", help="the page to write (default docs/zoo.md)")
    p.add_argument("--no-doc", action="store_true", help="write no page (the run directory has the results and report)")
    p.add_argument("--workers", type=int, default=None, help="processes for the reference (default: all cores)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-call timeout in seconds (default 120: compiling libraries)")
    p.set_defaults(func=cmd_zoo, argv=None, json=False)

    p = sub.add_parser("fuzz", help="property-based search for problems an implementation gets wrong; saves them for check",
                       description="draw problems from the whole contract for a time budget, judge each implementation, "
                                   "shrink every failure to a minimal problem and save it (golden-file format) where "
                                   "`check` replays it; exit 1 when something was found")
    _impl_arg(p)
    p.add_argument("--seconds", type=float, default=60.0, help="search time, shared by the implementations (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search (default 0): the same seed draws the same problems")
    p.add_argument("--dtype", action="append", metavar="DTYPE", help="float16, bfloat16, float32, float64 (repeatable; default all)")
    p.add_argument("--out", metavar="DIR", help="where the summary fuzz.json goes (default reports/fuzz-<timestamp>/)")
    p.add_argument("--save-to", metavar="DIR", default=None,
                   help="where minimal failing problems are saved (default $XENT_FOUND or references/found/, which check replays)")
    p.add_argument("--examples", type=int, default=None,
                   help="also stop each implementation's search after this many problems (a run that no time limit cuts short "
                        "is the same on every machine)")
    p.add_argument("--shrink-seconds", type=float, default=60.0, help="longest shrinking of one failure (default 60)")
    p.add_argument("--max-logits", type=int, default=8192, help="largest problem drawn, in logits (default 8192)")
    p.add_argument("--budgets", metavar="FILE", help="TOML budgets overriding the defaults and pyproject.toml")
    p.add_argument("--known", metavar="FILE", help="TOML [[known-failures]] besides pyproject.toml's (not reported)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="run implementations in subprocesses (default: only --impl plugins)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds for isolated calls (default 60)")
    p.set_defaults(func=cmd_fuzz, argv=None)
    _add_budgets_command(sub)
    _add_hunt_command(sub)

    p = sub.add_parser("repro", help="write a failing cell's reproducer (.npz + standalone .py) and diagnose it",
                       description="rebuild a failing cell's problem from its scenario, call the implementation again, "
                                   "and write DIR/<cell>.npz (inputs, options, exact reference, the output) and "
                                   "DIR/<cell>.py (NumPy + the implementation's library only: prints the wrong value and "
                                   "the true one); exit 1 when the recomputed output passes")
    p.add_argument("results", help="results.json or a run directory")
    p.add_argument("cell", help="IMPL/DTYPE/KIND/SCENARIO, as the report shows it")
    p.add_argument("-o", "--out", metavar="DIR", help="where to write (default: repro/ next to the results)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-call timeout in seconds for isolated calls (default 60)")
    p.set_defaults(func=cmd_repro)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if hasattr(args, "argv"):
            args.argv = list(argv) if argv is not None else None
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # ProblemError and friends: bad input, not a crash
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
