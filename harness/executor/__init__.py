"""Where a campaign's work runs: the executor, in one place.

* ``local`` (the default, ``--scheduler`` not given): today's behaviour, untouched: the sweeps
  call the implementations in this process (or its isolated children) and the reference in a
  process pool (:mod:`harness.sweeps`, :mod:`harness.cache`).
* ``dask`` (``--scheduler tcp://HOST:8786`` connects to a running Dask distributed scheduler;
  ``--scheduler local[:N]`` starts a ``distributed.LocalCluster`` of N worker processes here,
  default 2): the small problems' references and the implementation cells become Dask tasks
  (:mod:`harness.executor.sweep`, :mod:`harness.executor.tasks`); the client keeps the journal,
  the reference cache and the verdicts. docs/dask.md has the setup on several machines.

Dask is an optional extra (``pip install 'xent-harness[dask]'``), imported only by
:func:`open_executor` for a ``--scheduler``: ``import harness`` and the local executor never
import it.

**The hook for other campaigns** (the worst-case hunt's branches submit their own tasks,
:mod:`harness.hunt.distributed`, to name the branch that failed):
``Executor.map(fn, items, resources=None)`` applies a picklable top-level function to each item
on the executor and yields ``(index, result)`` as each one finishes (in order for ``local``, in
completion order for ``dask``); an exception raised by ``fn`` is re-raised at the client when
its item is reached. ``fn`` must be importable on the workers (a function of the installed
``harness`` package, or of a module installed there too): Dask pickles functions by reference.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

#: The one-line fix for a missing Dask, in every message that needs it.
INSTALL = "pip install 'xent-harness[dask]'"
#: Worker processes of ``--scheduler local`` without ``:N``.
DEFAULT_LOCAL_WORKERS = 2

_LOCAL = re.compile(r"local(?:\[?:?(\d+)\]?)?")
_ADDRESS = re.compile(r"(tcp|tls|ucx|inproc)://\S+")


class ExecutorError(ValueError):
    """Bad ``--scheduler`` (malformed, Dask missing, scheduler unreachable): one line with the fix."""


class TaskError(RuntimeError):
    """A reference task that failed on a Dask worker (or kept killing workers): one line naming
    the problem and the cause. The campaign stops with it after recording every cell it could
    (``--resume`` continues); an implementation's failing task is an error cell instead."""


def parse(spec: str) -> tuple[str, object]:
    """``("local", N)`` for ``local``, ``local:N`` or ``local[N]``; ``("address", spec)`` for
    ``tcp://HOST:PORT`` (or tls://, ucx://); ExecutorError naming the field otherwise."""
    text = str(spec).strip()
    m = _LOCAL.fullmatch(text)
    if m:
        n = int(m.group(1)) if m.group(1) else DEFAULT_LOCAL_WORKERS
        if n < 1:
            raise ExecutorError(f"--scheduler: {text!r} asks for {n} workers; use local:N with N >= 1")
        return "local", n
    if _ADDRESS.fullmatch(text):
        return "address", text
    raise ExecutorError(f"--scheduler: {text!r} is neither local[:N] nor a scheduler address such as "
                        "tcp://HOST:8786")


class LocalExecutor:
    """This process: what a campaign without ``--scheduler`` uses. The sweeps keep their own
    local path (:func:`harness.sweeps.run`); :meth:`map` is the hook's local form."""

    distributed = False

    def __init__(self):
        self.submitted: Counter = Counter()

    def map(self, fn: Callable, items: Iterable, *, resources: dict | None = None) -> Iterator[tuple[int, object]]:
        for i, item in enumerate(items):
            self.submitted["map"] += 1
            yield i, fn(item)

    def describe(self) -> dict:
        return {"kind": "local"}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check(scheduler) -> None:
    """Raise ExecutorError when ``scheduler`` is malformed or needs a Dask that is not installed
    (without starting or connecting to anything)."""
    if scheduler is None or scheduler == "" or not isinstance(scheduler, str):
        return
    parse(scheduler)
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ExecutorError(f"--scheduler: Dask distributed is not installed; {INSTALL}") from None


def open_executor(scheduler=None, *, log: Callable[[str], None] = print):
    """The executor a ``--scheduler`` value names: None → :class:`LocalExecutor`; an executor
    object is returned as is (the caller keeps it, and closes it); a string → a
    :class:`~harness.executor.cluster.DaskExecutor` that owns what it started."""
    if scheduler is None or scheduler == "":
        return LocalExecutor()
    if not isinstance(scheduler, str):
        return _Borrowed(scheduler)
    check(scheduler)
    kind, value = parse(scheduler)
    from harness.executor.cluster import DaskExecutor

    if kind == "local":
        return DaskExecutor.local(value, log=log)
    return DaskExecutor.connect(value, log=log)


class _Borrowed:
    """An executor the caller opened (a script or a test sharing one cluster between campaigns):
    used as is, not closed by the campaign."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def close(self) -> None:
        pass
