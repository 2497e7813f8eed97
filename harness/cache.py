"""On-disk cache of reference results, keyed by the problem's sha256 digest.

The reference costs about a microsecond per logit per core, so a sweep computes each problem once,
in parallel processes, and later runs (and ``--resume``) read it back. Location: $XENT_CACHE, else
$XDG_CACHE_HOME/xent-harness, else ~/.cache/xent-harness; one compressed .npz per problem.

Large problems (at least :data:`BLOCKWISE_LOGITS` logits, e.g. a language-model batch of
8192 x 128256) keep only their loss here (``<digest>.loss.npz``): their gradient as
double-doubles would take 16 bytes a logit (17 GB), so the sweeps recompute it in row blocks
while judging (:mod:`harness.blockwise`). With the loss goes one fact learnt on the way, whether
the gradient has inf/NaN anywhere (it decides whether a special-value cell exists).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import reference
from harness.problem import Problem

#: Problems at least this large are split by rows across all workers; smaller ones are spread
#: one per worker.
_BIG = 200_000
#: Problems with at least this many logits are judged blockwise and cached without gradient:
#: 2**22 logits are 64 MB of double-double gradient; the catalogue's largest ordinary scenario
#: has 524,288 logits, a language-model batch 1.05e9.
BLOCKWISE_LOGITS = 1 << 22


def is_large(problem_or_size) -> bool:
    """Whether a problem (or a number of logits) is judged blockwise, its gradient never cached."""
    size = problem_or_size if isinstance(problem_or_size, int) else problem_or_size.logits.size
    return size >= BLOCKWISE_LOGITS




def default_dir() -> Path:
    if os.environ.get("XENT_CACHE"):
        return Path(os.environ["XENT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xent-harness"


def checksum(key: str, arrays: dict[str, np.ndarray]) -> str:
    """sha256 over an entry's key (problem digest, reference version, kind) and every array's
    name, dtype, shape and bytes: an entry copied under another problem's name, edited, cut
    short or written by another reference version does not match. (It detects accidents and
    naive tampering; anyone who can write the cache can also recompute a checksum.)"""
    h = hashlib.sha256(key.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class ReferenceCache:
    """References on disk, each entry checked against its checksum when read.

    A missing, unreadable or mismatching entry is recomputed (``rejected`` counts the latter two,
    reported once per run by :meth:`get_many`); a cache that cannot be written (read-only,
    ``XENT_CACHE`` naming a file, a full disk) is left alone: the run computes without caching,
    with one warning (``unwritable``)."""

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory or default_dir()) / f"reference-v{reference.VERSION}"
        self.rejected: list[str] = []
        self.unwritable: str | None = None
        self._reported = False

    def _path(self, problem: Problem, suffix: str = ".npz") -> Path:
        d = problem.digest  # streamed: no full-size copy, cached on the problem
        return self.directory / d[:2] / f"{d}{suffix}"

    def _key(self, problem: Problem, suffix: str) -> str:
        return f"{problem.digest}:reference-v{reference.VERSION}:{suffix}"

    def _read(self, problem: Problem, suffix: str) -> dict | None:
        path = self._path(problem, suffix)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                if "checksum" not in z.files:
                    self.rejected.append(f"{path.name}: no checksum (written by an older harness)")
                    return None
                arrays = {k: z[k] for k in z.files if k != "checksum"}
                stored = str(z["checksum"])
        except Exception:  # cut by a kill, not a zip, no checksum, unreadable: recompute
            self.rejected.append(f"{path.name}: unreadable")
            return None
        if stored != checksum(self._key(problem, suffix), arrays):
            self.rejected.append(f"{path.name}: checksum mismatch")
            return None
        return arrays

    def _write(self, problem: Problem, suffix: str, arrays: dict) -> None:
        if self.unwritable:
            return
        path = self._path(problem, suffix)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays, checksum=checksum(self._key(problem, suffix), arrays))
            os.replace(tmp, path)
        except OSError as exc:
            self.unwritable = f"{type(exc).__name__}: {exc}".splitlines()[0]
            try:
                tmp.unlink()
            except OSError:
                pass

    def report(self, log: Callable[[str], None] | None) -> None:
        """Say once what the cache could not do (rejected entries, not writable)."""
        if log is None or self._reported or not (self.rejected or self.unwritable):
            return
        self._reported = True
        if self.rejected:
            log(f"reference cache: {len(self.rejected)} entries failed their check and were recomputed "
                f"(first: {self.rejected[0]})")
        if self.unwritable:
            log(f"warning: reference cache {self.directory} is not writable ({self.unwritable}); "
                "computing without caching")

    def load(self, problem: Problem) -> reference.Exact | None:
        z = self._read(problem, ".npz")
        if z is None:
            return None
        try:
            return reference.Exact(z["loss_hi"], z["loss_lo"], z["grad_hi"], z["grad_lo"], bits=int(z["bits"]),
                                   unresolved=int(z["unresolved"]))
        except KeyError:
            return None

    def store(self, problem: Problem, ex: reference.Exact) -> None:
        if is_large(problem):
            self.store_loss(problem, ex)
            return
        self._write(problem, ".npz", {"loss_hi": ex.loss_hi, "loss_lo": ex.loss_lo, "grad_hi": ex.grad_hi,
                                      "grad_lo": ex.grad_lo, "bits": np.asarray(ex.bits),
                                      "unresolved": np.asarray(ex.unresolved)})

    # -- large problems: the loss only ---------------------------------------------------------------
    def load_loss(self, problem: Problem) -> tuple[reference.Exact, bool | None] | None:
        """(the loss as an Exact without gradient, whether the gradient has inf/NaN: None when
        not known yet), or None when not cached."""
        z = self._read(problem, ".loss.npz")
        if z is None:
            return None
        try:
            ex = reference.Exact(z["loss_hi"], z["loss_lo"], bits=int(z["bits"]), unresolved=int(z["unresolved"]))
            flag = int(z["grad_nonfinite"])
        except KeyError:
            return None
        return ex, (None if flag < 0 else bool(flag))

    def store_loss(self, problem: Problem, ex: reference.Exact, grad_nonfinite: bool | None = None) -> None:
        flag = -1 if grad_nonfinite is None else int(grad_nonfinite)
        self._write(problem, ".loss.npz", {"loss_hi": ex.loss_hi, "loss_lo": ex.loss_lo, "bits": np.asarray(ex.bits),
                                           "unresolved": np.asarray(ex.unresolved),
                                           "grad_nonfinite": np.asarray(flag)})

    def loss(self, problem: Problem, *, workers: int | None = None) -> reference.Exact:
        """The loss of a (large) problem, from the cache or computed in row blocks without the
        gradient, and cached."""
        hit = self.load_loss(problem)
        if hit is not None:
            return hit[0]
        ex = reference.blocks(problem, grad=False, workers=workers).loss()
        self.store_loss(problem, ex)
        return ex

    def _load_any(self, problem: Problem) -> reference.Exact | None:
        if not is_large(problem):
            return self.load(problem)
        hit = self.load_loss(problem)
        return None if hit is None else hit[0]

    def get_many(self, problems: list[Problem], *, workers: int | None = None,
                 log: Callable[[str], None] | None = None) -> list[reference.Exact]:
        """References of every problem, computing the missing ones: with gradients, except for
        large problems (:func:`is_large`), whose Exact has the loss only."""
        out: list[reference.Exact | None] = [self._load_any(p) for p in problems]
        missing = [i for i, ex in enumerate(out) if ex is None]
        if missing and log:
            size = sum(problems[i].logits.size for i in missing)
            log(f"reference: computing {len(missing)} problems ({size:,} logits); "
                f"{len(problems) - len(missing)} cached in {self.directory}")
        for i in [i for i in missing if is_large(problems[i])]:
            out[i] = self.loss(problems[i], workers=workers)
        big = [i for i in missing if _BIG <= problems[i].logits.size and not is_large(problems[i])]
        small = [i for i in missing if problems[i].logits.size < _BIG]
        for i in big:
            out[i] = reference.evaluate(problems[i], workers=workers)
            self.store(problems[i], out[i])
        for i, ex in zip(small, reference.evaluate_many([problems[i] for i in small], workers=workers)):
            out[i] = ex
            self.store(problems[i], ex)
        self.report(log)
        return out  # type: ignore[return-value]
