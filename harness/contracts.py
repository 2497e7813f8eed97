"""Contract profiles: the conventions in which libraries differ from PyTorch's contract, apart
from their bugs (docs/contracts.md).

A profile (``harness/contracts.toml``, data) is a list of *differences* against PyTorch's
contract (docs/semantics.md), each with its documented source and a *rule*: a small function
below (:data:`RULES`) that rewrites the values the difference changes. :func:`expected` is the
one place where a profile acts: ``(problem, exact reference, profile) → expected values``. The
finite values come from the exact reference as for PyTorch; a rule rewrites the inf/NaN
expectations and the convention-dependent finite values (a 'mean' over no weight: 0 instead of
NaN; a gradient that assumes normalised targets) -- exactly: the rewritten finite values are
exact fractions of the inputs, or the reference on the problem
(:func:`harness.diagnosis.targets_assumed_normalised`, MPFR), never a float computation.

:func:`judge` makes a cell's verdict. The run's contract (``--contract``, default ``pytorch``)
judges every cell as :mod:`harness.verdicts` always did (with PyTorch's contract the values
are the reference's, untouched). A cell that fails it is judged again by the implementation's
own profile (a plugin's ``contract = "optax"``) when that profile changes a value of the
problem; if the output agrees with it (every value within the cell's budgets, the same
inf/NaN), the cell's status is ``convention``: a convention difference, reported apart from
defects, which does not fail the run.

A rule applies only where it is proven (tests/test_contracts.py runs each library on the
rule's inputs): class-index targets with finite weights for the index-target rules, problems up
to :data:`harness.diagnosis.MPFR_LOGITS` logits for the normalisation rule; elsewhere the
profile is PyTorch's. Problems judged blockwise (the language-model sizes) are judged by
PyTorch's contract only.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib import resources

import numpy as np

from harness import verdicts, vocabulary
from harness.problem import Problem

RESOURCE = "contracts.toml"
DEFAULT = "pytorch"


class ContractError(ValueError):
    """An unknown profile name, or a malformed contracts.toml: one line."""


@dataclass(frozen=True)
class Difference:
    """One convention of a library that is not PyTorch's (an entry of contracts.toml)."""

    name: str
    rule: str
    params: Mapping
    text: str
    pytorch: str
    library: str
    source: str


@dataclass(frozen=True)
class Profile:
    name: str
    library: str
    verified: str
    differences: tuple[Difference, ...] = ()


_DIFF_KEYS = ("name", "rule", "text", "pytorch", "library", "source")


def parse(data: Mapping) -> dict[str, Profile]:
    """The profiles of a parsed contracts.toml; ContractError naming the entry and the field."""
    import inspect

    out: dict[str, Profile] = {}
    for i, p in enumerate(data.get("profile", [])):
        where = f"contracts.toml: profile #{i} ({p.get('name', '?')!r})"
        for key in ("name", "library", "verified"):
            if not isinstance(p.get(key), str) or not p[key].strip():
                raise ContractError(f"{where}: {key} is required (a non-empty string)")
        if p["name"] in out:
            raise ContractError(f"{where}: duplicate name")
        diffs = []
        for j, d in enumerate(p.get("difference", [])):
            at = f"{where}, difference #{j}"
            unknown = set(d) - set(_DIFF_KEYS) - {"params"}
            if unknown:
                raise ContractError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
            for key in _DIFF_KEYS:
                if not isinstance(d.get(key), str) or not d[key].strip():
                    raise ContractError(f"{at}: {key} is required (a non-empty string)")
            fn = RULES.get(d["rule"])
            if fn is None:
                raise ContractError(f"{at}: unknown rule {d['rule']!r}; use one of {', '.join(RULES)}")
            params = dict(d.get("params", {}))
            extra = set(params) - (set(inspect.signature(fn).parameters) - {"case"})
            if extra:
                raise ContractError(f"{at}: rule {d['rule']} takes no parameter(s) {', '.join(sorted(extra))}")
            diffs.append(Difference(d["name"], d["rule"], params, d["text"], d["pytorch"], d["library"], d["source"]))
        out[p["name"]] = Profile(p["name"], p["library"], p["verified"], tuple(diffs))
    if DEFAULT not in out or out[DEFAULT].differences:
        raise ContractError(f"contracts.toml: profile {DEFAULT!r} must exist and have no differences")
    return out


@cache
def profiles() -> dict[str, Profile]:
    """Every profile of harness/contracts.toml, by name."""
    text = resources.files("harness").joinpath(RESOURCE).read_text(encoding="utf-8")
    return parse(tomllib.loads(text))


def names() -> tuple[str, ...]:
    return tuple(profiles())


def get(name: str) -> Profile:
    """The profile called ``name``; ContractError (one line, the names there are) if none is."""
    found = profiles().get(name) if isinstance(name, str) else None
    if found is None:
        raise ContractError(f"unknown contract {name!r}; use one of {', '.join(names())} (docs/contracts.md)")
    return found


def of(impl) -> str:
    """The contract an implementation declares (its ``contract`` attribute; PyTorch's if none)."""
    return getattr(impl, "contract", None) or DEFAULT


# -- the rules: what a difference changes ------------------------------------------------------------


@dataclass
class _Case:
    """One problem's facts and the expected values being rewritten (float64 double-doubles; the
    loss flattened to (M,) for 'none', the gradient as (M, C) rows)."""

    problem: Problem
    exact: object  # reference.Exact
    x: np.ndarray  # (M, C) float64 logits
    t: np.ndarray  # (M,) int64 targets or (M, C) probabilities
    loss_hi: np.ndarray
    loss_lo: np.ndarray
    grad_hi: np.ndarray | None
    grad_lo: np.ndarray | None

    @property
    def index(self) -> bool:
        return not self.problem.probability_target

    def kept(self) -> np.ndarray:
        return self.t != self.problem.ignore_index if self.index else np.ones(len(self.x), bool)

    def target_weights(self) -> np.ndarray:
        """(M,) w[y] of every sample (1 without weights; 0 for ignored ones)."""
        p, kept = self.problem, self.kept()
        w = np.ones(p.num_classes) if p.weight is None else p.weight.astype(np.float64)
        return np.where(kept, w[np.where(kept, self.t, 0)] if p.num_classes else 0.0, 0.0)

    def finite_weights(self) -> bool:
        w = self.problem.weight
        return w is None or bool(np.isfinite(w.astype(np.float64)).all())

    def total_weight(self) -> Fraction:
        """W_K = Σ w[y] over the kept samples, exactly."""
        return sum((Fraction(float(v)) for v in self.target_weights()[self.kept()]), Fraction(0))

    def set_loss(self, values: np.ndarray) -> None:
        """Per-sample losses (M,) as the library reduces them, IEEE: 'none' takes their inf/NaN
        values (finite samples keep the reference's); 'sum' and 'mean' (called only when one is
        inf/NaN, and the finite ones cannot change an inf/NaN sum) their IEEE sum, over W_K."""
        p = self.problem
        if p.reduction == "none":  # the inf/NaN samples; the finite ones keep the reference's values
            special = ~np.isfinite(values)
            self.loss_hi, self.loss_lo = self.loss_hi.copy(), self.loss_lo.copy()
            self.loss_hi[special], self.loss_lo[special] = values[special], 0.0
            return
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            total = np.sum(values[self.kept()]) if len(values) else np.float64(0.0)
            if p.reduction == "mean":
                total = total / np.float64(float(self.total_weight()))
        self.loss_hi, self.loss_lo = np.array([total]), np.zeros(1)

    def pytorch_losses(self) -> np.ndarray:
        """(M,) per-sample nll_n = w[y]·L_n of PyTorch's contract where it is inf/NaN (index
        targets, no smoothing, finite weights), 0 elsewhere (a finite value cannot change an
        inf/NaN sum)."""
        x, kept = self.x, self.kept()
        y = np.where(kept, self.t, 0)
        xy = x[np.arange(len(x)), y] if x.shape[1] else np.zeros(len(x))
        nan_row = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1) | np.isneginf(x).all(axis=1)
        inf_row = np.isneginf(xy) & ~nan_row
        with np.errstate(invalid="ignore"):
            out = np.where(nan_row, np.nan, np.where(inf_row, self.target_weights() * np.inf, 0.0))
        return np.where(kept, out, 0.0)


def _index_plain(case: _Case) -> bool:
    """Class indices, no smoothing, finite weights, C > 0: where the index rules are proven."""
    p = case.problem
    return case.index and p.label_smoothing == 0 and case.finite_weights() and p.num_classes > 0


def _split(v: Fraction) -> tuple[float, float]:
    hi = float(v)
    return hi, float(v - Fraction(hi))


def posinf_logit(case: _Case, gradient: str = "finite") -> bool:
    """A row with a +inf logit and no NaN (class indices, finite weights, no smoothing). A kept
    row: loss +inf (times w[y], reduced by IEEE rules), NaN when the target logit is
    +inf itself (inf − inf, as PyTorch's). ``gradient = "finite"`` (optax: softmax = exp(x −
    lse) is 0 at the finite logits and NaN at the +inf ones): a kept row's gradient is −σ·w[y]
    at a finite or −inf target (σ = 1/W_K exactly for 'mean', 1 otherwise), NaN at the +inf
    logits and 0 elsewhere; an ignored row's (its cotangent is 0: jnp.where) is NaN at the +inf
    logits and 0 elsewhere. ``"nan"``: the gradient is PyTorch's (NaN rows)."""
    p = case.problem
    if not case.index or not case.finite_weights() or not p.num_classes:
        return False
    x, kept = case.x, case.kept()
    y = np.where(kept, case.t, 0)
    target_inf = np.isposinf(x[np.arange(len(x)), y])
    posinf = np.isposinf(x).any(axis=1) & ~np.isnan(x).any(axis=1)
    if p.label_smoothing != 0:  # smoothing: log_softmax's NaN softmax everywhere, PyTorch's NaN rows
        return False
    rows = kept & posinf
    masked = ~kept & posinf if gradient == "finite" and case.grad_hi is not None else np.zeros(len(x), bool)
    if not (rows.any() or masked.any()):
        return False
    changed = bool(masked.any())
    if rows.any():
        wy = case.target_weights()
        per = case.pytorch_losses()
        with np.errstate(invalid="ignore"):
            per[rows] = np.where(target_inf[rows], np.nan, wy[rows] * np.inf)
        changed = changed or bool((rows & ~target_inf).any())
        case.set_loss(per)
    for n in np.flatnonzero(masked):
        case.grad_hi[n], case.grad_lo[n] = 0.0, 0.0
        case.grad_hi[n, np.isposinf(x[n])] = np.nan
    if gradient != "finite" or case.grad_hi is None or not rows.any():
        return changed
    sigma = Fraction(1)
    if p.reduction == "mean":
        W = case.total_weight()
        if W == 0:
            return changed  # σ = inf: the kept rows are PyTorch's IEEE chain, not this rule's
        sigma = 1 / W
    for n in np.flatnonzero(rows):
        case.grad_hi[n], case.grad_lo[n] = 0.0, 0.0
        if not target_inf[n]:
            case.grad_hi[n, y[n]], case.grad_lo[n, y[n]] = _split(-sigma * Fraction(float(wy[n])))
        case.grad_hi[n, np.isposinf(x[n])] = np.nan
    return True


def zero_label_neginf(case: _Case) -> bool:
    """One-hot labels: a kept row with a −inf logit at a class other than the target (and no
    NaN or +inf) has loss NaN (0 · log 0); the gradient is unchanged."""
    if not _index_plain(case):
        return False
    x, kept = case.x, case.kept()
    y = np.where(kept, case.t, 0)
    other = np.isneginf(x)
    other[np.arange(len(x)), y] = False
    rows = kept & other.any(axis=1) & ~np.isnan(x).any(axis=1) & ~np.isposinf(x).any(axis=1)
    if not rows.any():
        return False
    per = case.pytorch_losses()
    per[rows] = np.nan
    case.set_loss(per)
    return True


def divide_no_nan_mean(case: _Case) -> bool:
    """'mean' of class-index targets whose kept target weights sum to exactly 0 (every sample
    ignored, or weights cancelling; finite weights): loss 0 and gradient 0."""
    p = case.problem
    if not case.index or p.reduction != "mean" or not case.finite_weights() or case.total_weight() != 0:
        return False
    case.loss_hi, case.loss_lo = np.zeros(1), np.zeros(1)
    if case.grad_hi is not None:
        case.grad_hi[...], case.grad_lo[...] = 0.0, 0.0
    return True


def targets_assumed_normalised(case: _Case) -> bool:
    """Probability targets (no weights, no smoothing, finite inputs): the gradient is
    σ·(p − t), the contract's plus σ·(1 − Σt)·p -- :func:`harness.diagnosis.
    targets_assumed_normalised` (MPFR from the reference); the loss is PyTorch's."""
    from harness import diagnosis

    p = case.problem
    if case.index or p.weight is not None or p.label_smoothing or case.grad_hi is None:
        return False
    ctx = diagnosis.Context(p, "grad", case.exact, np.empty(0))
    alt = diagnosis.targets_assumed_normalised(ctx)
    if alt is None:
        return False
    case.grad_hi, case.grad_lo = _rows(p, alt.hi), _rows(p, alt.lo)
    return True


#: The functions contracts.toml may name.
RULES: dict[str, Callable[..., bool]] = {
    f.__name__: f for f in (posinf_logit, zero_label_neginf, divide_no_nan_mean,
                            targets_assumed_normalised)
}


# -- expected values --------------------------------------------------------------------------------


def _rows(problem: Problem, arr: np.ndarray) -> np.ndarray:
    a = np.array(arr, np.float64, copy=True)
    if a.ndim < 2:
        return a.reshape(1, -1)
    return np.moveaxis(a, problem.class_axis, -1).reshape(-1, a.shape[problem.class_axis])


def expected(problem: Problem, exact, profile: Profile | str) -> tuple[object, tuple[Difference, ...]]:
    """The values ``profile``'s contract expects for ``problem``: (an Exact like ``exact``,
    the differences that changed a value). ``exact`` itself when none does (PyTorch's)."""
    profile = get(profile) if isinstance(profile, str) else profile
    if not profile.differences or problem.num_samples == 0:
        return exact, ()
    x, t = problem.rows()
    grad = exact.grad_hi is not None
    case = _Case(problem, exact, x.astype(np.float64), t.astype(np.int64) if t.dtype.kind in "iu" else t.astype(np.float64),
                 np.array(exact.loss_hi, np.float64).reshape(-1), np.array(exact.loss_lo, np.float64).reshape(-1),
                 _rows(problem, exact.grad_hi) if grad else None, _rows(problem, exact.grad_lo) if grad else None)
    applied = tuple(d for d in profile.differences if RULES[d.rule](case, **d.params))
    if not applied:
        return exact, ()
    shape = np.shape(exact.loss_hi)
    changes = {"loss_hi": case.loss_hi.reshape(shape), "loss_lo": case.loss_lo.reshape(shape)}
    if grad:
        changes |= {"grad_hi": np.ascontiguousarray(problem.unrows(case.grad_hi)),
                    "grad_lo": np.ascontiguousarray(problem.unrows(case.grad_lo))}
    return dataclasses.replace(exact, **changes), applied


# -- verdicts -----------------------------------------------------------------------------------------


def _under_run(kind: str, problem: Problem, outputs: dict, exact, budgets: dict):
    if kind == "special":
        return verdicts.judge_special(problem, outputs, exact)
    op = vocabulary.quantity(kind)
    return verdicts.judge(problem, op, outputs[op], *exact.pair(op), budgets[problem.dtype.name])


def _agrees_own(kind: str, problem: Problem, outputs: dict, run_exact, own_exact, budgets: dict) -> bool:
    """Whether the output agrees with the own profile's values on the positions the cell
    judges: every position of its quantity (accuracy, gradient), or the positions where the
    run's contract is inf/NaN (special), finite ones within the budgets, inf/NaN exactly."""
    from harness import diagnosis, metrics

    ops = [vocabulary.quantity(kind)] if kind != "special" else \
        [q for q in ("loss", "grad") if outputs.get(q) is not None and (q == "loss" or run_exact.grad_hi is not None)]
    for op in ops:
        hi, lo = own_exact.pair(op)
        skip = None
        if kind == "special":
            rh, rl = run_exact.pair(op)
            rf = metrics.round_to_format(np.atleast_1d(rh), np.atleast_1d(rl), problem.format).reshape(np.shape(rh))
            skip = np.isfinite(rf.astype(np.float64))
        ok, _ = diagnosis.agrees(problem, op, outputs[op], hi, lo, budgets, skip=skip)
        if not ok:
            return False
    return True


def judge(kind: str, problem: Problem, outputs: dict, exact, budgets: dict, *, run: str = DEFAULT,
          own: str | None = None):
    """One cell's (status, message, metrics, record) under the run's contract ``run``, or None
    for a special-value cell where that contract has no inf/NaN; ``record`` goes into the cell:
    the contract it was judged by and, for a convention difference, the profile and the
    differences that explain it. ``budgets`` is the whole table (by dtype)."""
    run_exact, _ = expected(problem, exact, run)
    judged = _under_run(kind, problem, outputs, run_exact, budgets)
    if judged is None:
        return None
    status, message, metrics = judged
    record = {"contract": run}
    own = own or DEFAULT
    if status != "fail" or own == run:
        return status, message, metrics, record
    own_exact, applied = expected(problem, exact, own)
    if not applied or not _agrees_own(kind, problem, outputs, run_exact, own_exact, budgets):
        return status, message, metrics, record
    record["convention"] = {"profile": own, "differences": [d.name for d in applied]}
    what = "; ".join(d.text for d in applied)
    message = f"convention difference ({own}: {what}); under {run}: {message}"
    return "convention", message, metrics, record
