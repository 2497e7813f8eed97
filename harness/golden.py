"""Golden reference files: a fixed catalogue of problems (data: ``golden.toml``) with their exact
losses and gradients, stored in ``references/`` so tests and CI read them instead of recomputing
(NumPy umath style).

Layout: one compressed ``.npz`` per case holding the inputs (logits bit-exact: bfloat16 as its
uint16 pattern), the options, and the reference as double-doubles (``loss_hi + loss_lo``,
``grad_hi + grad_lo``) plus the loss as 40-digit decimal strings (exact beyond float64's range);
``manifest.json`` records each file's sha256, the generator and the mpmath/gmpy2 versions.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
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


OPTIONS = ("weight", "ignore_index", "reduction", "label_smoothing")


def _draw(spec, what: str):
    """A literal array or one of golden.toml's generator tables, as float64 (see its header)."""
    if not isinstance(spec, dict):
        return np.asarray(spec)
    shape = spec.get("shape")
    if "normal" in spec:
        seed, scale = spec["normal"]
        return np.random.default_rng(seed).normal(0.0, scale, tuple(shape) if isinstance(shape, list) else shape)
    if "fill" in spec:
        return np.full(tuple(shape), float(spec["fill"]))
    if "eye" in spec:
        return np.where(np.eye(*spec["eye"], dtype=bool), float(spec["value"]), _draw(spec["else"], what))
    if "classes" in spec:
        seed, C = spec["classes"]
        return np.random.default_rng(seed + 1).integers(0, C, tuple(shape) if isinstance(shape, list) else shape)
    if "uniform" in spec:
        return np.random.default_rng(spec["uniform"]).uniform(0, 1, tuple(shape))
    if "arange" in spec:
        return np.arange(spec["arange"])
    raise ValueError(f"golden.toml: {what}: unknown generator {sorted(spec)}")


def _build(entry: dict, dtype: str) -> Problem:
    entry = entry | entry.get("overrides", {}).get(dtype, {})
    logits = np.asarray(_draw(entry["logits"], "logits"), dtype=np.float64).astype(FORMATS[dtype].dtype)
    kw = {k: entry[k] for k in OPTIONS if k in entry}
    return Problem(logits, np.asarray(_draw(entry["target"], "target")), **kw)


def _cases() -> list[Case]:
    """The catalogue of golden.toml: the single cases, then each dtype's per-dtype cases."""
    import tomllib
    from importlib import resources

    entries = tomllib.loads(resources.files("harness").joinpath("golden.toml").read_text(encoding="utf-8"))["case"]
    single = [e for e in entries if "{dtype}" not in e["name"]]
    per_dtype = [e for e in entries if "{dtype}" in e["name"]]
    cases = [Case(e["name"], e["why"], partial(_build, e, e.get("dtype", "float64"))) for e in single]
    for dtype in FORMATS:
        cases += [Case(e["name"].format(dtype=dtype), e["why"], partial(_build, e, dtype))
                  for e in per_dtype if dtype in e.get("dtypes", FORMATS)]
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
                                        "label_smoothing": problem.label_smoothing,
                                        # the layout only where it is not the default, so older files read as before
                                        **({} if problem.memory == "contiguous" else {"memory": problem.memory})})),
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
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON manifest ({type(exc).__name__}); regenerate it with "
                         "`xent-harness references generate`") from None
    cases = manifest.get("cases") if isinstance(manifest, dict) else None
    if not isinstance(cases, dict) or not all(isinstance(e, dict) and {"file", "sha256"} <= set(e)
                                               for e in cases.values()):
        raise ValueError(f"{path} is not a references manifest (expected {{\"cases\": {{name: {{\"file\", "
                         "\"sha256\", ...}}}}}}); regenerate it with `xent-harness references generate`")
    return manifest


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


def verify(directory: Path | None = None, *, recompute: int | None = 6, seed: int | None = None,
           certify: bool = False, log=print) -> list[str]:
    """Check every file's hash and that the catalogue matches; recompute ``recompute`` cases
    (all when None) with the reference and compare bit for bit. The sample is drawn afresh each
    time (``seed`` None: a random seed, logged so a failure can be replayed with it).

    What the default proves: every file is the one the manifest lists (its sha256), so an
    accidental corruption or a stale file is caught; and ``recompute`` cases, chosen at random,
    are what today's reference computes. A file altered together with its manifest hash passes
    the hash check and is caught only when drawn (probability ``recompute``/cases per run);
    ``all`` (``--all``) recomputes every case, and ``certify`` checks every case against the
    independent arb oracle. With ``certify``, also re-derive
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
    if recompute is not None and recompute < 0:
        raise ValueError(f"references: --sample must be a number of cases to recompute (0: hashes only), "
                         f"not {recompute}; or --all")
    sample = [n for n in good if n in expected]
    if recompute is not None and recompute < len(sample):
        if seed is None:
            import secrets

            seed = secrets.randbelow(2**32)
        rng = np.random.default_rng(seed)
        sample = sorted(rng.choice(sample, recompute, replace=False).tolist())
        log(f"sample: {recompute} of {len(good)} cases drawn with --seed {seed} (pass it to replay this draw)")
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
