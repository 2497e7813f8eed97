"""The implementation contract and the registry of implementations.

An implementation is one small object (benchopt-style: one file each under
``harness/implementations/``) that declares what it supports and computes the loss and its
gradient for a :class:`~harness.problem.Problem`. The registry knows three sources:

* built-ins, listed in :data:`BUILTINS` by module path so nothing heavy is imported until used;
* entry points in the group ``xent_harness.implementations`` (each loaded in its own try/except:
  a broken plugin is listed with its error and never crashes the harness);
* ``--impl MODULE:ATTR`` or ``--impl path/to/file.py:ATTR`` specs (see :func:`load_spec`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from harness.formats import DTYPE_NAMES
from harness.problem import Problem

ENTRY_POINT_GROUP = "xent_harness.implementations"

#: Every contract feature a problem can exercise (see ``Problem.features``).
FEATURES: frozenset[str] = frozenset(
    {
        "weight",
        "ignore_index",
        "label_smoothing",
        "probability_target",
        "kdim",
        "unbatched",
        "reduction:mean",
        "reduction:sum",
        "reduction:none",
    }
)


class ImplementationError(RuntimeError):
    """An implementation could not be loaded or was asked for while unavailable."""


class Implementation:
    """Base class of an implementation. Subclasses set the class attributes and override
    :meth:`loss`, :meth:`grad` and, for fair timing, :meth:`prepare`."""

    name: str = ""
    description: str = ""
    dtypes: frozenset[str] = frozenset(DTYPE_NAMES)
    devices: tuple[str, ...] = ("cpu",)
    features: frozenset[str] = FEATURES
    #: Python modules that must be importable (checked without importing them).
    requires: tuple[str, ...] = ()
    #: True for implementations that need an NVIDIA GPU: available() says so without importing
    #: their library when the machine visibly has none.
    needs_gpu: bool = False
    #: True for deliberately broken implementations kept to prove the harness catches them.
    canary: bool = False
    #: True for implementations a default run leaves out (slow to compile, or a third-party
    #: library of the zoo): they run when named with --impl, and in ``xent-harness zoo``.
    opt_in: bool = False
    #: Where it came from: "builtin", "entry point NAME" or the --impl spec.
    origin: str = "builtin"
    #: The contract profile it follows (harness/contracts.toml, docs/contracts.md): a cell that
    #: fails the run's contract but passes this one is a convention difference, not a defect.
    contract: str = "pytorch"

    @property
    def device(self) -> str:
        return self.devices[0]

    @property
    def has_grad(self) -> bool:
        return type(self).grad is not Implementation.grad

    def available(self) -> str | None:
        """None when usable here, else a one-line reason (missing package, no device, ...)."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"python package {module!r} is not installed"
        return no_gpu_reason() if self.needs_gpu else None

    def supports(self, problem: Problem) -> str | None:
        """None when this implementation accepts the problem, else why not ("not supported")."""
        if problem.dtype.name not in self.dtypes:
            return f"dtype {problem.dtype.name} not supported"
        missing = sorted(problem.features - self.features)
        if missing:
            return f"feature {', '.join(missing)} not supported"
        return None

    def loss(self, problem: Problem) -> np.ndarray:
        """The loss as a NumPy array of the logits' dtype and shape ``problem.output_shape``."""
        raise NotImplementedError

    def grad(self, problem: Problem) -> np.ndarray:
        """d loss / d logits (for 'none': of the sum of the per-sample losses), logits' shape."""
        raise NotImplementedError(f"{self.name} provides no gradient")

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Loss and gradient in one call (what a training step computes). The default is
        :meth:`loss` then :meth:`grad`; an implementation with a fused pass overrides it, and
        the sweeps then make one call per problem instead of two (:attr:`fused`)."""
        return self.loss(problem), self.grad(problem)

    @property
    def fused(self) -> bool:
        """True when :meth:`loss_and_grad` is the implementation's own (one pass)."""
        return type(self).loss_and_grad is not Implementation.loss_and_grad and self.has_grad

    def prepare(self, problem: Problem, *, backward: bool = False) -> Callable[[], object]:
        """Move inputs to the device once and return a zero-argument callable that runs forward
        (or forward+backward) and synchronizes the device before returning.

        The default calls :meth:`loss` / :meth:`grad` on host arrays, which is exact for NumPy
        implementations; device implementations override it so conversions stay untimed.
        """
        if backward:
            return lambda: self.grad(problem)
        return lambda: self.loss(problem)

    def device_info(self) -> dict | None:
        """What the results' provenance records of the device this runs on (GPU name, memory,
        driver, ...); None for the CPU, whose model provenance records anyway."""
        return None

    def peak_memory(self, fn: Callable[[], object]) -> int | None:
        """Peak device memory (bytes) one call of ``fn`` adds, for a device implementation; None
        when unknown. (CPU implementations are measured by the throughput sweep itself.)"""
        return None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "origin": self.origin,
            "dtypes": [d for d in DTYPE_NAMES if d in self.dtypes],
            "devices": list(self.devices),
            "features": sorted(self.features),
            "grad": self.has_grad,
            "canary": self.canary,
            "opt_in": self.opt_in,
            "contract": self.contract,
        }

    def __repr__(self) -> str:
        return f"<Implementation {self.name} ({self.origin})>"


def default_threads() -> int:
    """Threads an implementation may use: ``XENT_NUM_THREADS`` when set to a positive integer,
    else ``os.cpu_count()``. NumPy and torch use the same count, so speed comparisons are fair."""
    import os

    try:
        n = int(os.environ.get("XENT_NUM_THREADS", "").strip() or 0)
    except ValueError:
        n = 0
    return n if n >= 1 else (os.cpu_count() or 1)


def no_gpu_reason() -> str | None:
    """A reason when this machine visibly has no NVIDIA GPU, found without importing any GPU
    library (so ``xent-harness list`` stays fast); None when one may be present."""
    import glob
    import os

    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    if glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/proc/driver/nvidia") or sys.platform != "linux":
        return None
    return "no NVIDIA GPU on this machine (no /dev/nvidia* device)"


class FunctionImplementation(Implementation):
    """Adapts a plugin written against plain NumPy arrays: an object with
    ``loss(logits, target, *, weight, ignore_index, reduction, label_smoothing)`` and optionally
    ``grad(...)`` and ``loss_and_grad(...)`` (returning the pair) with the same arguments, or a
    bare loss function. ``supports`` is either the features it accepts (a collection of
    :data:`FEATURES`) or a method ``supports(problem)`` returning None or why not."""

    def __init__(self, obj, name: str, origin: str):
        self._obj = obj
        self._loss = obj if (callable(obj) and not hasattr(obj, "loss")) else obj.loss
        self._grad = getattr(obj, "grad", None)
        self._fused = None if self._loss is obj else getattr(obj, "loss_and_grad", None)
        self.name = str(getattr(obj, "name", name))
        self.origin = origin
        self.description = (inspect.getdoc(obj) or "").split("\n")[0]
        if getattr(obj, "dtypes", None) is not None:
            self.dtypes = frozenset(obj.dtypes)
        declared = getattr(obj, "supports", None)
        self._supports = declared if callable(declared) else None  # supports(problem) -> reason
        if declared is not None and not callable(declared):
            self.features = frozenset(declared)
        if getattr(obj, "devices", None) is not None:
            self.devices = tuple(obj.devices)

    @property
    def has_grad(self) -> bool:
        return self._grad is not None

    def supports(self, problem: Problem) -> str | None:
        reason = super().supports(problem)
        if reason is None and self._supports is not None:
            reason = self._supports(problem)
        return str(reason) if reason else None

    def _call(self, fn, problem: Problem) -> np.ndarray:
        return np.asarray(fn(problem.logits, problem.target, **problem.kwargs()))

    def loss(self, problem: Problem) -> np.ndarray:
        return self._call(self._loss, problem)

    def grad(self, problem: Problem) -> np.ndarray:
        if self._grad is None:
            raise NotImplementedError(f"{self.name} provides no gradient")
        return self._call(self._grad, problem)

    @property
    def fused(self) -> bool:
        return self._fused is not None and self.has_grad

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        if self._fused is None:
            return super().loss_and_grad(problem)
        pair = self._fused(problem.logits, problem.target, **problem.kwargs())
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"{self.name}.loss_and_grad must return a (loss, grad) pair, got {type(pair).__name__}")
        return np.asarray(pair[0]), np.asarray(pair[1])


class Declared(Implementation):
    """What the main process holds of an isolated plugin: the declarations its child reported
    (:func:`harness.runner.describe`). It cannot compute; its calls go through
    :class:`harness.runner.Runner`, whose child also applies the plugin's own ``supports()``."""

    def __init__(self, described: dict):
        self.name = described["name"]
        self.description = described["description"]
        self.origin = described["origin"]
        self.dtypes = frozenset(described["dtypes"])
        self.devices = tuple(described["devices"]) or ("cpu",)
        self.features = frozenset(described["features"])
        self.canary = bool(described["canary"])
        self.opt_in = bool(described.get("opt_in", False))
        self.contract = str(described.get("contract", "pytorch"))
        self._grad = bool(described["grad"])
        self._fused = bool(described["fused"])
        self._available = described["available"]

    @property
    def has_grad(self) -> bool:
        return self._grad

    @property
    def fused(self) -> bool:
        return self._fused

    def available(self) -> str | None:
        return self._available

    def _isolated(self, *_args, **_kwargs):
        raise ImplementationError(f"{self.name} runs isolated: call it through harness.runner.Runner")

    loss = grad = loss_and_grad = prepare = _isolated


#: Built-in implementations: registry name -> "module:attr" (imported only when needed).
BUILTINS: dict[str, str] = {
    "numpy": "harness.implementations.numpy_stable:NumpyStable",
    "numpy-naive": "harness.implementations.numpy_naive:NumpyNaive",
    "torch": "harness.implementations.torch_impl:TorchCPU",
    "torch-cuda": "harness.implementations.torch_impl:TorchCUDA",
    "torch-compile": "harness.implementations.torch_compile:TorchCompile",
    "torch-compile-cuda": "harness.implementations.torch_compile:TorchCompileCUDA",
    "jax": "harness.implementations.jax_impl:JaxCPU",
    "jax-gpu": "harness.implementations.jax_impl:JaxGPU",
    "cupy": "harness.implementations.cupy:CupyKernel",
}


@dataclass
class Entry:
    """One registry row: an implementation, or the error that prevented loading it."""

    name: str
    origin: str
    impl: Implementation | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def unavailable(self) -> str | None:
        if self.impl is None:
            return self.error or "could not load"
        try:
            return self.impl.available()
        except Exception as exc:  # a plugin's available() must not crash the listing
            return f"available() raised {type(exc).__name__}: {exc}"


def _import_attr(module: str, attr: str):
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load_file(path: Path):
    key = f"xent_harness_plugin_{abs(hash(str(path.resolve())))}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ImplementationError(f"--impl: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def as_implementation(obj, name: str, origin: str) -> Implementation:
    """Turn what a plugin exports into an Implementation (see FunctionImplementation)."""
    if inspect.isclass(obj):
        obj = obj()
    if isinstance(obj, Implementation):
        if not obj.name:
            obj.name = name
        obj.origin = origin
        return obj
    if callable(obj) or callable(getattr(obj, "loss", None)):
        return FunctionImplementation(obj, name, origin)
    raise ImplementationError(
        f"{origin}: {type(obj).__name__} is not an implementation (needs a loss() method or to be callable)"
    )


def load_spec(spec: str) -> Implementation:
    """Load ``MODULE:ATTR`` or ``path/to/file.py:ATTR`` in this process (an isolated child
    does this; the main process uses :func:`discover`); raises ImplementationError."""
    check_spec(spec)
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            obj = _load_file(Path(target))
            for part in attr.split("."):
                obj = getattr(obj, part)
        else:
            obj = _import_attr(target, attr)
    except Exception as exc:
        raise ImplementationError(f"--impl {spec}: {type(exc).__name__}: {exc}") from None
    return as_implementation(obj, attr.split(".")[-1], spec)


def builtin(name: str) -> Entry:
    """A built-in, imported here (they import their heavy library only when called)."""
    module, attr = BUILTINS[name].split(":")
    try:
        impl = as_implementation(_import_attr(module, attr), name, "builtin")
        impl.name = name
        return Entry(name, "builtin", impl)
    except Exception as exc:
        return Entry(name, "builtin", error=f"could not load: {type(exc).__name__}: {exc}")


def _entry_point_list() -> list:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_entry_point(name: str) -> Entry:
    """The entry point ``name`` loaded in this process (what an isolated child does)."""
    for ep in _entry_point_list():
        if ep.name == name:
            origin = f"entry point {ep.name} ({ep.value})"
            try:
                impl = as_implementation(ep.load(), ep.name, origin)
                return Entry(impl.name, origin, impl, extra={"entry_point": ep.name})
            except Exception as exc:
                return Entry(ep.name, origin, error=f"could not load: {type(exc).__name__}: {exc}")
    return Entry(name, "entry point", error=f"could not load: no entry point {name!r} in {ENTRY_POINT_GROUP}")


def check_spec(spec: str) -> None:
    """A spec's syntax, and that its file or top-level module exists, checked without importing
    it (a typo is a usage error; what importing it does is the plugin's result)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ImplementationError(
            f"--impl: {spec!r} is neither a registered name nor MODULE:ATTR or FILE.py:ATTR"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        if not Path(target).is_file():
            raise ImplementationError(f"--impl: file {target!r} does not exist")
    elif importlib.util.find_spec(target.split(".")[0]) is None:
        raise ImplementationError(f"--impl: no module named {target.split('.')[0]!r} (for {spec})")


def discover(specs: Iterable[str] = (), *, isolate: bool = True, timeout: float = 60.0) -> list[Entry]:
    """Every known implementation: built-ins, entry points, then ``--impl`` specs.

    Plugins (entry points and specs) are loaded and introspected in an isolated child
    (:func:`harness.runner.probe`) unless ``isolate`` is False: whatever their import does
    (exit, crash, hang past ``timeout``, raise) becomes that entry's one-line "could not load"
    error, and the main process holds only their declarations (:class:`Declared`).
    A spec that is a registered name is a no-op here (it selects, see :func:`select`); a
    malformed spec, a missing file or module, a spec given twice or a name that is taken raise
    ImplementationError (usage errors).
    """
    from harness import runner

    def load(entry: Entry, in_process) -> Entry:
        return runner.probe(entry, timeout) if isolate else in_process()

    entries = [builtin(name) for name in BUILTINS]
    points = _entry_point_list()
    if points:  # probed at once, each in its own child: `list` waits for the slowest, not the sum
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(8, len(points))) as pool:
            entries += list(pool.map(lambda ep: load(Entry(ep.name, f"entry point {ep.name} ({ep.value})",
                                                           extra={"entry_point": ep.name}),
                                                     lambda: load_entry_point(ep.name)), points))
    known = {e.name: e.origin for e in entries}
    specs = list(specs)
    for spec in specs:
        if specs.count(spec) > 1:
            raise ImplementationError(f"--impl {spec}: given {specs.count(spec)} times; name it once")
        if spec in known:
            continue
        check_spec(spec)
        entry = load(Entry(spec, spec, extra={"spec": spec}),
                     lambda spec=spec: Entry(spec, spec, load_spec(spec), extra={"spec": spec}))
        if entry.impl is not None:
            entry.name = entry.impl.name
        if entry.name in known:  # its cells would be recorded as the other one's
            owner = known[entry.name]
            owner = "a built-in" if owner == "builtin" else owner
            raise ImplementationError(f"--impl {spec}: the name {entry.name!r} is taken (by {owner}); "
                                      f"give the plugin another `name` attribute")
        entries.append(entry)
        known[entry.name] = spec
    return entries


def select(specs: Iterable[str] = (), *, include_canaries: bool = True, isolate: bool = True,
           timeout: float = 60.0) -> tuple[list[Entry], list[Entry]]:
    """The implementations to run: (explicitly requested or all, skipped-with-reason).

    With no specs every available implementation is used and unavailable ones are returned as
    skipped. Naming one that is unavailable or unknown raises ImplementationError; one named
    that could not be loaded is chosen all the same, without an implementation: its result is
    that failure (a failing verdict), and the others run.
    """
    specs = list(specs)
    entries = discover(specs, isolate=isolate, timeout=timeout)
    by_name = {e.name: e for e in entries}
    if specs:
        chosen = []
        for spec in specs:
            entry = by_name.get(spec) or next((e for e in entries if e.extra.get("spec") == spec), None)
            if entry is None:
                raise ImplementationError(
                    f"--impl: unknown implementation {spec!r}; known: {', '.join(by_name)}"
                )
            reason = entry.unavailable()
            if reason and entry.impl is not None:
                raise ImplementationError(f"--impl {spec}: unavailable: {reason}")
            chosen.append(entry)
        return chosen, []
    run, skipped = [], []
    for e in entries:
        if e.unavailable() or left_out(e, include_canaries=include_canaries):
            skipped.append(e)
        else:
            run.append(e)
    return run, skipped


def left_out(entry: Entry, *, include_canaries: bool = True) -> str | None:
    """Why a run that names no implementation leaves an available one out, or None."""
    from harness import vocabulary

    if entry.impl is None:
        return None
    if entry.impl.opt_in:
        return vocabulary.OPT_IN_LEFT_OUT
    if entry.impl.canary and not include_canaries:
        return vocabulary.CANARY_LEFT_OUT
    return None


def get(name_or_spec: str) -> Implementation:
    """One implementation by registry name or spec; ImplementationError if unusable."""
    chosen, _ = select([name_or_spec], isolate=False)
    if chosen[0].impl is None:
        raise ImplementationError(chosen[0].error or f"{name_or_spec}: could not load")
    return chosen[0].impl
