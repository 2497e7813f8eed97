"""Golden reference files: a fixed catalogue of problems with their exact losses and gradients,
stored in ``references/`` so tests and CI read them instead of recomputing (NumPy umath style).

Layout: one compressed ``.npz`` per case holding the inputs (logits bit-exact: bfloat16 as its
uint16 pattern), the options, and the reference as double-doubles (``loss_hi + loss_lo``,
``grad_hi + grad_lo``) plus the loss as 40-digit decimal strings (exact beyond float64's range);
``manifest.json`` records each file's sha256, the generator and the mpmath/gmpy2 versions.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.formats import FORMATS
from harness.problem import Problem

MANIFEST = "manifest.json"
SCHEMA = 1


def default_dir() -> Path:
    """``references/`` at the repository root (next to the package), or $XENT_REFERENCES."""
    import os

    env = os.environ.get("XENT_REFERENCES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "references"


@dataclass(frozen=True)
class Case:
    name: str
    why: str
    build: Callable[[], Problem]


def _p(logits, target, dtype="float64", **kw) -> Problem:
    return Problem(np.asarray(logits, dtype=np.float64).astype(FORMATS[dtype].dtype), np.asarray(target), **kw)


def _rand(seed: int, shape, scale=1.0):
    return np.random.default_rng(seed).normal(0.0, scale, shape)


def _targets(seed: int, C: int, shape):
    return np.random.default_rng(seed + 1).integers(0, C, shape)


inf = math.inf


def _cases() -> list[Case]:
    cases = [
        Case("tutorial-example", "the user's worked example: per-sample 0.417, 2.524; mean 1.471",
             lambda: _p([[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]], [0, 2])),
        Case("tutorial-example-none", "the worked example per sample",
             lambda: _p([[2.0, 1.0, 0.1], [1.2, 2.5, 0.3]], [0, 2], reduction="none")),
        Case("tiny-loss-20-f32", "[20, 0] in float32: loss 2.06e-9, the usual formulas give 0",
             lambda: _p([[20.0, 0.0]], [0], "float32", reduction="none")),
        Case("tiny-loss-200-f64", "[200, 0]: loss 1.3839e-87, 256-bit textbook mpmath gives 0",
             lambda: _p([[200.0, 0.0]], [0], reduction="none")),
        Case("tiny-loss-40-f64", "[40, 0, 0] in float64: the usual formulas give 0",
             lambda: _p([[40.0, 0.0, 0.0]], [0])),
        Case("all-equal", "all-equal logits: loss = log C exactly",
             lambda: _p(np.full((3, 7), 1.25), [0, 3, 6], reduction="none")),
        Case("neg-inf-mask", "-inf masks contribute 0; a -inf target gives +inf",
             lambda: _p([[0.0, -inf, 1.0], [-inf, 2.0, 3.0]], [0, 0], reduction="none")),
        Case("all-ignored-mean", "every target ignored with 'mean': NaN loss, zero gradient",
             lambda: _p(_rand(3, (4, 5)), [-100] * 4)),
    ]
    for dtype in FORMATS:
        d = dtype
        cases += [
            Case(f"ordinary-{d}", "random normal logits, mean", lambda d=d: _p(_rand(10, (16, 10)), _targets(10, 10, 16), d)),
            Case(f"scale-1e3-{d}", "logits of scale 1e3: exp overflows without the max shift",
                 lambda d=d: _p(_rand(11, (8, 12), 1e3 if d != "float16" else 1e2), _targets(11, 12, 8), d, reduction="none")),
            Case(f"dominant-gap-30-{d}", "target 30 above the rest: tiny losses, p_t -> 1",
                 lambda d=d: _p(np.where(np.eye(6, 9, dtype=bool), 30.0, _rand(12, (6, 9), 0.5)), np.arange(6), d, reduction="none")),
            Case(f"weights-smoothing-{d}", "class weights (one zero) with label smoothing 0.1",
                 lambda d=d: _p(_rand(13, (10, 6)), _targets(13, 6, 10), d, weight=[1, 0, 2, 0.5, 1, 3], label_smoothing=0.1)),
            Case(f"ignore-inside-{d}", "ignore_index = 2 lies inside [0, C); sum",
                 lambda d=d: _p(_rand(14, (12, 5)), _targets(14, 5, 12), d, ignore_index=2, reduction="sum")),
            Case(f"prob-targets-{d}", "unnormalized probability targets, weights, smoothing 0.2",
                 lambda d=d: _p(_rand(15, (6, 4)), np.random.default_rng(15).uniform(0, 1, (6, 4)), d,
                                weight=[1, 2, 0.5, 1], label_smoothing=0.2)),
            Case(f"kdim-{d}", "K-dim input (N, C, d1, d2), weighted mean",
                 lambda d=d: _p(_rand(16, (2, 4, 3, 2)), _targets(16, 4, (2, 3, 2)), d, weight=[0.5, 1, 2, 1])),
            Case(f"unbatched-{d}", "unbatched (C,) input with a scalar target",
                 lambda d=d: _p(_rand(17, (9,), 3.0), 4, d)),
            Case(f"large-C-{d}", "C = 4096 classes, few rows",
                 lambda d=d: _p(_rand(18, (2, 4096), 2.0), [7, 4000], d)),
        ]
    return cases


CASES: list[Case] = _cases()


def case(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no golden case {name!r}")


# -- files -----------------------------------------------------------------------------------------


def _encode(problem: Problem) -> dict:
    bits = problem.logits.view(np.uint16) if problem.dtype.name == "bfloat16" else problem.logits
    out = {
        "dtype": np.array(problem.dtype.name),
        "logits": bits,
        "target": problem.target.view(np.uint16) if problem.dtype.name == "bfloat16" and problem.probability_target else problem.target,
        "options": np.array(json.dumps({"ignore_index": problem.ignore_index, "reduction": problem.reduction,
                                        "label_smoothing": problem.label_smoothing})),
    }
    if problem.weight is not None:
        out["weight"] = problem.weight.view(np.uint16) if problem.dtype.name == "bfloat16" else problem.weight
    return out


def decode(data) -> Problem:
    """The Problem stored in a golden file (the inverse of the encoding above)."""
    dtype = FORMATS[str(data["dtype"])].dtype

    def arr(key):
        a = data[key]
        return a.view(dtype) if a.dtype == np.uint16 else a

    opts = json.loads(str(data["options"]))
    weight = arr("weight") if "weight" in data else None
    return Problem(arr("logits"), arr("target"), weight=weight, **opts)


@dataclass
class Golden:
    """One golden case as read back: the problem and its reference."""

    name: str
    problem: Problem
    loss_hi: np.ndarray
    loss_lo: np.ndarray
    grad_hi: np.ndarray
    grad_lo: np.ndarray
    loss_str: np.ndarray


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(directory: Path | None = None, *, workers: int | None = None, names=None, log=print) -> dict:
    """Compute every case with the reference and (re)write the files and the manifest."""
    import gmpy2
    import mpmath

    from harness import __version__
    from harness.reference import evaluate_many

    directory = Path(directory or default_dir())
    directory.mkdir(parents=True, exist_ok=True)
    chosen = [c for c in CASES if names is None or c.name in names]
    problems = [c.build() for c in chosen]
    exacts = evaluate_many(problems, workers=workers)
    manifest = {"schema": SCHEMA, "generator": f"xent-harness {__version__}", "mpmath": mpmath.__version__,
                "gmpy2": gmpy2.version(), "mpfr": gmpy2.mpfr_version(), "cases": {}}
    for c, p, ex in zip(chosen, problems, exacts):
        with mpmath.workprec(200):
            strs = np.array([mpmath.nstr(v, 40) for v in _mpf_list(ex.loss_mpfr)])
        payload = _encode(p) | {
            "loss_hi": ex.loss_hi, "loss_lo": ex.loss_lo, "grad_hi": ex.grad_hi, "grad_lo": ex.grad_lo,
            "loss_str": strs.reshape(p.output_shape),
        }
        buf = io.BytesIO()
        np.savez_compressed(buf, **payload)
        path = directory / f"{c.name}.npz"
        path.write_bytes(buf.getvalue())
        manifest["cases"][c.name] = {"file": path.name, "sha256": _sha256(path), "why": c.why,
                                     "dtype": p.dtype.name, "shape": list(p.logits.shape),
                                     "problem_digest": p.digest, "bits": ex.bits}
        log(f"  {c.name:28s} {p.dtype.name:9s} {list(p.logits.shape)!s:16s} {ex.bits} bits")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _mpf_list(values):
    from harness.reference import _to_mpf_array

    return list(_to_mpf_array(values))


def load_manifest(directory: Path | None = None) -> dict:
    path = Path(directory or default_dir()) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `xent-harness references generate`")
    return json.loads(path.read_text())


def load(name: str, directory: Path | None = None, *, check: bool = True) -> Golden:
    """Read one golden case; with ``check`` its sha256 must match the manifest."""
    directory = Path(directory or default_dir())
    entry = load_manifest(directory)["cases"][name]
    path = directory / entry["file"]
    if check and _sha256(path) != entry["sha256"]:
        raise ValueError(f"references: {path.name} does not match its sha256 in {MANIFEST} (tampered or stale); "
                         "regenerate with `xent-harness references generate`")
    with np.load(path) as data:
        return Golden(name, decode(data), data["loss_hi"], data["loss_lo"], data["grad_hi"],
                      data["grad_lo"], data["loss_str"])


def names(directory: Path | None = None) -> list[str]:
    return sorted(load_manifest(directory)["cases"])


def verify(directory: Path | None = None, *, recompute: int | None = 6, seed: int = 0, certify: bool = False,
           log=print) -> list[str]:
    """Check every file's hash and that the catalogue matches; recompute ``recompute`` cases
    (all when None) with the reference and compare bit for bit. With ``certify``, also re-derive
    every (hash-intact) case with the independent arb oracle of :mod:`harness.certify` and check
    the stored double-doubles, their roundings to every format and the decimal strings against
    its balls (raises :class:`harness.certify.CertifyUnavailable` without python-flint).
    Returns the problems found, one line each."""
    from harness.reference import evaluate_many

    if certify:
        from harness import certify as arb_oracle

        arb_oracle.require()  # fail fast, before any work, when python-flint is missing
    directory = Path(directory or default_dir())
    problems: list[str] = []
    manifest = load_manifest(directory)
    listed = set(manifest["cases"])
    expected = {c.name for c in CASES}
    for missing in sorted(expected - listed):
        problems.append(f"{missing}: in the catalogue but not in {MANIFEST}")
    for extra in sorted(listed - expected):
        problems.append(f"{extra}: in {MANIFEST} but no longer in the catalogue")
    good = []
    for name in sorted(listed):
        entry = manifest["cases"][name]
        path = directory / entry["file"]
        if not path.is_file():
            problems.append(f"{name}: file {entry['file']} is missing")
        elif _sha256(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 mismatch (tampered or stale)")
        else:
            good.append(name)
    log(f"hashes: {len(good)}/{len(listed)} files match {MANIFEST}")
    rng = np.random.default_rng(seed)
    sample = [n for n in good if n in expected]
    if recompute is not None and recompute < len(sample):
        sample = sorted(rng.choice(sample, recompute, replace=False).tolist())
    goldens = [load(n, directory) for n in sample]
    for g in goldens:
        if g.problem.digest != manifest["cases"][g.name]["problem_digest"]:
            problems.append(f"{g.name}: stored problem differs from the one recorded")
        if case(g.name).build().digest != g.problem.digest:
            problems.append(f"{g.name}: the catalogue now builds a different problem (regenerate)")
    exacts = evaluate_many([g.problem for g in goldens])
    for g, ex in zip(goldens, exacts):
        same = all(np.array_equal(a, b, equal_nan=True) for a, b in (
            (g.loss_hi, ex.loss_hi), (g.loss_lo, ex.loss_lo), (g.grad_hi, ex.grad_hi), (g.grad_lo, ex.grad_lo)))
        if not same:
            problems.append(f"{g.name}: recomputed reference differs from the stored one")
    log(f"recomputed: {len(goldens)} cases ({', '.join(g.name for g in goldens)})")
    if certify:
        problems += _certify_all(directory, [n for n in good if n in expected], log)
    return problems


def _certify_all(directory: Path, chosen: list[str], log) -> list[str]:
    """Certify the stored values of ``chosen`` cases with the arb oracle: one line per failure."""
    from harness import certify as arb_oracle

    found: list[str] = []
    undecided = max_prec = 0
    for name in chosen:
        g = load(name, directory)
        report = arb_oracle.certify_double_double(g.problem, g.loss_hi, g.loss_lo, g.grad_hi, g.grad_lo,
                                                  loss_str=g.loss_str)
        found += [f"{name}: {line}" for line in report.lines()]
        for f in report.undecided:
            log(f"  undecided {name}: {f.line()}")
        undecided += len(report.undecided)
        max_prec = max(max_prec, report.prec)
    log(f"certified: {len(chosen)} cases against the arb oracle (up to {max_prec} bits), "
        f"{len(found)} disagreement(s), {undecided} undecided")
    return found
