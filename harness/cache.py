"""On-disk cache of reference results, keyed by the problem's sha256 digest.

The reference costs about a microsecond per logit per core, so a sweep computes each problem once,
in parallel processes, and later runs (and ``--resume``) read it back. Location: $XENT_CACHE, else
$XDG_CACHE_HOME/xent-harness, else ~/.cache/xent-harness; one compressed .npz per problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import reference
from harness.problem import Problem

#: Problems at least this large are split by rows across all workers; smaller ones are spread
#: one per worker.
_BIG = 200_000


def default_dir() -> Path:
    if os.environ.get("XENT_CACHE"):
        return Path(os.environ["XENT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xent-harness"


class ReferenceCache:
    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory or default_dir()) / f"reference-v{reference.VERSION}"

    def _path(self, problem: Problem) -> Path:
        d = problem.digest
        return self.directory / d[:2] / f"{d}.npz"

    def load(self, problem: Problem) -> reference.Exact | None:
        path = self._path(problem)
        try:
            with np.load(path) as z:
                return reference.Exact(z["loss_hi"], z["loss_lo"], z["grad_hi"], z["grad_lo"], bits=int(z["bits"]),
                                       unresolved=int(z["unresolved"]))
        except (OSError, KeyError, ValueError):
            return None  # missing or unreadable (e.g. cut by a kill): recompute

    def store(self, problem: Problem, ex: reference.Exact) -> None:
        path = self._path(problem)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, loss_hi=ex.loss_hi, loss_lo=ex.loss_lo, grad_hi=ex.grad_hi,
                                grad_lo=ex.grad_lo, bits=ex.bits, unresolved=ex.unresolved)
        os.replace(tmp, path)

    def get_many(self, problems: list[Problem], *, workers: int | None = None,
                 log: Callable[[str], None] | None = None) -> list[reference.Exact]:
        """References of every problem (with gradients), computing the missing ones."""
        out: list[reference.Exact | None] = [self.load(p) for p in problems]
        missing = [i for i, ex in enumerate(out) if ex is None]
        if missing and log:
            size = sum(problems[i].logits.size for i in missing)
            log(f"reference: computing {len(missing)} problems ({size:,} logits); "
                f"{len(problems) - len(missing)} cached in {self.directory}")
        big = [i for i in missing if problems[i].logits.size >= _BIG]
        small = [i for i in missing if problems[i].logits.size < _BIG]
        for i in big:
            out[i] = reference.evaluate(problems[i], workers=workers)
            self.store(problems[i], out[i])
        for i, ex in zip(small, reference.evaluate_many([problems[i] for i in small], workers=workers)):
            out[i] = ex
            self.store(problems[i], ex)
        return out  # type: ignore[return-value]
