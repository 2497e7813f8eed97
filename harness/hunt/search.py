"""The hunt's search loop: rounds of proposals from the strategies, evaluated in batches
(one problem per (C, smoothing) group of rows, one implementation call and one reference call
each), scored, observed, journaled.

The journal (``journal.jsonl`` in the run directory) holds every evaluated round: its
candidates and their scores. A resumed run replays the strategies from the seed; a round the
journal has is *read*, not evaluated (its candidates must match, else the journal belongs to
another request), so the search continues exactly where it stopped."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import metrics
from harness.formats import Format
from harness.hunt.space import Candidate, row
from harness.hunt.strategies import Archive, make
from harness.problem import Problem

#: Rows a strategy proposes per round; logits per batched problem.
ROUND = 32
MAX_BATCH_LOGITS = 1 << 17
OBJECTIVES = ("ulp", "scaled", "budget")


class HuntError(ValueError):
    """Bad input to the hunt: one line naming the flag."""


def batch_problem(cands: list[Candidate], fmt: Format) -> Problem:
    """The rows of candidates of one group as one (N, C) problem, reduction 'none'."""
    rows = [row(c, fmt) for c in cands]
    x = np.stack([r[0] for r in rows])
    t = np.array([r[1] for r in rows], np.int64)
    return Problem(logits=x, target=t, reduction="none", label_smoothing=cands[0].eps)


def single_problem(cand: Candidate, fmt: Format) -> Problem:
    return batch_problem([cand], fmt)


class Evaluator:
    """Scores rows for one implementation, format and quantity: per row the ULP error (the
    row's worst element for the gradient), the scaled error (in units of u_F x the
    backward-stable scale, :func:`harness.budgets.scales`) and the budget ratio
    min(ulp / ulp budget, scaled / scaled budget) (> 1: outside the budget, as a cell judges)."""

    def __init__(self, runner, fmt: Format, quantity: str, budget: dict):
        self.runner, self.fmt, self.quantity = runner, fmt, quantity
        self.b_ulp = float(budget[f"{quantity}_ulp"])
        self.b_scaled = float(budget[f"{quantity}_scaled"])
        self.evaluations = 0
        self.calls = 0

    def __call__(self, cands: list[Candidate]) -> list[dict]:
        groups: dict = {}
        for i, c in enumerate(cands):
            groups.setdefault(c.group, []).append(i)
        out: list[dict | None] = [None] * len(cands)
        for (C, _), idx in groups.items():
            step = max(1, MAX_BATCH_LOGITS // C)
            for a in range(0, len(idx), step):
                part = idx[a:a + step]
                for i, s in zip(part, self._batch([cands[i] for i in part]), strict=True):
                    out[i] = s
        self.evaluations += len(cands)
        return out  # type: ignore[return-value]

    def _batch(self, cands: list[Candidate]) -> list[dict]:
        from harness import reference, verdicts
        from harness.runner import CallFailed, Unsupported

        problem = batch_problem(cands, self.fmt)
        # the implementation gets the rows padded to a power of two with copies of the first
        # (dropped again): jit-compiling libraries (jax) compile per shape, and C is on a grid
        n = len(cands)
        padded = problem
        if n & (n - 1):
            padded = batch_problem(cands + [cands[0]] * ((1 << n.bit_length()) - n), self.fmt)
        self.calls += 1
        try:
            y = verdicts.check_output(padded, self.runner.call(self.quantity, padded), self.quantity)[:n]
        except Unsupported as exc:
            return [{"ulp": 0.0, "scaled": 0.0, "budget": 0.0, "unsupported": str(exc)}] * len(cands)
        except (CallFailed, ValueError) as exc:
            if len(cands) > 1:  # attribute the failure to its rows
                return [s for c in cands for s in self._batch([c])]
            inf = math.inf
            return [{"ulp": inf, "scaled": inf, "budget": inf, "error": str(exc)[:300]}]
        ex = reference.evaluate(problem, grad=self.quantity == "grad", workers=1)
        if self.quantity == "grad":
            hi, lo = ex.grad_hi, ex.grad_lo
        else:
            hi, lo = ex.loss_hi, ex.loss_lo
        return self._scores(problem, np.asarray(y), np.asarray(hi, np.float64), np.asarray(lo, np.float64))

    def _scores(self, problem: Problem, y, hi, lo) -> list[dict]:
        from harness import budgets

        fmt = self.fmt
        n = problem.num_samples
        ulps = metrics.ulp_error(y, hi, lo, fmt).reshape(n, -1)
        rf = metrics.round_to_format(hi.reshape(-1), lo.reshape(-1), fmt).reshape(hi.shape)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            yf = y.astype(np.float64)
            err = np.where(np.isfinite(yf), np.abs((yf - hi) - lo), np.inf)
            unit = 2.0 ** -fmt.precision * budgets.scales(problem, self.quantity)
            scaled = np.where(err == 0, 0.0, err / unit)
            # where the rounded reference is inf/NaN the metric is the ULP one (0 when it matches)
            scaled = np.where(np.isfinite(rf.astype(np.float64)), scaled, np.where(ulps.reshape(rf.shape) == 0, 0.0, np.inf))
            scaled = np.nan_to_num(scaled.reshape(n, -1), nan=np.inf)
            ulps = np.nan_to_num(ulps, nan=np.inf)
            ratio = np.minimum(ulps / self.b_ulp, scaled / self.b_scaled)
        out = []
        for r in range(n):
            j = int(np.argmax(ratio[r])) if self.quantity == "grad" else 0
            out.append({"ulp": float(ulps[r].max()), "scaled": float(scaled[r].max()), "budget": float(ratio[r].max()),
                        "y": float(yf.reshape(n, -1)[r, j]), "ref": float(hi.reshape(n, -1)[r, j] + lo.reshape(n, -1)[r, j]),
                        "element": j})
        return out


class Journal:
    """Rounds already evaluated, keyed (pair, phase, round); appended line by line (fsync'd)."""

    def __init__(self, path: Path, header: dict, resume: bool):
        self.path = path
        self.rounds: dict = {}
        if resume and path.exists():
            lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip().endswith("}")]
            if not lines or lines[0].get("header") != header:
                raise HuntError(f"--resume: {path} was written by another request (impl, dtypes, quantities, seed, "
                                "strategies or objective differ); use a new --out")
            for rec in lines[1:]:  # a round cut short by --evaluations is continued by a later line
                key = (rec["pair"], rec["phase"], rec["round"])
                have = self.rounds.setdefault(key, {"candidates": [], "scores": []})
                if rec.get("offset", 0) == len(have["candidates"]):
                    have["candidates"] += rec["candidates"]
                    have["scores"] += rec["scores"]
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"header": header}) + "\n")

    def get(self, key):
        return self.rounds.get(key)

    def append(self, rec: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


def search(evaluate: Evaluator, space, *, strategies: list[str], seed: int, objective: str, evaluations: int | None,
           deadline: float | None, journal: Journal, pair: str, phase: str, top: int,
           progress: Callable | None = None) -> dict:
    """One search (one pair dtype/quantity, the hunt or its uniform baseline) until
    ``evaluations`` rows or the ``deadline`` (time.monotonic()); returns the archive's best,
    the convergence (evaluations, seconds, worst so far) and the counts."""
    archive = Archive(keep=max(64, 4 * top))
    strats = make(strategies, space, seed, archive)
    done, rnd, replayed = 0, 0, 0
    t0 = time.monotonic()
    convergence = []
    while (evaluations is None or done < evaluations) and (deadline is None or time.monotonic() < deadline):
        cands, owners = [], []
        for s in strats:
            got = s.propose(ROUND)
            cands += got
            owners += [s] * len(got)
        if evaluations is not None:
            cands, owners = cands[: evaluations - done], owners[: evaluations - done]
        rec = journal.get((pair, phase, rnd)) or {"candidates": [], "scores": []}
        cand_json = [c.to_json() for c in cands]
        known = min(len(rec["candidates"]), len(cands))
        if rec["candidates"][:known] != cand_json[:known]:
            raise HuntError(f"--resume: round {rnd} of {pair} {phase} in {journal.path} does not match this "
                            "request's proposals; use a new --out")
        scores = list(rec["scores"][:known])
        replayed += known
        if known < len(cands):  # evaluate what the journal lacks (all of a new round, or the rest of a cut one)
            fresh = evaluate(cands[known:])
            journal.append({"pair": pair, "phase": phase, "round": rnd, "offset": known,
                            "candidates": cand_json[known:], "scores": fresh})
            scores += fresh
        objs = [_objective(s, objective) for s in scores]
        for s in strats:
            mine = [(c, o) for c, o, w in zip(cands, objs, owners, strict=True) if w is s]
            s.observe([c for c, _ in mine], [o for _, o in mine])
        for c, o, sc, w in zip(cands, objs, scores, owners, strict=True):
            archive.add(c, o, {**sc, "strategy": w.name})
        done += len(cands)
        rnd += 1
        convergence.append([done, round(time.monotonic() - t0, 3), archive.worst])
        if progress:
            progress(len(cands), archive.worst)
    return {"evaluations": done, "replayed": replayed, "rounds": rnd, "seconds": time.monotonic() - t0,
            "worst": archive.worst, "convergence": convergence, "top": archive.top(top, distinct=True)}


def _objective(score: dict, objective: str) -> float:
    v = score.get(objective, 0.0)
    return math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
