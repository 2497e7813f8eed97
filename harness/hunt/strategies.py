"""The hunt's search strategies. Each proposes candidate rows (:class:`~harness.hunt.space.
Candidate`) and observes their scores (the objective: larger is worse); all are deterministic
functions of their seed and of the scores they observe, which is what makes a run replayable
from its journal. Where each comes from is in docs/hunt.md.

* ``uniform`` — uniform over bit patterns within each axis (Herbie's sampling);
* ``bisection`` — recursive bisection of parameter boxes keeping the top-k sub-boxes per level
  (Zimmermann's accuracy tables, CORE-MATH's worst-case search), restarted when boxes are spent;
* ``refine`` — local refinement of the best inputs so far: single logits moved by a few ULPs, the
  gap/offset/scale moved by small relative steps, the target moved, C changed, a new seed; the
  archive keeps what improves (a (1+λ) hill-climb);
* ``families`` — structured families: one dominant logit with the gap near each format's
  thresholds, near-ties, offsets near the exp-overflow threshold, rows mixing huge and tiny
  logits, large C with a dominant logit.
"""

from __future__ import annotations

import math

import numpy as np

from harness.hunt.space import BODIES, MAX_C, Candidate, Space, from_ordinal, ordinal

NAMES = ("uniform", "bisection", "refine", "families")


class Archive:
    """The best candidates seen (top ``keep``, distinct), shared by the strategies."""

    def __init__(self, keep: int = 64):
        self.keep = keep
        self.entries: list[tuple[float, int, Candidate, dict]] = []  # (score, order, cand, score dict)
        self._seen: set = set()
        self.order = 0
        self.worst = -math.inf

    def add(self, cand: Candidate, score: float, detail: dict) -> None:
        self.order += 1
        self.worst = max(self.worst, score)
        key = repr(cand)
        if key in self._seen:
            return
        if len(self.entries) >= self.keep and score <= self.entries[-1][0]:
            return
        self._seen.add(key)
        self.entries.append((score, self.order, cand, detail))
        self.entries.sort(key=lambda e: (-e[0], e[1]))
        while len(self.entries) > self.keep:
            self._seen.discard(repr(self.entries.pop()[2]))

    def top(self, k: int, *, distinct: bool = False):
        """The ``k`` best; ``distinct``: at most one per (body, C, smoothing or not, gap to the
        unit), so a report's top rows are different inputs, not one row's refinements."""
        if not distinct:
            return self.entries[:k]
        out, seen = [], set()
        for e in self.entries:
            c = e[2]
            sig = (c.body, c.C, c.eps > 0, None if c.gap is None else round(c.gap))
            if sig not in seen:
                seen.add(sig)
                out.append(e)
            if len(out) == k:
                break
        return out


class Strategy:
    name = ""

    def __init__(self, space: Space, rng: np.random.Generator, archive: Archive):
        self.space, self.rng, self.archive = space, rng, archive

    def propose(self, n: int) -> list[Candidate]:
        raise NotImplementedError

    def observe(self, cands: list[Candidate], scores: list[float]) -> None:
        pass


class Uniform(Strategy):
    name = "uniform"

    def propose(self, n):
        return [self.space.uniform(self.rng) for _ in range(n)]


class Bisection(Strategy):
    """Boxes over the axes' bit-pattern ordinals (C, scale, offset, the gap when the box has
    one, the smoothing when it is an option), one root box per body x (gap or not). A level
    splits every kept box in two along the next axis, samples ``m`` points in each half, and
    keeps the ``k`` halves with the largest score seen; a box narrower than ``m`` doubles on
    every axis, or a level with nothing above 0, restarts from the roots."""

    name = "bisection"

    def __init__(self, space, rng, archive, *, k: int = 4, m: int = 8):
        super().__init__(space, rng, archive)
        self.k, self.m = k, m
        self.level = 0
        self.frontier = self._roots()
        self.children: list[dict] = []
        self.pending: list[tuple[int, Candidate]] = []
        self.owner: dict[str, int] = {}

    def _roots(self):
        out = []
        for body in BODIES:
            for has_gap in (False, True):
                names = ["C", "scale", "offset"] + (["gap"] if has_gap else []) + (["eps"] if self.space.smoothing else [])
                out.append({"body": body, "spans": {a: self.space.axes[a].span() for a in names}, "best": 0.0})
        return out

    def _next_level(self):
        if self.children:
            ranked = sorted(range(len(self.children)), key=lambda i: (-self.children[i]["best"], i))
            kept = [self.children[i] for i in ranked[: self.k]]
            spent = all(all(b - a < self.m for a, b in box["spans"].values()) for box in kept)
            self.frontier = self._roots() if spent or kept[0]["best"] <= 0 else kept
            self.level = 0 if self.frontier is not kept else self.level + 1
        self.children = []
        for box in self.frontier:
            names = list(box["spans"])
            axis = names[self.level % len(names)]
            a, b = box["spans"][axis]
            mid = a + (b - a) // 2
            for lo, hi in ((a, mid), (mid + 1 if b > a else a, b)):
                self.children.append({"body": box["body"], "spans": {**box["spans"], axis: (lo, max(lo, hi))}, "best": 0.0})
        for i, child in enumerate(self.children):
            for _ in range(self.m):
                self.pending.append((i, self._sample(child)))

    def _sample(self, box) -> Candidate:
        v = {a: from_ordinal(int(self.rng.integers(lo, hi, endpoint=True))) for a, (lo, hi) in box["spans"].items()}
        return self.space.finish(self.rng, box["body"], v["C"], v["scale"], v["offset"], v.get("gap"),
                                 v.get("eps", 0.0))

    def propose(self, n):
        out = []
        while len(out) < n:
            if not self.pending:
                self._next_level()
            i, c = self.pending.pop(0)
            self.owner[repr(c)] = i
            out.append(c)
        return out

    def observe(self, cands, scores):
        for c, s in zip(cands, scores, strict=True):
            i = self.owner.pop(repr(c), None)
            if i is not None and i < len(self.children):
                self.children[i]["best"] = max(self.children[i]["best"], s)


class Refine(Strategy):
    """Mutants of the archive's best (a few parents, round robin); before anything is known,
    uniform samples."""

    name = "refine"

    def __init__(self, space, rng, archive, *, parents: int = 8):
        super().__init__(space, rng, archive)
        self.parents = parents

    def _mutate(self, c: Candidate) -> Candidate:
        rng = self.rng
        move = int(rng.integers(8))
        step = lambda v: v * (1.0 + float(rng.choice((-1, 1))) * 2.0 ** -float(rng.uniform(3, 40)))  # noqa: E731
        if move <= 2:  # single logits by a few ULPs (the move CORE-MATH's local search makes)
            nudge = (int(rng.integers(c.C)), int(rng.choice((-4, -3, -2, -1, 1, 2, 3, 4))))
            return c.with_(nudges=(*c.nudges[-5:], nudge))
        if move == 3 and c.gap is not None:
            return c.with_(gap=step(c.gap) if c.gap else float(rng.uniform(-1, 1)))
        if move == 3:
            return c.with_(offset=step(c.offset) if c.offset else float(rng.uniform(-1, 1)))
        if move == 4:
            return c.with_(scale=max(1e-6, step(c.scale)))
        if move == 5:
            return c.with_(target=float(rng.random()))
        if move == 6:
            C = int(rng.choice((c.C - 1, c.C + 1, c.C * 2, c.C // 2)))
            return c.with_(C=min(MAX_C, max(1, C)))
        if self.space.smoothing and rng.random() < 0.3:
            return c.with_(eps=float(rng.random()) if c.eps == 0 else 0.0)
        return c.with_(seed=int(rng.integers(0, 2**31)))

    def propose(self, n):
        best = [e[2] for e in self.archive.top(self.parents) if e[0] > 0]
        if not best:
            return [self.space.uniform(self.rng) for _ in range(n)]
        return [self._mutate(best[i % len(best)]) for i in range(n)]


class Families(Strategy):
    """Structured families around the places where the formats change regime."""

    name = "families"

    def _gap_thresholds(self):
        f = self.space.fmt
        return [-math.log(f.tiny), -math.log(f.min_subnormal), f.precision * math.log(2.0), f.exp_overflow,
                (f.precision + 1) * math.log(2.0), 2 * f.exp_overflow]

    def _bits(self, lo, hi):
        return from_ordinal(int(self.rng.integers(ordinal(lo), ordinal(hi), endpoint=True)))

    def _one(self, i: int) -> Candidate:
        rng, sp, f = self.rng, self.space, self.space.fmt
        fam = i % 5
        sign = float(rng.choice((-1.0, 1.0)))
        if fam == 0:  # one dominant logit, the gap near a threshold (or anywhere in [0, 1e4])
            thr = self._gap_thresholds()
            gap = thr[int(rng.integers(len(thr)))] + float(rng.uniform(-2, 2)) if rng.random() < 0.7 else self._bits(0.0, 1e4)
            return sp.finish(rng, "normal", self._bits(1.0, 64.0), self._bits(1e-3, 10.0), sign * self._bits(1e-3, 1e3), gap)
        if fam == 1:  # near-ties around an offset of any size
            off = sign * (float(rng.choice((1.0, 100.0, f.exp_overflow, f.max / 4))) if rng.random() < 0.5
                          else self._bits(f.tiny, f.max))
            gap = None if rng.random() < 0.5 else float(rng.uniform(-3, 3))
            return sp.finish(rng, "ties", self._bits(2.0, float(MAX_C)), float(rng.integers(1, 9)), off, gap)
        if fam == 2:  # offsets near the exp-overflow threshold
            off = sign * f.exp_overflow + float(rng.uniform(-4, 4)) * (1.0 if rng.random() < 0.5 else 2.0 ** -8)
            gap = None if rng.random() < 0.5 else float(rng.uniform(-20, 20))
            return sp.finish(rng, "normal", self._bits(1.0, float(MAX_C)), self._bits(1e-4, 4.0), off, gap)
        if fam == 3:  # rows mixing huge and tiny logits
            return sp.finish(rng, "mix", self._bits(2.0, 512.0), self._bits(1e-3, 1e3), sign * self._bits(1.0, f.max / 2),
                             None if rng.random() < 0.5 else self._bits(0.0, 1e4))
        thr = self._gap_thresholds()  # large C with a dominant logit
        gap = thr[int(rng.integers(len(thr)))] + float(rng.uniform(-2, 2))
        return sp.finish(rng, "normal", self._bits(512.0, float(MAX_C)), self._bits(1e-3, 4.0), self._bits(1e-3, 1e2), gap)

    def propose(self, n):
        return [self._one(i) for i in range(n)]


CLASSES = {cls.name: cls for cls in (Uniform, Bisection, Refine, Families)}


def make(names, space: Space, seed: int, archive: Archive) -> list[Strategy]:
    """The named strategies, each with its own generator derived from ``seed`` and its name."""
    return [CLASSES[n](space, np.random.default_rng([seed, NAMES.index(n)]), archive) for n in names]
