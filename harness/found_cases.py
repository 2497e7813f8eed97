"""Saved cases: problems found by ``xent-harness fuzz`` and ``hunt``, kept with their exact
reference in the golden-file format (:mod:`harness.golden`: one ``.npz`` per case and a
``manifest.json`` with each file's sha256), and read back as scenarios of family ``found`` that
``check`` (``--cases DIR``) and the pytest plugin replay.

A case is named ``found-<first 12 hex digits of the problem's digest>`` (plus its memory layout
where it is not contiguous); its manifest entry records the implementations that failed it, the
cells' kinds and messages, the seed, the shape, dtype and options.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from harness import golden
from harness.formats import FORMATS
from harness.problem import Problem
from harness.scenarios import Scenario

#: The saved cases' family and name prefix.
FAMILY = "found"


def found_dir() -> Path:
    """Where fuzz findings are saved and replayed from: ``$XENT_FOUND``, else
    ``references/found`` under the current directory (the checked project, as for its
    pyproject.toml)."""
    env = os.environ.get("XENT_FOUND")
    return Path(env) if env else Path("references") / "found"


def case_name(problem: Problem) -> str:
    """A saved case's name: stable, from the problem's digest (dtype, shape, bytes, options) and
    its memory layout (the same values in another layout are another case)."""
    return f"{FAMILY}-{problem.digest[:12]}" + ("" if problem.memory == "contiguous" else f"-{problem.memory}")



def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _options(problem: Problem) -> dict:
    return {"reduction": problem.reduction, "ignore_index": problem.ignore_index,
            "label_smoothing": problem.label_smoothing, "weight": None if problem.weight is None else "given",
            "target": "prob" if problem.probability_target else "index", "memory": problem.memory,
            **({} if problem.probability_target else {"target_dtype": problem.target.dtype.name})}


def save_case(problem: Problem, finding: dict, directory: Path | None = None) -> Path:
    """Write ``problem`` and its exact reference (recomputed, with the loss's 40-digit strings)
    in the golden-file format into ``directory`` (default :func:`found_dir`) and record it and
    ``finding`` (impl, kinds, messages, seed, ...) in that directory's manifest; returns the
    file. The same problem found again adds to its entry."""
    import gmpy2
    import mpmath

    from harness import __version__, reference

    directory = Path(directory or found_dir())
    directory.mkdir(parents=True, exist_ok=True)
    ex = reference.evaluate(problem, workers=1)
    with mpmath.workprec(200):
        strs = np.array([mpmath.nstr(v, 40) for v in golden._mpf_list(ex.loss_mpfr)])
    payload = golden._encode(problem) | {"loss_hi": ex.loss_hi, "loss_lo": ex.loss_lo, "grad_hi": ex.grad_hi,
                                         "grad_lo": ex.grad_lo, "loss_str": strs.reshape(problem.output_shape)}
    name = case_name(problem)
    path = directory / f"{name}.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, **payload)
    _atomic_write(path, buf.getvalue())
    manifest_path = directory / golden.MANIFEST
    manifest = golden.load_manifest(directory) if manifest_path.exists() else {}
    manifest |= {"schema": golden.SCHEMA, "generator": f"xent-harness {__version__} (fuzz)",
                 "mpmath": mpmath.__version__, "gmpy2": gmpy2.version(), "mpfr": gmpy2.mpfr_version()}
    cases = manifest.setdefault("cases", {})
    entry = cases.get(name) or {"findings": []}
    record = {k: finding[k] for k in ("impl", "kinds", "messages", "seed", "round") if k in finding}
    if record not in entry["findings"]:
        entry["findings"].append(record)
    entry |= {"file": path.name, "sha256": golden._sha256(path), "dtype": problem.dtype.name,
              "shape": list(problem.logits.shape), "options": _options(problem), "problem_digest": problem.digest,
              "bits": ex.bits, "nonfinite": bool(not np.isfinite(ex.loss_hi).all() or not np.isfinite(ex.grad_hi).all()),
              "why": "; ".join(f"{f['impl']} {','.join(f.get('kinds', []))}: {' / '.join(f['messages'])}"
                             for f in entry["findings"])}
    cases[name] = entry
    _atomic_write(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return path


@dataclass(frozen=True)
class FoundScenario(Scenario):
    """A scenario whose problem is a saved fuzz case, read from its file (checked against the
    manifest's sha256), not generated."""

    path: str = ""
    sha256: str = ""

    def problem(self, dtype) -> Problem:
        from harness.formats import format_of

        fmt = format_of(dtype)
        if fmt.name not in self.dtypes:
            raise ValueError(f"scenario {self.name!r} does not apply to {fmt.name}; its dtype is {self.dtypes[0]}")
        path = Path(self.path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the saved fuzz case {self.name} ({exc.strerror or exc}); "
                             f"restore it or remove it from {path.parent / golden.MANIFEST}") from None
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValueError(f"{path}: does not match its sha256 in {path.parent / golden.MANIFEST} (tampered or "
                             "stale); restore it, or remove the case and fuzz again")
        with np.load(io.BytesIO(data)) as z:
            return golden.decode(z)


def found_scenarios(directory: Path | None = None) -> list[FoundScenario]:
    """The saved cases of ``directory`` (default :func:`found_dir`) as scenarios of family
    ``found``, tagged ``quick`` (they are small and they are regressions), ``special`` when the
    reference has inf/NaN; none when the directory has no manifest. A malformed manifest is a
    ValueError naming it."""
    directory = Path(directory or found_dir())
    if not (directory / golden.MANIFEST).is_file():
        return []
    manifest = golden.load_manifest(directory)
    out = []
    for name in sorted(manifest["cases"]):
        e = manifest["cases"][name]
        try:
            shape = [int(n) for n in e["shape"]]
            dtype = str(e["dtype"])
            options = dict(e.get("options") or {})
            if dtype not in FORMATS:
                raise ValueError(dtype)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{directory / golden.MANIFEST}: case {name!r} lacks a valid dtype and shape; "
                             "remove it or fuzz again") from None
        params = {"shape": shape, **options, "file": str(directory / e["file"])}
        out.append(FoundScenario(
            name=name, family=FAMILY, why=f"fuzz finding: {e.get('why', '')}"[:200], kind="found",
            params=MappingProxyType(params), dtypes=(dtype,), seed=int((e.get("findings") or [{}])[0].get("seed", 0)),
            tags=("quick", "special") if e.get("nonfinite") else ("quick",),
            path=str(directory / e["file"]), sha256=str(e["sha256"])))
    return out
