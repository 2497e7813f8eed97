"""pytest plugin of xent-harness: the golden accuracy suite, for any implementation.

Registered as the ``pytest11`` entry point ``xent_harness``, so it is active in every pytest run
of an environment where xent-harness is installed. Run the suite against your implementation::

    pytest --pyargs harness.accuracy_suite --xent-impl mypkg.losses:my_cross_entropy

Options (see ``pytest --help``, group "xent-harness"):

``--xent-impl SPEC``
    repeatable; a registered name (``numpy``, ``torch``, an entry point of the group
    ``xent_harness.implementations``), ``MODULE:ATTR`` or ``path/to/file.py:ATTR``. The
    environment variable ``XENT_IMPL`` adds comma-separated specs. Without any, every available
    non-canary implementation is checked and the unavailable ones are reported as skipped; a spec
    named explicitly that is unknown, unavailable or fails to import is a usage error (exit 4).
``--xent-budgets FILE``
    TOML budgets overriding the defaults and the nearest ``pyproject.toml``'s
    ``[tool.xent-harness.budgets]`` (as ``xent-harness --budgets``).
``--xent-known FILE``
    TOML ``[[known-failures]]`` besides ``pyproject.toml``'s: a failing cell that matches becomes
    an xfail with the documented reason.
``--xent-references DIR``
    the golden references (default ``$XENT_REFERENCES``, else ``references/`` of a source
    checkout). When none is found and none was named the suite is skipped with the reason; a
    directory named explicitly (option or variable) without ``manifest.json`` is a usage error.
``--xent-dtype DTYPE``
    repeatable; only golden cases of these dtypes.

pytest imports this module at start-up, so it imports nothing heavy at module level and does no
work unless an ``--xent-*`` option (or ``XENT_IMPL``) is given or the suite is collected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENV_IMPL = "XENT_IMPL"
ENV_REFERENCES = "XENT_REFERENCES"
DTYPES = ("float16", "bfloat16", "float32", "float64")

#: Markers the suite uses; declared here unless the host project declares them already.
MARKERS = {
    "slow": "long-running test (deselect with -m 'not slow')",
    "gpu": "needs a GPU device (skipped with a reason when none is present)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xent-harness", "xent-harness accuracy suite (pytest --pyargs harness.accuracy_suite)")
    group.addoption(
        "--xent-impl", action="append", default=[], dest="xent_impl", metavar="SPEC",
        help="implementation to check (repeatable): a registered name, MODULE:ATTR or FILE.py:ATTR; "
             f"${ENV_IMPL} adds comma-separated specs; default: every available one",
    )
    group.addoption(
        "--xent-budgets", default=None, dest="xent_budgets", metavar="FILE",
        help="TOML budgets overriding the defaults and pyproject.toml [tool.xent-harness.budgets]",
    )
    group.addoption(
        "--xent-known", default=None, dest="xent_known", metavar="FILE",
        help="TOML [[known-failures]] (cells glob + reason): matching failures become xfail",
    )
    group.addoption(
        "--xent-references", default=None, dest="xent_references", metavar="DIR",
        help=f"golden references directory (default ${ENV_REFERENCES}, else references/ of a source checkout)",
    )
    group.addoption(
        "--xent-dtype", action="append", default=[], dest="xent_dtype", metavar="DTYPE", choices=DTYPES,
        help="only golden cases of this dtype (repeatable; default all)",
    )


def _declared_markers(config: pytest.Config) -> set[str]:
    return {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}


def pytest_configure(config: pytest.Config) -> None:
    declared = _declared_markers(config)
    for name, doc in MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {doc}")
    if requested(config):
        settings(config)  # a bad --xent-* option is a usage error now, before collection


# -- the suite's settings --------------------------------------------------------------------------


def _opt(config: pytest.Config, dest: str, default=None):
    # getoption with a default also works when this plugin was not registered (-p no:xent_harness)
    value = config.getoption(dest, default=default)
    return default if value is None else value


def specs(config: pytest.Config) -> list[str]:
    """--xent-impl values, then $XENT_IMPL's comma-separated ones, without duplicates."""
    out: list[str] = []
    env = os.environ.get(ENV_IMPL, "")
    for spec in [*_opt(config, "xent_impl", []), *env.split(",")]:
        spec = spec.strip()
        if spec and spec not in out:
            out.append(spec)
    return out


def requested(config: pytest.Config) -> bool:
    """True when the user gave any --xent-* option or $XENT_IMPL (then they are validated)."""
    return bool(specs(config) or _opt(config, "xent_budgets") or _opt(config, "xent_known")
                or _opt(config, "xent_references"))


@dataclass
class Settings:
    """What the suite runs, resolved once per session (see :func:`settings`)."""

    entries: list = field(default_factory=list)  # registry.Entry to run
    skipped: list = field(default_factory=list)  # registry.Entry not run (reason: unavailable())
    explicit: bool = False
    references: Path | None = None
    references_missing: str | None = None  # why the suite is skipped (no references found)
    cases: dict = field(default_factory=dict)  # manifest entries by name
    budgets: dict = field(default_factory=dict)
    budgets_source: str = ""
    known_source: str = ""
    known: list = field(default_factory=list)
    dtypes: tuple = DTYPES

    def entry(self, name: str):
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)


_KEY = pytest.StashKey[Settings]()


def settings(config: pytest.Config) -> Settings:
    """Resolve implementations, references, budgets and known failures (cached on ``config``);
    anything the user named that cannot be used raises :class:`pytest.UsageError`."""
    if _KEY in config.stash:
        return config.stash[_KEY]
    from harness import budgets, golden, registry

    s = Settings()
    chosen = specs(config)
    s.explicit = bool(chosen)
    try:
        s.entries, s.skipped = registry.select(chosen, include_canaries=False, isolate=False)
    except registry.ImplementationError as exc:  # its messages name the CLI's --impl option
        message = re.sub(r"(?<![\w-])--impl\b", "--xent-impl", str(exc))
        raise pytest.UsageError(f"xent-harness: {message}") from None

    ref_opt = _opt(config, "xent_references")
    env_ref = os.environ.get(ENV_REFERENCES)
    directory = Path(ref_opt) if ref_opt else golden.default_dir()
    manifest = directory / golden.MANIFEST
    if not manifest.is_file():
        where = "--xent-references" if ref_opt else (f"${ENV_REFERENCES}" if env_ref else None)
        if where:
            raise pytest.UsageError(
                f"xent-harness: {where} {directory} is not a golden references directory (no {golden.MANIFEST}); "
                "point it at the references/ folder of an xent-harness checkout or run `xent-harness references generate`"
            )
        s.references_missing = (
            f"no golden references at {directory} (an installed wheel does not ship them): pass "
            f"--xent-references DIR or set ${ENV_REFERENCES} to the references/ folder of an xent-harness checkout"
        )
    else:
        try:
            s.cases = golden.load_manifest(directory)["cases"]
        except (OSError, ValueError, KeyError) as exc:
            raise pytest.UsageError(f"xent-harness: cannot read {manifest}: {exc}") from None
        s.references = directory

    try:
        s.budgets, s.budgets_source = budgets.load(_opt(config, "xent_budgets"))
        s.known, s.known_source = budgets.load_known(_opt(config, "xent_known"))
    except budgets.BudgetError as exc:  # its messages name the CLI's options
        message = re.sub(r"(?<![\w-])--(budgets|known)\b", r"--xent-\1", str(exc))
        raise pytest.UsageError(f"xent-harness: {message}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError in a pyproject.toml / known file
        raise pytest.UsageError(f"xent-harness: budgets or known failures: {exc}") from None
    s.dtypes = tuple(_opt(config, "xent_dtype", [])) or DTYPES
    config.stash[_KEY] = s
    return s


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    s = config.stash.get(_KEY, None)
    if s is None:
        return None
    names = ", ".join(f"{e.name} ({e.origin})" for e in s.entries) or "none"
    refs = s.references or s.references_missing
    return [f"xent-harness: implementations {names}; references {refs}; budgets {s.budgets_source}; known failures {s.known_source}"]
