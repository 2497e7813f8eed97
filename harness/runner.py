"""Call an implementation, in this process or isolated in a subprocess, with fault isolation.

In-process calls (the default for built-ins) turn any exception into a :class:`CallFailed`.
Isolated calls (``--isolate``, the default for ``--impl`` plugins) run in a child process that
loads the implementation itself; a call that exceeds the timeout kills the child, and a child that
dies (a segfault, os._exit) is reported with its exit code. Either way the sweep records an error
cell and goes on; the next call starts a fresh child.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time

import numpy as np

from harness import registry
from harness.problem import Problem


class CallFailed(Exception):
    """The implementation raised, hung or crashed; the message says which, in one line."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def locator(entry: registry.Entry) -> tuple[str, str]:
    """How a child process finds the same implementation again."""
    if "spec" in entry.extra:
        return ("spec", entry.extra["spec"])
    if entry.origin == "builtin":
        return ("builtin", entry.name)
    return ("entry_point", entry.name)


def _load(how: tuple[str, str]) -> registry.Implementation:
    kind, value = how
    if kind == "spec":
        return registry.load_spec(value)
    for e in registry.discover():
        if e.name == value and e.impl is not None:
            return e.impl
    raise registry.ImplementationError(f"cannot load {value!r} in the child process")


def _invoke(impl: registry.Implementation, op: str, problem: Problem):
    """One call: 'loss' or 'grad' give an array, 'loss_and_grad' a pair of arrays."""
    if op == "loss_and_grad":
        loss, grad = impl.loss_and_grad(problem)
        return np.asarray(loss), np.asarray(grad)
    return np.asarray(impl.loss(problem) if op == "loss" else impl.grad(problem))


def _child(conn, how):
    try:
        impl = _load(how)
    except Exception as exc:
        conn.send(("err", f"failed to load: {one_line(exc)}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            op, problem = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", _invoke(impl, op, problem)))
        except Exception as exc:
            conn.send(("err", one_line(exc)))


class Runner:
    """Runs ``loss``/``grad``/``loss_and_grad`` of one implementation."""

    def __init__(self, entry: registry.Entry, *, isolate: bool = False, timeout: float = 60.0):
        self.entry = entry
        self.impl = entry.impl
        self.isolate = isolate
        self.timeout = timeout
        self._proc = None
        self._conn = None

    def call(self, op: str, problem: Problem):
        if not self.isolate:
            try:
                return _invoke(self.impl, op, problem)
            except Exception as exc:
                raise CallFailed(one_line(exc)) from exc
        return self._call_isolated(op, problem)

    # -- isolation -------------------------------------------------------------------------------
    def _start(self, budget: float):
        """Start the child; loading the implementation counts against the call's ``budget``."""
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads or CUDA state
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child, locator(self.entry)), daemon=True)
        proc.start()
        child.close()
        if not parent.poll(budget):
            proc.kill()
            proc.join(5)
            raise CallFailed(f"timed out after {self.timeout:g} s (killed) while loading the implementation")
        try:
            status, msg = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise CallFailed(f"isolated worker died while loading the implementation (exit code {proc.exitcode})") from None
        if status != "ready":
            proc.kill()
            raise CallFailed(msg)
        self._proc, self._conn = proc, parent

    def _kill(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def _call_isolated(self, op: str, problem: Problem) -> np.ndarray:
        t0 = time.monotonic()
        if self._proc is None or not self._proc.is_alive():
            self._start(self.timeout)  # --timeout covers starting the child too
        try:
            self._conn.send((op, problem))
            if not self._conn.poll(max(0.0, self.timeout - (time.monotonic() - t0))):
                self._kill()
                raise CallFailed(f"timed out after {self.timeout:g} s (killed)")
            status, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            proc = self._proc
            if proc is not None:
                proc.join(5)
            code = proc.exitcode if proc is not None else None
            self._kill()
            if code is not None and code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                raise CallFailed(f"crashed the interpreter ({name}) after {time.monotonic() - t0:.1f} s") from None
            raise CallFailed(f"worker process died (exit code {code})") from None
        if status != "ok":
            raise CallFailed(payload)
        return payload

    def close(self):
        self._kill()
