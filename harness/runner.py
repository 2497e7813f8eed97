"""Call an implementation, in this process or isolated in a subprocess, with fault isolation.

In-process calls (the default for built-ins) turn any exception into a :class:`CallFailed`.
Isolated calls (the default for ``--impl`` plugins and entry points, ``--isolate`` for all) run
in a child process that loads the implementation itself, so nothing a plugin does at import, in
its constructor or in a call can reach the harness: a call that exceeds the timeout (loading
included) kills the child; a child that dies (a segfault, ``sys.exit``, ``os._exit``) is
reported with its exit code; what it prints goes to a file whose bounded tail is kept with the
result, so the harness's own output (``--json``, the tables) stays clean. Either way the sweep
records an error cell and goes on; the next call starts a fresh child.

The same child answers :func:`probe` (what the main process may know of a plugin: its
declarations, read without importing it here), the throughput timing (timed inside the child,
so the figures stay honest) and the peak-memory measurement (a child of its own, see
:mod:`harness.throughput`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import time
import traceback
from contextlib import contextmanager

import numpy as np

from harness import registry
from harness.problem import Problem

#: Characters of a traceback and of a child's output kept with a result.
DETAIL_CHARS = 4000


class CallFailed(Exception):
    """The implementation raised, hung or crashed; the message says which, in one line, and
    ``detail`` keeps the bounded traceback and the child's output for the report."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class Unsupported(Exception):
    """The problem is not supported: an isolated plugin's own ``supports()`` declined it
    (checked in the child), or a call raised ``NotImplementedError`` (in process or in the
    child): an 'unsupported' cell with the message, not an error cell."""


def not_implemented(exc: NotImplementedError, op: str) -> str:
    """The reason a call that raised ``NotImplementedError`` gives: its message's first line,
    or which call it was when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else f"{op}: not implemented (NotImplementedError)"


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def bounded(text: str | None, limit: int = DETAIL_CHARS) -> str | None:
    """The last ``limit`` characters of ``text`` (the end of a traceback says most)."""
    if not text:
        return None
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def _detail(tb: str | None, output: str | None) -> str | None:
    parts = [p for p in (bounded(tb), output and "output (tail):\n" + bounded(output)) if p]
    return "\n".join(parts) or None


def locator(entry: registry.Entry) -> tuple[str, str]:
    """How a child process finds the same implementation again."""
    if "spec" in entry.extra:
        return ("spec", entry.extra["spec"])
    if entry.origin == "builtin":
        return ("builtin", entry.name)
    return ("entry_point", entry.extra.get("entry_point", entry.name))


def _load(how: tuple[str, str]) -> registry.Implementation:
    kind, value = how
    if kind == "spec":
        return registry.load_spec(value)
    if kind == "builtin":
        entry = registry.builtin(value)
    else:
        entry = registry.load_entry_point(value)
    if entry.impl is None:
        raise registry.ImplementationError(entry.error or f"cannot load {value!r}")
    return entry.impl


def _invoke(impl: registry.Implementation, op: str, arg):
    """One request: 'loss' or 'grad' give an array, 'loss_and_grad' a pair of arrays;
    'throughput' and 'memory' (see :mod:`harness.throughput`) give a dict / a byte count."""
    if op == "throughput":
        from harness import throughput

        return throughput.time_call(impl, *arg)
    if op == "memory":
        from harness import throughput

        return throughput.call_memory(impl, *arg)
    if isinstance(arg, Problem):
        # the arrays in the problem's memory layout (strided, transposed, offset views), built
        # here, so an isolated child gets the same strides: a pickled view arrives C-ordered
        arg = arg.presented()
    if op == "loss_and_grad":
        loss, grad = impl.loss_and_grad(arg)
        return np.asarray(loss), np.asarray(grad)
    return np.asarray(impl.loss(arg) if op == "loss" else impl.grad(arg))


def _capture(path: str) -> None:
    """Send this process's stdout and stderr (file descriptors too: C libraries print) to
    ``path``; opened for appending, so the parent may truncate it between calls."""
    import sys

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for stream, target in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            stream.flush()
        except Exception:
            pass
        os.dup2(fd, target)
    os.close(fd)


def _child(conn, how, output_path):
    if output_path:
        _capture(output_path)
    try:
        impl = _load(how)
        description = describe(impl)
    except BaseException as exc:  # SystemExit at import included: a load failure, not a pass
        message = one_line(exc)
        message = message if "could not load" in message else f"could not load: {message}"
        conn.send(("err", message.replace("ImplementationError: ", ""), traceback.format_exc()))
        return
    conn.send(("ready", description, None))
    while True:
        try:
            op, arg = conn.recv()
        except EOFError:
            return
        try:
            if isinstance(arg, Problem):
                reason = impl.supports(arg)
                if reason:
                    conn.send(("unsupported", str(reason), None))
                    continue
            conn.send(("ok", _invoke(impl, op, arg), None))
        except NotImplementedError as exc:  # "not supported", said by the call itself
            conn.send(("unsupported", not_implemented(exc, op), None))
        except BaseException as exc:
            conn.send(("err", one_line(exc), traceback.format_exc()))


def describe(impl: registry.Implementation) -> dict:
    """What the main process needs of an implementation it does not import: its declarations,
    checked here (a ``dtypes = 5`` or a raising ``available()`` is a load failure)."""
    d = impl.describe()
    for key in ("dtypes", "devices", "features"):
        if not all(isinstance(v, str) for v in d[key]):
            raise TypeError(f"{key} must be a collection of strings")
    return d | {"fused": bool(impl.fused), "available": impl.available()}


class Runner:
    """Runs ``loss``/``grad``/``loss_and_grad`` (and the throughput requests) of one
    implementation; ``env`` adds environment variables for an isolated child."""

    def __init__(self, entry: registry.Entry, *, isolate: bool = False, timeout: float = 60.0,
                 env: dict[str, str] | None = None):
        self.entry = entry
        self.impl = entry.impl
        self.isolate = isolate
        self.timeout = timeout
        self.env = env or {}
        self.description: dict | None = None
        self._proc = None
        self._conn = None
        self._output: str | None = None

    def call(self, op: str, arg):
        if not self.isolate:
            try:
                return _invoke(self.impl, op, arg)
            except NotImplementedError as exc:
                raise Unsupported(not_implemented(exc, op)) from exc
            except Exception as exc:
                raise CallFailed(one_line(exc), bounded(traceback.format_exc())) from exc
        return self._call_isolated(op, arg)

    # -- isolation -------------------------------------------------------------------------------
    def _read_output(self) -> str | None:
        """The child's output since the last read (the file is emptied after reading)."""
        if not self._output:
            return None
        try:
            with open(self._output, "r+b") as fh:
                data = fh.read()
                fh.truncate(0)
        except OSError:
            return None
        return data.decode("utf-8", "replace") or None

    def _fail(self, message: str, tb: str | None = None) -> CallFailed:
        return CallFailed(message, _detail(tb, self._read_output()))

    def start(self, budget: float | None = None) -> dict:
        """Start the child and load the implementation there; loading counts against the call's
        ``budget`` (default: the timeout). Returns the implementation's :func:`describe`."""
        budget = self.timeout if budget is None else budget
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads or CUDA state
        if self._output is None:
            fd, self._output = tempfile.mkstemp(prefix="xent-harness-output-")
            os.close(fd)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child, locator(self.entry), self._output), daemon=True)
        with _environ(self.env):
            proc.start()
        child.close()
        if not parent.poll(budget):
            proc.kill()
            proc.join(5)
            raise self._fail(f"timed out after {self.timeout:g} s (killed) while loading the implementation")
        try:
            status, payload, tb = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise self._fail(f"could not load: the isolated worker {_death(proc.exitcode)} while loading "
                             "the implementation") from None
        if status != "ready":
            proc.kill()
            proc.join(5)
            raise self._fail(payload, tb)
        self._proc, self._conn = proc, parent
        self.description = payload
        return payload

    def _kill(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def _call_isolated(self, op: str, arg):
        t0 = time.monotonic()
        if self._proc is None or not self._proc.is_alive():
            self.start(self.timeout)  # --timeout covers starting the child too
        try:
            self._conn.send((op, arg))
            if not self._conn.poll(max(0.0, self.timeout - (time.monotonic() - t0))):
                self._kill()
                raise self._fail(f"timed out after {self.timeout:g} s (killed)")
            status, payload, tb = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            proc = self._proc
            if proc is not None:
                proc.join(5)
            code = proc.exitcode if proc is not None else None
            self._kill()
            if code is not None and code < 0:
                raise self._fail(f"crashed the interpreter ({_death(code)}) after {time.monotonic() - t0:.1f} s") from None
            raise self._fail(f"worker process {_death(code)}") from None
        if status == "unsupported":
            self._read_output()
            raise Unsupported(payload)
        if status != "ok":
            raise self._fail(payload, tb)
        printed = self._read_output()
        if printed:
            self._printed = bounded((self._printed or "") + printed)
        return payload

    _printed: str | None = None

    def take_output(self) -> str | None:
        """What the isolated child printed during successful calls since the last take (a
        bounded tail), for the cells of those calls; None when it printed nothing."""
        printed, self._printed = self._printed, None
        return printed and "output (tail):\n" + printed

    def close(self):
        self._kill()
        if self._output:
            try:
                os.unlink(self._output)
            except OSError:
                pass
            self._output = None


def _death(code: int | None) -> str:
    """How a child ended, in words."""
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"died (exit code {code})"


@contextmanager
def _environ(extra: dict[str, str]):
    """``os.environ`` plus ``extra`` while a child is spawned (it inherits the environment)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def probe(entry: registry.Entry, timeout: float) -> registry.Entry:
    """Load a plugin in a child and return an entry holding what it declared (a
    :class:`registry.Declared` stand-in), or one holding the one-line load failure."""
    runner = Runner(entry, isolate=True, timeout=timeout)
    try:
        described = runner.start()
    except CallFailed as exc:
        message = str(exc) if str(exc).startswith("could not load") else f"could not load: {exc}"
        return registry.Entry(entry.name, entry.origin, error=message, extra=entry.extra | {"detail": exc.detail})
    finally:
        runner.close()
    impl = registry.Declared(described)
    return registry.Entry(impl.name, entry.origin, impl, extra=entry.extra)


def isolated(entry: registry.Entry, policy: bool | None) -> bool:
    """Whether ``entry`` runs in a child: ``policy`` (``--isolate``/``--no-isolate``) when given,
    else plugins do and built-ins do not; a plugin known only by its declarations always does."""
    if isinstance(entry.impl, registry.Declared):
        return True
    return policy if policy is not None else bool({"spec", "entry_point"} & set(entry.extra))
