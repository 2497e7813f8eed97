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
    p.add_argument("--quick", action="store_true", help="the small CI subset of scenarios%s" % (" and shapes" if timing else ""))
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
                           quick=args.quick, include_large=args.include_large, out=args.out, resume=args.resume, force=args.force,
                           workers=args.workers, budgets=args.budgets, known=args.known, isolate=args.isolate,
                           timeout=args.timeout, gate=gate, argv=args.argv)
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
        p.set_defaults(func=func, argv=None)
    p = sub.add_parser("report", help="render the HTML report (and Markdown summary) of a results file")
    p.add_argument("results", help="results.json or a run directory")
    p.add_argument("-o", "--output", help="HTML file (default: report.html next to the results)")
    p.add_argument("--baseline", help="another results file to compare against")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown summary here")
    p.set_defaults(func=cmd_report)


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
