"""The ``xent-harness`` command line.

Exit codes: 0 everything passed, 1 a verdict failed, 2 usage or input error (one line on stderr,
no traceback). Heavy modules are imported inside the commands so ``list`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

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
            dtypes = ",".join(d.replace("float", "f").replace("bf16", "bf16") for d in r["dtypes"])
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
        print(f"generating golden references in {directory or golden.default_dir()}")
        golden.generate(directory, workers=args.workers)
        return EXIT_OK
    try:
        found = golden.verify(directory, recompute=None if args.all else args.sample)
    except FileNotFoundError as exc:
        raise UsageError(f"references: {exc}") from None
    for line in found:
        print(f"FAIL {line}")
    print("references: OK" if not found else f"references: {len(found)} problem(s)")
    return EXIT_FAIL if found else EXIT_OK


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
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=cmd_references)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


#: Functions that add further subcommands (the sweeps register theirs here).
_EXTRA_COMMANDS: list[Callable] = []


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
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
