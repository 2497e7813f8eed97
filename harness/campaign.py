"""A run and its verdict, as a Python API: what ``xent-harness run/check/accuracy/gradient/
throughput`` do, without argparse (the CLI parses and prints; tests and scripts call this).

A campaign resolves a :class:`Request` (implementations, dtypes, scenarios, kinds, budgets,
known failures), owns the run directory (a timestamped one under ``reports/``, or ``out``;
``resume`` continues the newest), runs the sweeps and the throughput grid into a crash-safe
:class:`~harness.results.Results`, rolls the cells up into the one verdict (per implementation
and for the run), writes the report and, for a default directory, copies it to
``reports/latest/``. Bad input raises :class:`CampaignError` (one line naming the field) before
anything is computed; an interrupted campaign keeps every finished cell.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import registry, results, vocabulary
from harness.executor import TaskError

#: What each command runs.
RUN = ("accuracy", "gradient", "special", "throughput")
CHECK = ("accuracy", "gradient", "special")
STATUSES = vocabulary.STATUSES


class CampaignError(ValueError):
    """Bad input (an unknown dtype, implementation, scenario or budget file): one line."""


@dataclass
class Request:
    """What to run. ``gate`` (``check``) leaves canaries out unless named; ``argv`` is recorded
    as the run's command."""

    kinds: tuple[str, ...] = RUN
    impls: list[str] = field(default_factory=list)
    dtypes: list[str] | None = None
    scenarios: list[str] | None = None
    quick: bool = False
    include_large: bool = False
    full: bool = False  # also the generated scenarios outside the gate's subset (tag "full")
    out: Path | str | None = None
    resume: bool = False
    force: bool = False
    workers: int | None = None
    #: None: this machine (the default); "local[:N]" or "tcp://HOST:8786": a Dask cluster, or an
    #: executor a script opened (harness.executor, docs/dask.md)
    scheduler: object = None
    budgets: str | None = None
    known: str | None = None
    isolate: bool | None = None
    timeout: float = 60.0
    #: How many failing cells the diagnosis step may take, and for how long (None: its defaults,
    #: harness.diagnosis.CELLS and SECONDS; the zoo takes more).
    diagnose: tuple[int, float] | None = None
    gate: bool = False
    #: The contract profile cells are judged by (harness.contracts, docs/contracts.md).
    contract: str = "pytorch"
    argv: list[str] | None = None
    reports: Path = Path("reports")


@dataclass
class Outcome:
    """A finished (or interrupted) campaign: its directory, results and verdict."""

    out: Path
    results: results.Results
    interrupted: bool = False

    @property
    def data(self) -> dict:
        return self.results.data

    @property
    def verdict(self) -> str:
        return (self.data.get("summary") or {}).get("verdict", "incomplete")


def _timestamp() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def out_dir(req: Request) -> Path:
    """``out``, else the newest run under ``reports/`` when resuming, else a new timestamped one,
    created exclusively (two runs started in the same second get ``...Z`` and ``...Z-2``).
    An ``out`` that holds a run is refused unless resuming it or ``force`` replaces it."""
    if req.out:
        out = Path(req.out)
        if out.exists() and not out.is_dir():
            raise CampaignError(f"--out: {out} is a file; name a directory")
        holds = (out / results.RESULTS).exists() or (out / results.JOURNAL).exists()
        if holds and not (req.resume or req.force):
            raise CampaignError(f"--out: {out} holds a run; --resume continues it, --force replaces it")
        return out
    base = Path(req.reports)
    if req.resume:
        runs = sorted(d for d in base.glob("2*") if d.is_dir()) if base.is_dir() else []
        if not runs:
            raise CampaignError("--resume: no earlier run under reports/; pass --out DIR")
        return runs[-1]
    return new_run_dir(base, error=CampaignError)


def new_run_dir(base: Path, prefix: str = "", *, error: type[Exception] = CampaignError) -> Path:
    """A new directory ``base/<prefix><UTC timestamp>``, created exclusively (two started in the
    same second get ``...Z`` and ``...Z-2``); ``error`` (one line) when it cannot be created."""
    stamp = prefix + _timestamp()
    for n in range(1, 1000):
        out = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            out.mkdir(parents=True, exist_ok=False)
            return out
        except FileExistsError:
            continue
        except OSError as exc:
            raise error(f"reports: cannot create a run directory under {base} ({exc.strerror or exc}); "
                        "pass a writable --out DIR") from None
    raise error(f"reports: could not create a run directory under {base}")


def _check_numbers(req: Request, log: Callable[[str], None]) -> int | None:
    """--timeout a positive finite number; --workers a positive integer, capped at the cores."""
    import math
    import os

    t = req.timeout
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise CampaignError(f"--timeout: must be a positive number of seconds, not {t!r}")
    w = req.workers
    if w is None:
        return None
    if not isinstance(w, int) or w < 1:
        raise CampaignError(f"--workers: must be a positive integer, not {w!r}")
    cores = os.cpu_count() or 1
    if w > cores:
        log(f"--workers {w}: capped at this machine's {cores} cores")
        return cores
    return w


#: What a resumed run must repeat: the request field and the option that sets it.
_RESUMED_FIELDS = {"kinds": "the command", "impls": "--impl", "dtypes": "--dtype", "scenarios": "--scenario",
                   "quick": "--quick", "include_large": "--include-large", "full": "--full",
                  "contract": "--contract"}
#: What a run recorded before a field existed stands for (such a run did not ask for it).
_UNRECORDED = {"full": False, "contract": "pytorch"}


def _asked(req: Request, dtypes: list[str]) -> dict:
    return {"kinds": list(req.kinds), "impls": list(req.impls), "dtypes": list(dtypes),
            "scenarios": list(req.scenarios) if req.scenarios else None, "quick": bool(req.quick),
            "include_large": bool(req.include_large), "full": bool(req.full), "contract": req.contract}


def _same_request(before: dict | None, now: dict, out: Path) -> None:
    """A resumed run continues the same command: other implementations, dtypes, scenarios or
    kinds would make results.json describe a command that did not produce it."""
    if not isinstance(before, dict):
        return  # a run written before requests were recorded: nothing to compare
    then = {k: before.get(k, _UNRECORDED.get(k)) for k in _RESUMED_FIELDS}
    differ = [f"{flag} ({_shown(then[k])} then, {_shown(now[k])} now)"
              for k, flag in _RESUMED_FIELDS.items() if then[k] != now[k]]
    if differ:
        raise CampaignError(f"--resume: {out} was started with other arguments: {'; '.join(differ)}; "
                            "repeat them, or start a new run")


def _shown(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if not v:
        return "none"
    return " ".join(map(str, v)) if isinstance(v, list) else str(v)


def run(req: Request, *, log: Callable[[str], None] = print, progress=None) -> Outcome:
    """Run the campaign; see the module docstring."""
    from harness import budgets as budgets_mod
    from harness import scenarios, sweeps, throughput
    from harness.formats import DTYPE_NAMES

    workers = _check_numbers(req, log)
    _check_contract(req)
    dtypes = list(req.dtypes or DTYPE_NAMES)
    for d in dtypes:
        if d not in DTYPE_NAMES:
            raise CampaignError(f"--dtype: unknown dtype {d!r}; use {', '.join(DTYPE_NAMES)}")
    try:
        chosen, skipped = registry.select(req.impls, include_canaries=not (req.gate and not req.impls),
                                          isolate=req.isolate is not False, timeout=req.timeout)
    except registry.ImplementationError as exc:
        raise CampaignError(str(exc)) from None
    for e in skipped:
        why = e.unavailable() or registry.left_out(e, include_canaries=False) or vocabulary.CANARY_LEFT_OUT
        log(f"skip {e.name}: {why}")
    if not chosen:
        raise CampaignError("no implementation available; see `xent-harness list`")
    unloadable = [e for e in chosen if e.impl is None]
    for e in unloadable:  # named, but its import failed in its child: a failing result
        log(f"error {e.name}: {e.error}")
    loaded = [e for e in chosen if e.impl is not None]
    _check_declared(loaded)
    sweep_kinds = tuple(k for k in req.kinds if k in sweeps.KINDS)
    try:
        budget_table, budget_source = budgets_mod.load(req.budgets)
        known, known_source = budgets_mod.load_known(req.known)
        picked = []
        if sweep_kinds:
            picked = scenarios.select(req.scenarios or None, quick=req.quick, dtypes=dtypes)
            if not (req.include_large or req.scenarios):
                picked = [s for s in picked if "large" not in s.tags]
            if not (req.full or req.scenarios):  # the generated space beyond the gate's subset
                picked = [s for s in picked if "full" not in s.tags]
    except (ValueError, budgets_mod.BudgetError) as exc:
        raise CampaignError(str(exc)) from None
    if sweep_kinds and not picked:
        # a gate that judged nothing must not pass: say which filters removed everything
        filters = [f"--scenario {' '.join(req.scenarios)}" if req.scenarios else None,
                   "--quick" if req.quick else None, f"--dtype {' '.join(req.dtypes)}" if req.dtypes else None,
                   None if req.include_large or req.scenarios else "(large scenarios need --include-large)"]
        raise CampaignError("nothing to judge: " + ", ".join(f for f in filters if f)
                            + " select no scenario in any dtype; widen them (see `xent-harness list --scenarios`)")

    _open_executor(req, log, check=True)  # a bad --scheduler fails before a run directory exists
    out = out_dir(req)
    argv = list(sys.argv[1:]) if req.argv is None else list(req.argv)
    asked = _asked(req, dtypes)
    meta = {"id": out.name, "command": results.argv_command(argv), "argv": argv, "started": results.now(),
            "finished": None, "complete": False, "kinds": list(req.kinds), "quick": req.quick,
            "dtypes": dtypes, "scenario_patterns": req.scenarios, "request": asked}
    try:
        res = results.Results.open(out, meta, resume=req.resume)
    except ValueError as exc:
        raise CampaignError(str(exc)) from None
    if req.resume:
        _same_request(res.data["run"].get("request"), asked, out)
    executor = _open_executor(req, log)
    if executor.distributed:
        res.data["run"]["executor"] = executor.describe()
    res.data["provenance"] = results.provenance(gpu=_gpu_info(chosen), threads=registry.default_threads())
    res.data["budgets"], res.data["budgets_source"] = budget_table, budget_source
    res.data["scenarios"] = [scenarios.describe(s) for s in picked]
    t0 = time.monotonic()
    try:
        if sweep_kinds and picked and loaded:
            plan = sweeps.Plan(loaded, picked, dtypes, budget_table, kinds=sweep_kinds, workers=workers,
                               isolate=req.isolate, timeout=req.timeout, executor=executor, contract=req.contract)
            log(f"{'/'.join(sweep_kinds)}: {len(loaded)} implementations x {len(picked)} scenarios x {len(dtypes)} dtypes")
            sweeps.run(plan, res, log=log, progress=progress)
        executor.close()  # before the throughput rows: they are timed here, never on a busy worker
        t_sweeps = time.monotonic() - t0
        if "throughput" in req.kinds and loaded:
            timed = list(req.dtypes) if req.dtypes else list(throughput.DEFAULT_DTYPES)
            log(f"throughput: {len(loaded)} implementations x {', '.join(timed)}, {'quick' if req.quick else 'full'} grid")
            throughput.run(loaded, timed, res, quick=req.quick, log=log, progress=progress,
                           isolate=req.isolate, timeout=req.timeout)
    except KeyboardInterrupt:
        res.close()
        log(f"interrupted: finished cells are saved; continue with --resume --out {out}")
        return Outcome(out, res, interrupted=True)
    except TaskError as exc:  # a reference task failed on a Dask worker: one line, nothing finished lost
        res.close()
        raise CampaignError(f"{exc}; the finished cells are saved: continue with --resume --out {out}") from None
    finally:
        executor.close()
    mark_known(res.cells, known)
    if sweep_kinds and loaded:  # say what went wrong in the failing cells, and write their reproducers
        from harness import diagnosis

        cells, seconds = req.diagnose or (None, None)
        diagnosis.run(res, loaded, picked, budget_table, isolate=req.isolate, timeout=req.timeout, log=log,
                      workers=workers, cells=cells, seconds=seconds)
    res.data["known_failures"], res.data["known_failures_source"] = known, known_source
    rows = implementation_rows(chosen, skipped, res.cells, res.rows)
    res.data["implementations"] = rows
    res.data["summary"] = summary(rows, res.cells, res.rows, canaries_expected=not req.impls)
    res.data["run"] |= {"finished": results.now(), "complete": True,
                        "seconds": {"sweeps": round(t_sweeps, 2), "total": round(time.monotonic() - t0, 2)}}
    res.close()
    write_report(res.data, out, log)
    if not req.out:
        update_latest(out, log)
    return Outcome(out, res)


def _open_executor(req: Request, log: Callable[[str], None], *, check: bool = False):
    """The executor of ``--scheduler`` (harness.executor); ``check``: only whether it can be."""
    from harness import executor

    try:
        if check:
            return executor.check(req.scheduler)
        return executor.open_executor(req.scheduler, log=log)
    except executor.ExecutorError as exc:
        raise CampaignError(str(exc)) from None


def _check_contract(req: Request) -> None:
    """--contract names a profile of harness/contracts.toml."""
    from harness import contracts

    try:
        contracts.get(req.contract)
    except contracts.ContractError as exc:
        raise CampaignError(f"--contract: {exc}") from None


def _check_declared(entries) -> None:
    """Every implementation declares a contract that exists (its ``contract`` attribute)."""
    from harness import contracts

    for e in entries:
        try:
            contracts.get(contracts.of(e.impl))
        except contracts.ContractError as exc:
            raise CampaignError(f"{e.name}: contract: {exc}; fix its `contract = ...` attribute") from None


def update_latest(out: Path, log: Callable[[str], None] = print) -> None:
    """Make ``reports/latest`` a copy of the run ``out``, always one whole run: the copy is
    made beside it and renamed into place. A ``latest`` that is a file or a symbolic link is
    replaced (the link, not what it points to); one that cannot be replaced is reported in one
    line, and the run stands."""
    latest = out.parent / "latest"
    fresh = out.parent / f".latest.{os.getpid()}.tmp"
    old = out.parent / f".latest.{os.getpid()}.old"
    try:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(out, fresh)
        if latest.is_symlink() or latest.is_file():
            latest.unlink()
        elif latest.exists():
            os.replace(latest, old)
        os.replace(fresh, latest)
    except OSError as exc:
        log(f"reports/latest: not updated ({exc.strerror or exc}); this run is in {out}")
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _gpu_info(entries) -> dict | None:
    for e in entries:
        if e.impl is not None and e.impl.device != "cpu":
            try:
                return e.impl.device_info()
            except Exception as exc:  # provenance is best effort; the run goes on
                return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return None


def write_report(data: dict, out: Path, log: Callable[[str], None] = print) -> None:
    """report.html and summary.md next to the results; a failing report never loses the run."""
    try:
        from harness import report
    except ImportError as exc:
        log(f"report: skipped ({exc}); install the 'report' extra")
        return
    try:
        report.write_html(data, out / "report.html")
        md = report.render_markdown(data)
    except Exception as exc:  # the results are saved; say so and keep the run's verdict
        log(f"report: failed ({type(exc).__name__}: {exc}); results are intact, retry with "
            f"`xent-harness report {out / 'results.json'}`")
        return
    report.write_atomic(out / "summary.md", md)
    report.append_github_summary(md)


# -- the verdict -----------------------------------------------------------------------------------


def mark_known(cells: list[dict], known: list[dict]) -> int:
    """Annotate failing cells that match a known failure; returns how many."""
    from harness.budgets import known_reason

    n = 0
    for c in cells:
        c.pop("known", None)
        if c["status"] in ("fail", "error"):
            reason = known_reason(c, known)
            if reason:
                c["known"] = reason
                n += 1
    return n


def _counts(cells) -> dict:
    counts = Counter("known" if c.get("known") else c["status"] for c in cells)
    return {k: counts.get(k, 0) for k in STATUSES}


def implementation_rows(entries: list[registry.Entry], skipped: list[registry.Entry], cells: list[dict],
                        throughput: list[dict] = ()) -> list[dict]:
    """One row per implementation with its overall verdict: fail > error > pass. A named
    implementation that could not be loaded, or a throughput row that errs, is an error."""
    rows = []
    for e in entries + skipped:
        reason = e.unavailable()
        row = {"name": e.name, "origin": e.origin, "available": reason is None,
               "reason": reason or (None if e in entries else registry.left_out(e, include_canaries=False))}
        if e.impl is not None:
            row |= {k: v for k, v in e.impl.describe().items() if k not in ("name", "origin")}
        elif e.extra.get("detail"):
            row["detail"] = e.extra["detail"]
        row["counts"] = counts = _counts(c for c in cells if c["impl"] == e.name)
        row["throughput_errors"] = sum(1 for t in throughput if t["impl"] == e.name and t.get("status") == "error")
        if e in entries and e.impl is None:
            row["verdict"] = "error"
        elif reason is not None or e not in entries:
            row["verdict"] = "unavailable" if reason is not None else "skipped"
        elif counts["fail"]:
            row["verdict"] = "fail"
        elif counts["error"] or row["throughput_errors"]:
            row["verdict"] = "error"
        else:
            row["verdict"] = "pass"
        rows.append(row)
    return rows


def summary(impl_rows: list[dict], cells: list[dict], throughput: list[dict], *,
            canaries_expected: bool = True) -> dict:
    """The run's verdict. Canaries are expected to fail when the run includes them by default
    (``run``); one named explicitly (``check --impl numpy-naive``) is judged like any other."""
    failing = [r["name"] for r in impl_rows if r["verdict"] in ("fail", "error")]
    gate = [r["name"] for r in impl_rows if r["verdict"] in ("fail", "error")
            and not (canaries_expected and r.get("canary"))]
    errors = sum(1 for r in throughput if r.get("status") == "error")
    return {"verdict": "fail" if gate else "pass", "counts": _counts(cells), "failing": failing,
            "throughput_errors": errors}
