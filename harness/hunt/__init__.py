"""``xent-harness hunt``: search the contract's input space for the rows where an
implementation is least accurate (docs/hunt.md).

For each dtype x quantity pair of one implementation: the strategies of
:mod:`harness.hunt.strategies` propose rows described by the parameters of
:mod:`harness.hunt.space`, :mod:`harness.hunt.search` evaluates them in batches against the
exact reference and keeps the worst; then the same number of rows drawn uniformly (the
baseline) shows what the strategies buy. :mod:`harness.hunt.output` confirms every top row as
a sweep cell (:class:`harness.fuzz.Judge`), saves it as a golden-format case that ``check
--cases DIR`` and the pytest plugin replay, and writes ``hunt.json`` and ``hunt.html``.
With ``--scheduler`` the searches run as branches on a Dask cluster
(:mod:`harness.hunt.distributed`, docs/dask.md); everything else stays here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.hunt.search import OBJECTIVES, HuntError, Journal
from harness.hunt.strategies import NAMES as STRATEGIES

__all__ = ["OBJECTIVES", "STRATEGIES", "HuntError", "Request", "run"]


@dataclass
class Request:
    impl: str
    dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    quantities: list[str] = field(default_factory=lambda: ["loss", "grad"])
    seconds: float | None = None
    evaluations: int | None = None
    seed: int = 0
    top: int = 5
    out: str | None = None
    resume: bool = False
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    objective: str = "ulp"
    baseline: bool = True
    against: str | None = None
    catalogue: bool = True
    budgets: str | None = None
    #: ``--scheduler``: a Dask cluster's branches search (harness.hunt.distributed); None: here
    scheduler: object = None

    def header(self) -> dict:
        """What a journal must have been written by, for --resume."""
        return {k: getattr(self, k) for k in ("impl", "dtypes", "quantities", "seed", "strategies", "objective")}

    def record(self) -> dict:
        """The request as hunt.json holds it (an executor object given as ``scheduler`` by name)."""
        d = asdict(replace(self, scheduler=None))
        d["scheduler"] = self.scheduler if self.scheduler is None or isinstance(self.scheduler, str) else "executor"
        return d


def _check(req: Request, entry) -> None:
    from harness.formats import FORMATS

    if entry.impl is None:
        raise HuntError(f"--impl {req.impl}: {entry.unavailable() or 'could not be loaded'}")
    if req.seconds is None and req.evaluations is None:
        req.seconds = 60.0
    if req.seconds is not None and not req.seconds > 0:
        raise HuntError(f"--seconds: must be > 0, got {req.seconds}")
    if req.evaluations is not None and req.evaluations < 1:
        raise HuntError(f"--evaluations: must be >= 1, got {req.evaluations}")
    if req.top < 1:
        raise HuntError(f"--top: must be >= 1, got {req.top}")
    for d in req.dtypes:
        if d not in FORMATS:
            raise HuntError(f"--dtype: unknown dtype {d!r}; use {', '.join(FORMATS)}")
        if d not in entry.impl.dtypes:
            raise HuntError(f"--dtype: {entry.name} does not support {d} (it declares {', '.join(entry.impl.dtypes)})")
    for q in req.quantities:
        if q not in ("loss", "grad"):
            raise HuntError(f"--quantity: {q!r} is not loss or grad")
    if "grad" in req.quantities and not entry.impl.has_grad:
        raise HuntError(f"--quantity grad: {entry.name} has no gradient; use --quantity loss")
    bad = [s for s in req.strategies if s not in STRATEGIES]
    if bad or not req.strategies:
        raise HuntError(f"--strategy: unknown strategy {bad[0] if bad else '(none)'!r}; use {', '.join(STRATEGIES)}")
    if req.objective not in OBJECTIVES:
        raise HuntError(f"--objective: {req.objective!r}; use {', '.join(OBJECTIVES)}")
    if req.against and not Path(req.against).is_file():
        raise HuntError(f"--against: {req.against} is not a file; name a results.json")
    from harness import executor

    try:
        executor.check(req.scheduler)
    except executor.ExecutorError as exc:
        raise HuntError(str(exc)) from None


def _open(req: Request, log):
    """The Dask executor of ``--scheduler`` (None without one): a one-line HuntError when it
    cannot be had."""
    if req.scheduler is None or req.scheduler == "":
        return None
    from harness import executor

    try:
        return executor.open_executor(req.scheduler, log=log)
    except executor.ExecutorError as exc:
        raise HuntError(str(exc)) from None


def _out_dir(req: Request) -> Path:
    if req.out:
        return Path(req.out)
    if req.resume:
        found = sorted(Path("reports").glob("hunt-*"))
        if not found:
            raise HuntError("--resume: no reports/hunt-* run to resume; name it with --out")
        return found[-1]
    return Path("reports") / time.strftime("hunt-%Y%m%d-%H%M%S")


def run(req: Request, *, log: Callable[[str], None] = print, progress: Callable | None = None) -> dict:
    """Run the hunt; returns the hunt.json data (its ``out`` key: the run directory)."""
    from harness import budgets as budgets_mod
    from harness import registry
    from harness.formats import FORMATS
    from harness.hunt import output
    from harness.hunt.search import Evaluator, search
    from harness.hunt.space import Space
    from harness.runner import Runner, isolated

    try:
        chosen, _ = registry.select([req.impl])
    except registry.ImplementationError as exc:
        raise HuntError(f"--impl: {exc}") from None
    entry = chosen[0]
    _check(req, entry)
    out = _out_dir(req)
    if out.exists() and not out.is_dir():
        raise HuntError(f"--out: {out} is not a directory")
    if (out / "journal.jsonl").exists() and not req.resume:
        raise HuntError(f"--out: {out} already holds a hunt; add --resume to continue it or choose another directory")
    table = budgets_mod.load(req.budgets)[0]
    ex = _open(req, log)
    try:
        header = req.header()
        if ex is not None:  # another cluster size is another search: --resume must refuse it
            header["branches"] = ex.n_workers()
        journal = Journal(out / "journal.jsonl", header, req.resume)
    except BaseException:
        if ex is not None:
            ex.close()
        raise
    smoothing = "label_smoothing" in entry.impl.features
    pairs = [(d, q) for d in req.dtypes for q in req.quantities]
    share = None if req.seconds is None else req.seconds / len(pairs)
    runner = Runner(entry, isolate=isolated(entry, None), timeout=60.0)
    if ex is not None:
        from harness.executor import tasks
        from harness.hunt import distributed

        spec = tasks.entry_spec(entry, isolated(entry, None))
        described = ex.describe()
    data = {"schema": "xent-harness/hunt", "schema_version": 1, "impl": entry.name, "request": req.record(),
            "out": str(out), "pairs": []}
    try:
        for i, (d, q) in enumerate(pairs):
            fmt = FORMATS[d]
            space = Space(fmt, smoothing=smoothing)
            ev = Evaluator(runner, fmt, q, table[d])
            pair = f"{d}/{q}"
            t0 = time.monotonic()
            bar = progress(pair, req.evaluations) if progress else None
            if ex is not None:  # the branches on the cluster; the rest (cases, hunt.json) as a local hunt
                res, ev = distributed.search(ex, spec, d, q, table[d], space, strategies=req.strategies,
                                             seed=req.seed * 1009 + i, objective=req.objective,
                                             evaluations=req.evaluations, deadline=None if share is None else t0 + share,
                                             journal=journal, pair=pair, phase="hunt", top=req.top, progress=bar)
            else:
                res = search(ev, space, strategies=req.strategies, seed=req.seed * 1009 + i, objective=req.objective,
                             evaluations=req.evaluations, deadline=None if share is None else t0 + share, journal=journal,
                             pair=pair, phase="hunt", top=req.top, progress=bar)
            if bar:
                bar(None, None)
            base = None
            if req.baseline and ex is not None:
                base, bev = distributed.search(ex, spec, d, q, table[d], space, strategies=["uniform"],
                                               seed=req.seed * 1009 + i + 7919, objective=req.objective,
                                               evaluations=res["evaluations"], deadline=None, journal=journal,
                                               pair=pair, phase="baseline", top=1)
                base["evaluated"] = bev.evaluations
            elif req.baseline:
                bev = Evaluator(runner, fmt, q, table[d])
                base = search(bev, space, strategies=["uniform"], seed=req.seed * 1009 + i + 7919, objective=req.objective,
                              evaluations=res["evaluations"], deadline=None, journal=journal, pair=pair, phase="baseline",
                              top=1)
                base["evaluated"] = bev.evaluations
            log(f"hunt {entry.name} {pair}: {res['evaluations']} rows ({ev.evaluations} evaluated, {res['replayed']} from "
                f"the journal) in {res['seconds']:.1f} s"
                + (f" on {res['branches']} branches" if ex is not None else "") + f"; worst {req.objective} {res['worst']:.4g}"
                + (f"; uniform baseline {base['worst']:.4g}" if base else ""))
            data["pairs"].append(output.pair_record(entry, d, q, res, base, ev, req))
    finally:
        runner.close()
        if ex is not None:
            distributed.finish(ex)
            ex.close()
    if ex is not None:
        data["executor"] = described
    output.finish(data, entry, req, out, table, log=log)
    return data
