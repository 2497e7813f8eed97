"""A reproducer for a failing cell: what a user pastes into a bug report upstream.

``xent-harness repro RESULTS CELL`` (CELL is the id the report shows, ``IMPL/DTYPE/KIND/SCENARIO``)
rebuilds the cell's problem from its scenario (the name and seed recorded in results.json; the
problem's digest is verified when the cell's diagnosis recorded it), calls the implementation
once more (through :mod:`harness.registry` and :class:`harness.runner.Runner`, isolated for
plugins, as the sweeps called it), diagnoses the output (:mod:`harness.diagnosis`) and writes
two files into ``DIR`` (default: ``repro/`` next to the results):

* ``<cell-slug>.npz``: the exact inputs (``logits``, ``target``, ``weight`` when there is one;
  bfloat16 arrays stored as float32, which holds them exactly, with ``dtype`` = "bfloat16"),
  the options (``ignore_index``, ``reduction``, ``label_smoothing``), the judged ``quantity``
  ("loss" or "grad"), the reference (``reference_hi`` + ``reference_lo``: the exact value as a
  double-double, 106 bits; ``reference``: correctly rounded to the dtype), the implementation's
  ``output``, the per-element ``tolerance`` the budgets allow (``max(ulp budget · ulp,
  scaled budget · u · scale)``), the format's ``precision`` and ``emin``, and what identifies
  the cell (``cell``, ``scenario``, ``seed``, ``digest``, ``impl``);
* ``<cell-slug>.py``: a standalone script -- NumPy to load the .npz and the implementation's
  own library call (``torch.nn.functional.cross_entropy`` for torch, optax for jax, the
  plugin's file or module for a plugin: replace that block with your library's call; for
  xent-harness's own implementations the library is xent-harness) -- that computes the
  value, prints it next to the true value and the error in ULPs, and exits 1 while any value is
  outside the budget (0 once fixed).

The campaign writes the same files for the failing cells it diagnoses (``run``'s ``repro/``),
and the report links them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import vocabulary
from harness.problem import Problem

#: Reproducers are written for problems below this many logits (the .npz holds every input).
MAX_LOGITS = 1 << 22


class ReproError(ValueError):
    """A cell that cannot be reproduced (unknown, passing, changed scenario, ...): one line."""


@dataclass
class Written:
    npz: Path
    script: Path


@dataclass
class Outcome:
    """What ``repro`` did: the files, whether the failure reproduced, the diagnosis and the lines
    it printed."""

    written: Written
    reproduced: bool
    diagnosis: dict | None
    lines: list[str] = field(default_factory=list)


def _slug(s: str) -> str:
    """A file-name fragment: the name itself when it is tame, else a cleaned name and a short
    hash (the report's anchors use the same rule)."""
    s = str(s)
    t = re.sub(r"[^a-z0-9.+-]+", "-", s.lower()).strip("-")[:40] or "x"
    return t if t == s else f"{t}-{hashlib.sha1(s.encode()).hexdigest()[:6]}"


def slug(cell: dict) -> str:
    """``<impl>_<dtype>_<kind>_<scenario>``, safe as a file name."""
    return f"{_slug(cell['impl'])}_{cell['dtype']}_{cell['kind']}_{_slug(cell['scenario'])}"


def parse_cell(text: str) -> tuple[str, str, str, str]:
    """``IMPL/DTYPE/KIND/SCENARIO`` (an implementation's name may hold slashes)."""
    parts = str(text).rsplit("/", 3)
    if len(parts) != 4 or not all(parts):
        raise ReproError(f"repro: CELL must be IMPL/DTYPE/KIND/SCENARIO as the report shows it, got {text!r}")
    impl, dtype, kind, scenario = parts
    if dtype not in vocabulary.DTYPES:
        raise ReproError(f"repro: {text!r}: unknown dtype {dtype!r}; use {', '.join(vocabulary.DTYPES)}")
    if kind not in vocabulary.KINDS:
        raise ReproError(f"repro: {text!r}: unknown kind {kind!r}; use {', '.join(vocabulary.KINDS)}")
    return impl, dtype, kind, scenario


def quantity_of(cell: dict) -> str:
    """The quantity a cell judged: loss, grad, or for a special-value cell the quantity of its
    first mismatch."""
    if cell["kind"] != "special":
        return vocabulary.quantity(cell["kind"])
    examples = (cell.get("metrics") or {}).get("examples") or [{}]
    return "grad" if examples[0].get("quantity") == "grad" else "loss"


# -- the cell and its problem --------------------------------------------------------------------------


def find(data: dict, cell_id: str) -> dict:
    impl, dtype, kind, scenario = parse_cell(cell_id)
    for c in data.get("cells") or []:
        if (c.get("impl"), c.get("dtype"), c.get("kind"), c.get("scenario")) == (impl, dtype, kind, scenario):
            return c
    failing = [vocabulary.cell_id(c) for c in data.get("cells") or [] if c.get("status") == "fail"]
    hint = (f"; failing cells: {', '.join(failing[:4])}{', …' if len(failing) > 4 else ''}" if failing
            else "; it has no failing cell")
    raise ReproError(f"repro: no cell {cell_id} in these results{hint}")


def rebuild(data: dict, cell: dict) -> Problem:
    """The cell's problem, from the scenario's name and seed recorded in the results; checks
    that the catalogue still has that scenario with that seed and shape, and the digest when
    the cell's diagnosis recorded one."""
    from harness import scenarios

    name, dtype = cell["scenario"], cell["dtype"]
    row = next((s for s in data.get("scenarios") or [] if s.get("name") == name), None)
    try:
        s = scenarios.get(name)
    except KeyError:
        raise ReproError(f"repro: scenario {name!r} is not in this harness's catalogue any more; "
                         "use the harness version of the run") from None
    if row is not None:
        if row.get("seed") is not None and int(row["seed"]) != s.seed:
            raise ReproError(f"repro: scenario {name!r} had seed {row['seed']} in the run and has {s.seed} now; "
                             "use the harness version of the run")
        if row.get("shape") and list(row["shape"]) != list(s.shape):
            raise ReproError(f"repro: scenario {name!r} had shape {row['shape']} in the run and has "
                             f"{list(s.shape)} now; use the harness version of the run")
    if s.size >= MAX_LOGITS:
        raise ReproError(f"repro: {name} has {s.size:,} logits; reproducers are written for problems "
                         f"below {MAX_LOGITS:,} logits")
    try:
        problem = s.problem(dtype)
    except ValueError as exc:
        raise ReproError(f"repro: {exc}") from None
    digest = (cell.get("diagnosis") or {}).get("digest")
    if digest and digest != problem.digest:
        raise ReproError(f"repro: the problem rebuilt from {name} (seed {s.seed}) has digest {problem.digest[:12]}…, "
                         f"the run recorded {digest[:12]}…: its generators changed; use the harness version of the run")
    return problem


def _spec(row: dict) -> str:
    """What registry.select needs to find the implementation of an implementations row again."""
    origin = str(row.get("origin") or "builtin")
    if origin == "builtin" or origin.startswith("entry point"):
        return str(row["name"])
    return origin  # the --impl spec


def entry_of(data: dict, cell: dict, timeout: float):
    from harness import registry

    row = next((r for r in data.get("implementations") or [] if r.get("name") == cell["impl"]),
               {"name": cell["impl"], "origin": "builtin"})
    spec = _spec(row)
    if str(row.get("origin") or "builtin") == "builtin" and spec in registry.BUILTINS:
        entry = registry.builtin(spec)  # no plugin discovery needed
        if entry.impl is None or entry.unavailable():
            raise ReproError(f"repro: {spec}: {entry.error or entry.unavailable()}")
        return entry, row
    target = spec.rpartition(":")[0]
    if (target.endswith(".py") or "/" in target) and not Path(target).is_file():
        raise ReproError(f"repro: {cell['impl']} is the plugin {spec}, and {target} is not a file from here; "
                         "run repro in the directory the run was started from")
    try:
        chosen, _ = registry.select([spec], isolate=True, timeout=timeout)
    except registry.ImplementationError as exc:
        raise ReproError(f"repro: {exc}") from None
    entry = chosen[0]
    if entry.impl is None:
        raise ReproError(f"repro: {cell['impl']}: {entry.error}")
    return entry, row


# -- the command --------------------------------------------------------------------------------------


def reproduce(results, cell_id: str, out: Path | str | None = None, *, timeout: float = 60.0,
              cache=None, workers: int | None = None) -> Outcome:
    """``xent-harness repro``: see the module docstring. ``results`` is a results file or run
    directory (or the loaded dict, then ``out`` is required)."""
    import math

    from harness import diagnosis
    from harness import results as results_mod
    from harness.budgets import defaults
    from harness.cache import ReferenceCache
    from harness.runner import CallFailed, Unsupported, one_line

    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ReproError(f"repro: --timeout must be a positive number of seconds, not {timeout!r}")
    if isinstance(results, dict):
        data, base = results, None
    else:
        path = Path(results)
        data = results_mod.load(path)
        base = path if path.is_dir() else path.parent
    cell = find(data, cell_id)
    cid = vocabulary.cell_id(cell)
    if cell.get("status") not in ("fail", "convention"):  # a convention difference (harness.contracts) too
        raise ReproError(f"repro: {cid} is {cell.get('status')}; reproducers are for failing cells")
    problem = rebuild(data, cell)
    entry, row = entry_of(data, cell, timeout)
    quantity = quantity_of(cell)
    ops = ["loss", "grad"] if entry.impl.has_grad else ["loss"]
    if quantity not in ops:
        raise ReproError(f"repro: {cell['impl']} provides no gradient")
    try:
        ys = diagnosis.outputs(entry, problem, ops, timeout=timeout)
    except (CallFailed, Unsupported, ValueError) as exc:
        raise ReproError(f"repro: calling {cell['impl']} failed: {one_line(exc)}") from None
    cache = cache or ReferenceCache()
    exact = cache.get_many([problem], workers=workers)[0]
    budgets = data.get("budgets") or defaults()
    if cell["kind"] == "special":
        d = None
    else:
        d = diagnosis.diagnose(problem, quantity, ys[quantity], exact, budgets, cache=cache, workers=workers)
        d |= {"output": "recomputed", "digest": problem.digest}
    directory = Path(out) if out is not None else (base / "repro")
    try:
        written = write(directory, cell, problem, exact, ys[quantity], quantity, budgets, d, impl_row=row,
                        run=data.get("run"))
    except OSError as exc:
        raise ReproError(f"repro: cannot write to {directory} ({exc.strerror or exc}); pass a writable --out DIR") from None
    z = np.load(written.npz)
    bad = _outside(z)
    reproduced = bool(bad.any())
    lines = [f"repro: {cid}", f"  inputs and reference: {written.npz}", f"  script: {written.script}"]
    lines += ["  " + s for s in _value_lines(z, bad)]
    if d is not None:
        lines.append(f"  diagnosis: {d['text']}")
    lines.append(f"  run it: python {written.script}" + ("" if reproduced else
                 "  (the recomputed output is within the budget: not reproduced)"))
    return Outcome(written, reproduced, d, lines)


# -- the files ------------------------------------------------------------------------------------------


def _stored(a: np.ndarray) -> np.ndarray:
    """An array as the .npz stores it: bfloat16 as float32 (exact), the rest as it is."""
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.name == "bfloat16" else np.ascontiguousarray(a)


def tolerance(problem: Problem, quantity: str, hi, lo, budgets: dict) -> np.ndarray:
    """The largest |y − v| each element may have and pass: max(ulp budget · ulp(RN(v)),
    scaled budget · 2^-p · scale) (harness/budgets.toml); 0 where RN(v) is not finite."""
    from harness import metrics
    from harness.budgets import scales

    fmt = problem.format
    b = vocabulary.budget_of(budgets, fmt.name, quantity)
    shape = np.shape(hi)
    rf = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), fmt).reshape(shape).astype(np.float64)
    fin = np.isfinite(rf)
    u = np.where(fin, metrics.ulp(np.where(fin, rf, 1.0), fmt), 0.0).reshape(shape)
    unit = 2.0 ** -fmt.precision * np.asarray(scales(problem, quantity), np.float64).reshape(shape)
    with np.errstate(over="ignore"):  # an allowance past the float64 maximum is +inf: anything fits
        return np.where(fin, np.maximum(b["ulp"] * u, b["scaled"] * unit), 0.0)


def write(directory: Path | str, cell: dict, problem: Problem, exact, y, quantity: str, budgets: dict,
          diagnosis: dict | None = None, *, impl_row: dict, run: dict | None = None) -> Written:
    """Write ``<slug>.npz`` and ``<slug>.py`` for ``cell`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = slug(cell)
    npz, script = directory / f"{name}.npz", directory / f"{name}.py"
    hi, lo = exact.pair(quantity)
    fmt = problem.format
    b = vocabulary.budget_of(budgets, fmt.name, quantity)
    arrays = {
        "logits": _stored(problem.logits), "target": _stored(problem.target),
        "ignore_index": np.int64(problem.ignore_index), "reduction": np.str_(problem.reduction),
        "label_smoothing": np.float64(problem.label_smoothing), "dtype": np.str_(fmt.name),
        "quantity": np.str_(quantity),
        "reference_hi": np.asarray(hi, np.float64), "reference_lo": np.asarray(lo, np.float64),
        "reference": exact.rounded(quantity, problem.dtype).astype(np.float64),
        "output": np.asarray(y).astype(np.float64),
        "tolerance": tolerance(problem, quantity, hi, lo, budgets),
        "budget_ulp": np.float64(b["ulp"]), "budget_scaled": np.float64(b["scaled"]),
        "precision": np.int64(fmt.precision), "emin": np.int64(fmt.emin),
        "cell": np.str_(vocabulary.cell_id(cell)), "scenario": np.str_(cell["scenario"]),
        "digest": np.str_(problem.digest), "impl": np.str_(cell["impl"]),
    }
    if problem.weight is not None:
        arrays["weight"] = _stored(problem.weight)
    from harness import scenarios

    try:
        arrays["seed"] = np.int64(scenarios.get(cell["scenario"]).seed)
    except KeyError:
        pass
    tmp = npz.with_name(f".{npz.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(npz)
    text = script_text(cell, problem, quantity, npz.name, impl_row, diagnosis, run)
    tmp = script.with_name(f".{script.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(script)
    return Written(npz, script)


# -- what the script prints (the same code runs here, for the command's own lines) -----------------------

_CHECK = '''
def ulp(v):
    """ulp of v in the format, Zimmermann's definition: 2^(max(e, emin) - p + 1)."""
    e = np.frexp(np.where(np.isfinite(v) & (v != 0), v, 1.0))[1] - 1
    return np.ldexp(1.0, np.maximum(e, EMIN) - P + 1)


def outside(y):
    """Elements outside the budget: |y - v| > tolerance where the true value is finite, another
    inf/NaN where it is not."""
    with np.errstate(all="ignore"):
        finite = np.isfinite(true)
        err = np.abs((y - hi) - lo)
        same = (np.isnan(y) & np.isnan(true)) | (y == true)
        return np.where(finite, ~(err <= tolerance), ~same)


def ulps(y):
    with np.errstate(all="ignore"):
        err = np.abs((y - hi) - lo) / ulp(true)
        err = np.where(np.isfinite(y), err, np.inf)
        same = (np.isnan(y) & np.isnan(true)) | (y == true)
        return np.where(np.isfinite(true), err, np.where(same, 0.0, np.inf))


def report(y, bad):
    """Lines: the worst element's value, the true value and the error in ULPs; then a verdict."""
    u = ulps(y)
    with np.errstate(all="ignore"):  # the worst: the furthest outside the budget, as the harness picks it
        ratio = np.where(np.isfinite(true), np.abs((y - hi) - lo) / tolerance, np.where(bad, np.inf, 0.0))
    k = int(np.argmax(np.nan_to_num(ratio, nan=np.inf)))
    at = "" if y.ndim == 0 else f" at index {tuple(int(i) for i in np.unravel_index(k, y.shape))}"
    where = "" if y.size == 1 else f" (worst of {y.size} values{at})"
    exact = f"{float(hi.flat[k])!r}" + (f" {float(lo.flat[k]):+.3e}" if lo.flat[k] else "")
    lines = [
        f"returned:   {float(y.flat[k])!r}{where}",
        f"true value: {float(true.flat[k])!r}  (correctly rounded to {DTYPE}; exact {exact})",
        f"error:      {float(u.flat[k]):.4g} ULP  (budget {BUDGET_ULP:g} ULP, or {BUDGET_SCALED:g} units of u*scale)",
    ]
    n = int(np.count_nonzero(bad))
    lines.append(f"REPRODUCED: {n} of {bad.size} values outside the budget" if n else
                 "not reproduced: every value is within the budget")
    return lines
'''


def _namespace(z) -> dict:
    ns = {"np": np, "true": z["reference"], "hi": z["reference_hi"], "lo": z["reference_lo"],
          "tolerance": z["tolerance"], "P": int(z["precision"]), "EMIN": int(z["emin"]),
          "DTYPE": str(z["dtype"]), "BUDGET_ULP": float(z["budget_ulp"]),
          "BUDGET_SCALED": float(z["budget_scaled"])}
    exec(compile(_CHECK, "<repro check>", "exec"), ns)  # the script's own code, run here too
    return ns


def _outside(z) -> np.ndarray:
    return _namespace(z)["outside"](z["output"])


def _value_lines(z, bad) -> list[str]:
    return _namespace(z)["report"](z["output"], bad)


# -- the script ---------------------------------------------------------------------------------------------

_AS_DTYPE = '''
def as_dtype(a):
    """A stored array in the logits' dtype (bfloat16 is ml_dtypes', as NumPy code uses it)."""
    if DTYPE == "bfloat16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    return a.astype(DTYPE)


def as_float64(a):
    return np.asarray(a).astype(np.float64)
'''

_TORCH = '''
def implementation():
    """torch.nn.functional.cross_entropy, the gradient by autograd, as xent-harness calls it."""
    import torch
    import torch.nn.functional as F

    device = DEVICE
    dt = getattr(torch, DTYPE)
    x = torch.from_numpy(logits).to(device=device, dtype=dt)  # exact: the values are DTYPE numbers
    x.requires_grad_(True)
    t = torch.from_numpy(target)
    t = t.to(device) if t.dtype == torch.int64 else t.to(device=device, dtype=dt)
    w = None if weight is None else torch.from_numpy(weight).to(device=device, dtype=dt)
    out = F.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction=reduction,
                          label_smoothing=label_smoothing)
    if QUANTITY == "grad":  # d(sum of the outputs)/d logits
        (out,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
    what = f"torch.nn.functional.cross_entropy (torch {torch.__version__}, {device})"
    return out.detach().to("cpu").double().numpy(), what
'''

_JAX = '''
def implementation():
    """optax's softmax cross-entropy with PyTorch's options around it, jitted, the gradient by
    jax.value_and_grad: what xent-harness's jax adapter computes (16-bit inputs in float32)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    device = jax.devices(PLATFORM)[0]
    axis = 0 if logits.ndim == 1 else 1
    C = logits.shape[axis]
    bshape = tuple(C if i == axis else 1 for i in range(logits.ndim))
    cdt = jnp.float64 if DTYPE == "float64" else jnp.float32
    probability = target.dtype.kind == "f"

    def losses(x, t, w):
        if probability:
            if label_smoothing > 0:
                t = (1.0 - label_smoothing) * t + label_smoothing / C
            if w is not None:
                t = t * w.reshape(bshape)
            per = optax.softmax_cross_entropy(x, t, axis=axis)
            if reduction == "none":
                return per
            total = jnp.sum(per)
            return total / (per.size if C else 0) if reduction == "mean" else total
        ignored = t == ignore_index
        y = jnp.where(ignored, 0, t)
        nll = optax.softmax_cross_entropy_with_integer_labels(x, y, axis=axis)
        if w is not None:
            wy = jnp.where(ignored, 0, jnp.take(w, y)) if C else jnp.zeros(y.shape, cdt)
            nll = wy * nll
        else:
            wy = jnp.where(ignored, 0, 1).astype(cdt)
        nll = jnp.where(ignored, 0, nll)

        def reduce(v):
            if reduction == "none":
                return v
            return jnp.sum(v) / jnp.sum(wy) if reduction == "mean" else jnp.sum(v)

        if not label_smoothing > 0:
            return reduce(nll)
        labels = w.reshape(bshape) if w is not None else jnp.ones(bshape, cdt)
        smooth = jnp.where(ignored, 0, optax.softmax_cross_entropy(x, labels, axis=axis))
        return (1.0 - label_smoothing) * reduce(nll) + reduce(smooth) * (label_smoothing / C)

    def objective(x, t, w):
        loss = losses(x, t, w)
        return jnp.sum(loss), loss.astype(x.dtype)

    put = lambda a: jax.device_put(a, device)
    x = put(logits.astype(cdt))  # exact
    t = put(target if not probability else target.astype(cdt))
    w = None if weight is None else put(weight.astype(cdt))
    (_, loss), g = jax.jit(jax.value_and_grad(objective, has_aux=True))(x, t, w)
    out = np.asarray(loss if QUANTITY == "loss" else g)
    out = np.asarray(jnp.asarray(out).astype(jnp.dtype(DTYPE)))  # rounded once to the input dtype
    return out.astype(np.float64), f"optax {optax.__version__} (jax {jax.__version__}, {device.platform})"
'''

_HARNESS = '''
def implementation():
    """NAME is xent-harness's own implementation (harness/implementations/): the library here
    is xent-harness itself."""
    from harness.problem import Problem
    from harness.registry import builtin

    impl = builtin(NAME).impl
    t = target if target.dtype.kind == "i" else as_dtype(target)
    problem = Problem(as_dtype(logits), t, weight=None if weight is None else as_dtype(weight),
                      ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    loss, grad = impl.loss_and_grad(problem) if impl.has_grad else (impl.loss(problem), None)
    return as_float64(loss if QUANTITY == "loss" else grad), f"xent-harness {NAME}"
'''

_PLUGIN = '''
def call(obj):
    """Call a plugin the way xent-harness does (harness.registry.FunctionImplementation): a class
    is instantiated; an object's loss/grad (or loss_and_grad) take NumPy arrays and PyTorch's
    keyword arguments; a bare callable is the loss. Replace this with your library's call."""
    if isinstance(obj, type):
        obj = obj()
    t = target if target.dtype.kind == "i" else as_dtype(target)
    args = (as_dtype(logits), t)
    kwargs = dict(weight=None if weight is None else as_dtype(weight), ignore_index=ignore_index,
                  reduction=reduction, label_smoothing=label_smoothing)
    if any(c.__name__ == "Implementation" and c.__module__ == "harness.registry" for c in type(obj).__mro__):
        from harness.problem import Problem  # a harness.registry.Implementation takes a harness Problem

        problem = Problem(*args, **kwargs)
        loss, grad = obj.loss_and_grad(problem) if obj.has_grad else (obj.loss(problem), None)
        return as_float64(loss if QUANTITY == "loss" else grad)
    if not hasattr(obj, "loss"):
        return as_float64(obj(*args, **kwargs))  # a bare loss function
    if QUANTITY == "loss":
        if hasattr(obj, "loss_and_grad") and hasattr(obj, "grad"):  # the fused pass, as the sweeps call it
            return as_float64(obj.loss_and_grad(*args, **kwargs)[0])
        return as_float64(obj.loss(*args, **kwargs))
    if hasattr(obj, "loss_and_grad"):
        return as_float64(obj.loss_and_grad(*args, **kwargs)[1])
    return as_float64(obj.grad(*args, **kwargs))
'''


def _plugin_block(row: dict) -> tuple[str, str]:
    """The implementation() of a plugin, and what it needs."""
    origin = str(row.get("origin") or "")
    name = str(row.get("name"))
    if origin.startswith("entry point"):
        value = origin.split("(", 1)[-1].rstrip(")") if "(" in origin else ""
        body = (f'    from importlib.metadata import entry_points\n\n'
                f'    (ep,) = [e for e in entry_points(group="xent_harness.implementations") if e.name == {name!r}]\n'
                f'    return call(ep.load()), "the plugin entry point {name} ({value})"\n')
        return f'\ndef implementation():\n    """The plugin entry point {name!r} ({value})."""\n' + body, name
    target, _, attr = origin.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = str(Path(target).resolve())
        body = (f'    import importlib.util\n\n'
                f'    spec = importlib.util.spec_from_file_location("plugin_under_test", {path!r})\n'
                f'    module = importlib.util.module_from_spec(spec)\n'
                f'    spec.loader.exec_module(module)\n'
                f'    obj = module\n'
                f'    for part in {attr!r}.split("."):\n'
                f'        obj = getattr(obj, part)\n'
                f'    return call(obj), "the plugin {origin}"\n')
    else:
        cwd = str(Path.cwd())
        body = (f'    import importlib\n\n'
                f'    sys.path.insert(0, {cwd!r})  # where `xent-harness repro` ran (a module found from there)\n'
                f'    obj = importlib.import_module({target!r})\n'
                f'    for part in {attr!r}.split("."):\n'
                f'        obj = getattr(obj, part)\n'
                f'    return call(obj), "the plugin {origin}"\n')
    return f'\ndef implementation():\n    """The plugin {origin}: replace this with your library\'s call."""\n' + body, "your library"


def _block(row: dict) -> tuple[str, list[str], str]:
    """(constants, the code defining implementation(), the library in words) of an
    implementations row."""
    name = str(row.get("name"))
    origin = str(row.get("origin") or "builtin")
    if origin == "builtin" and name in ("torch", "torch-cuda"):
        return f'DEVICE = {"cuda" if name == "torch-cuda" else "cpu"!r}\n', [_TORCH], "torch"
    if origin == "builtin" and name in ("jax", "jax-gpu"):
        return f'PLATFORM = {"gpu" if name == "jax-gpu" else "cpu"!r}\n', [_JAX], "jax and optax"
    if origin == "builtin":
        return f"NAME = {name!r}\n", [_AS_DTYPE, _HARNESS], "xent-harness (its own implementation)"
    code, library = _plugin_block(row)
    return "", [_AS_DTYPE, _PLUGIN, code], library


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def script_text(cell: dict, problem: Problem, quantity: str, npz_name: str, impl_row: dict,
                diagnosis: dict | None = None, run: dict | None = None) -> str:
    """The standalone script of a reproducer."""
    import textwrap

    cid = vocabulary.cell_id(cell)
    consts, code, library = _block(impl_row)
    noun = "loss" if quantity == "loss" else "gradient"
    shape = "x".join(str(n) for n in problem.logits.shape)
    opts = [f"reduction={problem.reduction!r}"]
    if problem.weight is not None:
        opts.append("class weights")
    if problem.ignore_index != -100 or (not problem.probability_target and (problem.target == -100).any()):
        opts.append(f"ignore_index={problem.ignore_index}")
    if problem.label_smoothing:
        opts.append(f"label_smoothing={problem.label_smoothing:g}")
    if problem.probability_target:
        opts.append("probability targets")
    setting = f"{problem.format.name} logits {shape}, {', '.join(opts)}"
    wrong = ("has other inf/NaN values than the contract" if cell.get("kind") == "special"
             else "is outside its accuracy budget")
    paragraphs = [f"Reproduces xent-harness cell {cid}: the {noun} of cross_entropy on {setting} {wrong}."]
    if cell.get("message"):
        paragraphs.append(f"The harness reported: {cell['message']}")
    if diagnosis and diagnosis.get("text"):
        paragraphs.append(f"xent-harness's diagnosis: {diagnosis['text']}.")
    rid = (run or {}).get("id")
    paragraphs.append(f"Standalone: it needs NumPy and {library}, not xent-harness. {npz_name}, next to this "
                      "file, holds the exact inputs and options and the true value: the reference computed "
                      "in MPFR by xent-harness" + (f" (run {rid})" if rid else "") + ", correctly rounded "
                      "to the dtype. Exit status: 1 while a value is outside the budget, 0 once it is fixed.")
    header = "#!/usr/bin/env python3\n" + "#\n".join(
        textwrap.fill(_comment(par), 96, initial_indent="# ", subsequent_indent="# ") + "\n"
        for par in paragraphs)
    return (header + "\nimport pathlib\nimport sys\n\nimport numpy as np\n\n"
            f"d = np.load(pathlib.Path(__file__).resolve().parent / {npz_name!r})\n"
            'DTYPE = str(d["dtype"])  # the logits\' dtype; bfloat16 arrays are stored as float32 (exact)\n'
            'QUANTITY = str(d["quantity"])  # "loss" or "grad" (of the sum of the outputs)\n'
            'logits, target = d["logits"], d["target"]\n'
            'weight = d["weight"] if "weight" in d.files else None\n'
            'ignore_index, reduction = int(d["ignore_index"]), str(d["reduction"])\n'
            'label_smoothing = float(d["label_smoothing"])\n'
            'true = d["reference"]  # the true value, correctly rounded to DTYPE\n'
            'hi, lo = d["reference_hi"], d["reference_lo"]  # the exact value: hi + lo (106 bits)\n'
            'tolerance = d["tolerance"]  # what the budget allows each element\n'
            'P, EMIN = int(d["precision"]), int(d["emin"])\n'
            'BUDGET_ULP, BUDGET_SCALED = float(d["budget_ulp"]), float(d["budget_scaled"])\n'
            f"CELL, SETTING = {cid!r}, {setting!r}\n"
            + consts + "\n\n" + "\n\n\n".join(part.strip("\n") for part in (*code, _CHECK)) +
            "\n\n\nif __name__ == \"__main__\":\n"
            "    y, what = implementation()\n"
            "    y = np.asarray(y, dtype=np.float64).reshape(true.shape)\n"
            "    bad = outside(y)\n"
            "    print(f\"{CELL}: {what}, {SETTING}\")\n"
            "    for line in report(y, bad):\n"
            "        print(\"  \" + line)\n"
            "    sys.exit(1 if bad.any() else 0)\n")
