"""Judging in bounded memory: the cell of :func:`harness.verdicts.judge`, accumulated block by block.

A language-model loss has N = 8192 tokens x C = 128,256 classes, 1.05e9 logits (4.2 GB in
float32). The implementation necessarily returns its whole gradient (in its own dtype), but the
reference gradient as double-doubles would be 17 GB, and the whole-array judge's temporaries
several times that. Here the reference arrives in row blocks (:class:`harness.reference.Blocks`)
and each block is judged in chunks of :data:`CHUNK` elements (whole rows, or one 2**16-column
segment of a longer row) whose temporaries stay in cache; only accumulators survive a chunk:

* exact, whatever the blocking (so the cell equals the whole-array judge's, bit for bit):
  ``count``, the maxima (``ulp_max``, ``abs_max``, ``rel_max``, ``scaled_max``, with NumPy's NaN
  propagation), ``ulp_signed_max`` and ``worst`` (first in the logits' C order among equal
  keys, as ``np.argmax`` picks), ``hist`` (integer counts), ``failing``,
  ``nonfinite_mismatch``, and the special-value positions (count, mismatches, the first three
  examples);
* ``ulp_mean`` and ``normwise``: from partial sums per row segment combined exactly
  (:class:`harness.segment_sums.SegmentSums`), which ``verdicts.judge`` uses as well, so they agree
  bit for bit too;
* ``ulp_median`` and ``ulp_p99``: exact while at most ``exact_quantiles`` (default
  :data:`EXACT_QUANTILES`, 4 Mi values, 32 MB) errors have been seen, the values being kept;
  past that, from a log-linear histogram of the errors' float64 bit patterns
  (:mod:`harness.quantile_sketch`: :data:`SKETCH_BITS` mantissa bits per binade, integer counts,
  mergeable like the rest): each order statistic is replaced by the midpoint of its bin, so the
  quantile is off by at most 2**-(SKETCH_BITS + 1) = 0.2 % of the larger of the two order
  statistics it interpolates between (exact for zeros and infinities). The cell then carries
  ``quantiles_approx = 2**-(SKETCH_BITS + 1)``; without that key the quantiles are exact.

The chunks of a block are shared among threads (:func:`default_threads`), each with its own
accumulators, merged at the end; every accumulator merges exactly, so threads change nothing.

Memory: besides the implementation's output and the logits, a judge holds its accumulators
(the kept errors, at most 32 MB, or a 4 MB sketch per thread), the problem's per-row scale (M
floats) and one chunk's temporaries per thread (a few MB); the reference's block is the
caller's.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from harness import metrics, vocabulary
from harness.formats import Format
from harness.metrics import HIST_EDGES
from harness.problem import Problem
from harness.quantile_sketch import SKETCH_BITS, Allowance, Sketch
from harness.segment_sums import SEGMENT, SegmentSums, segments

#: Elements per pass of the accumulator (whole rows up to SEGMENT columns, else one row
#: segment): its few dozen temporaries, 512 KB each, stay in cache.
CHUNK = SEGMENT
#: Up to this many ULP errors the median and p99 are exact (the values are kept, 8 bytes each).
EXACT_QUANTILES = 1 << 22
_EDGES = np.asarray(HIST_EDGES)
_NBINS = len(HIST_EDGES) - 1


def _hist_bins(e: np.ndarray) -> np.ndarray:
    """The bin of HIST_EDGES each error falls in (searchsorted(edges, e, 'right') - 1, clipped):
    the edges are 0 and powers of four 2**-10 ... 2**40, so the bin is read off the exponent."""
    t = e.view(np.int64) >> 52  # biased exponent (e >= 0); 0 for 0 and subnormals, 2047 for inf
    t -= 1013  # exponent + 10
    t >>= 1
    t += 1
    np.clip(t, 0, _NBINS - 1, out=t)
    return t


def _pmax(a, b):
    """max with NumPy's NaN propagation (np.max of the union); None is 'nothing yet'."""
    if a is None:
        return b
    if b is None:
        return a
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


class Judge:
    """Accumulates the cell of one quantity ('loss' or 'grad') of one implementation.

    Feed it chunks of (output, reference hi, lo, scale) in any order of disjoint pieces with
    :meth:`add`, then read :meth:`result` (what ``verdicts.judge`` returns) and
    :meth:`special` (what ``verdicts.judge_special`` needs for this quantity)."""

    def __init__(self, problem: Problem, quantity: str, budget: dict, *,
                 exact_quantiles: int = EXACT_QUANTILES, allowance: Allowance | None = None):
        self.fmt: Format = problem.format
        self.quantity = quantity
        self.q = quantity
        self.shape = problem.output_shape if quantity == "loss" else problem.logits.shape
        self.b_ulp, self.b_scaled = (budget[vocabulary.budget_key(quantity, m)] for m in vocabulary.METRICS)
        self._bu, self._bs = max(self.b_ulp, 1e-300), max(self.b_scaled, 1e-300)
        self.unit = 2.0 ** -self.fmt.precision
        self.allowance = allowance or Allowance(exact_quantiles)
        self.count = 0
        self.hist = np.zeros(_NBINS, np.int64)
        self.ulp_max = None
        self.signed = None  # (key, layout index, signed value)
        self.abs_max = self.rel_max = self.scaled_max = None
        self.sums = SegmentSums()
        self.kept: list[np.ndarray] | None = []
        self.kept_n = 0
        self.sketch: Sketch | None = None
        self.mismatch = 0
        self.failing = 0
        self.nonfinite_y = 0
        self.worst = None  # (badness, layout index, y, ref, ulp, scaled)
        # positions where the rounded reference is inf/NaN (judge_special)
        self.sp_count = 0
        self.sp_mismatch = 0
        self.sp_examples: list[tuple[int, float, float]] = []
        self.hi_nonfinite = False

    # -- feeding -----------------------------------------------------------------------------------
    def add(self, y: np.ndarray, hi: np.ndarray, lo: np.ndarray, scale, locate, ordered: bool) -> None:
        """One piece of whole row segments (see ``segment_sums.SegmentSums``): 2-d (r, L) arrays of
        the output ``y`` (its dtype) and the reference ``hi``/``lo`` (float64); ``scale`` the
        backward-stable scale of the elements (a float, or float64 broadcasting to (r, L):
        (r, 1) per row); ``locate(pos)`` maps flat
        positions in the piece to flat indices in C order of the quantity's layout; ``ordered``:
        that map is increasing (then ties need no index arithmetic)."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            self._add(y, hi, lo, scale, locate, ordered)

    def _add(self, y, hi, lo, scale, locate, ordered: bool) -> None:
        fmt = self.fmt
        r, L = hi.shape
        if np.ndim(scale):
            scale = np.asarray(scale, np.float64)  # (r, 1) per row, (1, L) or (r, L) per element
        rf = metrics.round_to_format(hi, lo, fmt).astype(np.float64).reshape(-1)
        yf = y.astype(np.float64).reshape(-1)
        hi, lo = hi.reshape(-1), lo.reshape(-1)
        fin = np.isfinite(rf)
        pos = None
        if not fin.all():
            self._special(yf, hi, rf, fin, locate, ordered)
            pos = np.flatnonzero(fin)
            yf, hi, lo, rf = yf[pos], hi[pos], lo[pos], rf[pos]
            if np.ndim(scale):
                scale = np.broadcast_to(scale, (r, L)).reshape(-1)[pos]
        n = yf.size
        if n == 0:
            return
        self.count += n

        def where(i: np.ndarray) -> np.ndarray:
            return locate(i if pos is None else pos[i])

        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            signed = metrics._ulp_error(yf, hi, lo, rf, fmt, signed=True)
            e = np.abs(signed)
            nan = np.isnan(e)
            if nan.any():
                e[nan] = np.inf  # the unsigned error, and summarize's view of it
            self.hist += np.bincount(_hist_bins(e), minlength=_NBINS)
            (k, li), key = self._argmax(e, where, ordered)
            best = self.signed
            if best is None or key > best[0] or (key == best[0] and li < best[1]):
                self.signed = (key, li, float(signed[k]))
            self.ulp_max = key if self.ulp_max is None else max(self.ulp_max, key)
            self._quantile_data(e)
            # |y - v|: verdicts.judge's err, and metrics.abs_error where the reference is finite
            # (y inf/NaN: inf); the ratios below are formed as metrics.rel_error forms them
            err = np.abs((yf - hi) - lo)
            finite_y = np.isfinite(yf)
            nonfinite = int(n - np.count_nonzero(finite_y))
            if nonfinite:
                err[~finite_y] = np.inf
            self.abs_max = _pmax(self.abs_max, float(np.max(err)))
            av = np.abs(hi + lo)
            rel = err / av
            zero = av == 0
            if zero.any():
                rel[zero] = np.where(err[zero] == 0, 0.0, np.inf)
            self.rel_max = _pmax(self.rel_max, float(np.max(rel)))
            self.mismatch += nonfinite  # the reference is finite here: y inf/NaN is a mismatch
            self.nonfinite_y += nonfinite
            # the scaled budget, exactly as verdicts.judge forms it
            # (np.where(err == 0, 0, err / unit): err / unit is already 0 there unless unit is 0
            # or NaN, e.g. on ignored rows, so only those are patched; np.where is slow)
            unit = self.unit * scale
            if np.ndim(unit) == 2:
                e2 = err.reshape(r, L)
                scaled = (e2 / unit).reshape(-1)
                if not (unit > 0).all():
                    scaled[((e2 == 0) & ~(unit > 0)).reshape(-1)] = 0.0
            elif np.ndim(unit):
                scaled = err / unit
                if not (unit > 0).all():
                    scaled[(err == 0) & ~(unit > 0)] = 0.0
            else:  # one scale for the piece (a row segment)
                scaled = err / unit
                if not unit > 0:
                    scaled[err == 0] = 0.0
            self.scaled_max = _pmax(self.scaled_max, float(np.max(scaled)))
            ok = (e <= self.b_ulp) | (scaled <= self.b_scaled)
            self.failing += int(n - np.count_nonzero(ok))
            badness = np.minimum(e / self._bu, scaled / self._bs)
            nan = np.isnan(badness)
            if nan.any():
                badness[nan] = np.inf
            (k, li), b = self._argmax(badness, where, ordered)
            if self.worst is None or b > self.worst[0] or (b == self.worst[0] and li < self.worst[1]):
                self.worst = (b, li, float(yf[k]), float(hi[k] + lo[k]), float(e[k]), float(scaled[k]))
            # mean and normwise: per-row partial sums over the uncompressed piece
            if pos is None:
                self.sums.add(e.reshape(r, L), yf.reshape(r, L), hi.reshape(r, L), lo.reshape(r, L), n, nonfinite > 0)
            else:
                parts = []
                for v in (e, np.where(finite_y, yf, 0.0), hi, lo):
                    full = np.zeros(r * L)
                    full[pos] = v
                    parts.append(full.reshape(r, L))
                self.sums.add(*parts, n, nonfinite > 0)

    @staticmethod
    def _argmax(a: np.ndarray, where, ordered: bool) -> tuple[tuple[int, int], float]:
        """((chunk position, layout index), value) of the maximum of ``a`` (no NaN), the first in
        layout order among equals."""
        k = int(np.argmax(a))
        v = float(a[k])
        if ordered:
            return (k, int(where(np.array([k]))[0])), v
        ties = np.flatnonzero(a == a[k])
        li = where(ties)
        j = int(np.argmin(li))
        return (int(ties[j]), int(li[j])), v

    def _quantile_data(self, e: np.ndarray) -> None:
        if self.kept is not None and self.allowance.take(e.size):
            self.kept.append(e.copy())
            self.kept_n += e.size
            return
        self._to_sketch()
        self.sketch.add(e)

    def _to_sketch(self) -> None:
        if self.sketch is None:
            self.sketch = Sketch()
            for part in self.kept or ():
                self.sketch.add(part)
            self.kept = None

    def merge(self, other: Judge) -> None:
        """Take in what another judge of the same cell saw (disjoint pieces; any order)."""
        self.count += other.count
        self.hist += other.hist
        if other.ulp_max is not None:
            self.ulp_max = other.ulp_max if self.ulp_max is None else max(self.ulp_max, other.ulp_max)
        if other.signed is not None and (self.signed is None or other.signed[0] > self.signed[0] or
                                         (other.signed[0] == self.signed[0] and other.signed[1] < self.signed[1])):
            self.signed = other.signed
        self.abs_max = _pmax(self.abs_max, other.abs_max)
        self.rel_max = _pmax(self.rel_max, other.rel_max)
        self.scaled_max = _pmax(self.scaled_max, other.scaled_max)
        self.sums.merge(other.sums)
        if self.kept is not None and other.kept is not None and not self.allowance.over:
            self.kept += other.kept
            self.kept_n += other.kept_n
        else:
            self._to_sketch()
            other._to_sketch()
            self.sketch.merge(other.sketch)
        self.mismatch += other.mismatch
        self.failing += other.failing
        self.nonfinite_y += other.nonfinite_y
        if other.worst is not None and (self.worst is None or other.worst[0] > self.worst[0] or
                                        (other.worst[0] == self.worst[0] and other.worst[1] < self.worst[1])):
            self.worst = other.worst
        self.sp_count += other.sp_count
        self.sp_mismatch += other.sp_mismatch
        self.sp_examples = sorted(self.sp_examples + other.sp_examples)[:3]
        self.hi_nonfinite |= other.hi_nonfinite

    def _special(self, yf, hi, rf, fin, locate, ordered: bool) -> None:
        sp = np.flatnonzero(~fin)
        self.hi_nonfinite |= bool((~np.isfinite(hi[sp])).any())
        ys, rs = yf[sp], rf[sp]
        same = (np.isnan(ys) & np.isnan(rs)) | (ys == rs)
        self.sp_count += sp.size
        bad = np.flatnonzero(~same)
        self.sp_mismatch += bad.size
        if not bad.size:
            return
        if ordered and len(self.sp_examples) >= 3:
            return  # later chunks come later in layout order
        cand = bad[:3] if ordered else bad
        li = locate(sp[cand])
        ex = self.sp_examples + [(int(i), float(ys[c]), float(rs[c])) for i, c in zip(li.tolist(), cand.tolist())]
        self.sp_examples = sorted(ex)[:3]

    # -- results -----------------------------------------------------------------------------------
    def _index(self, flat: int) -> list[int]:
        return [int(v) for v in np.unravel_index(flat, self.shape)] if self.shape else []

    def quantiles(self) -> tuple[float, float]:
        if self.allowance.over:
            self._to_sketch()
        if self.sketch is None:
            return tuple(metrics._quantile(np.concatenate(self.kept), [0.5, 0.99]))
        return tuple(self.sketch.quantiles([0.5, 0.99], self.count, self.ulp_max))

    def metrics(self) -> dict:
        n = self.count
        if n:
            med, p99 = self.quantiles()
            m = {
                "count": n,
                "ulp_max": self.ulp_max,
                "ulp_median": med,
                "ulp_p99": p99,
                "ulp_mean": self.sums.mean_value(),
                "ulp_signed_max": self.signed[2],
                "bits_max": math.log2(1.0 + self.ulp_max),
                "abs_max": self.abs_max,
                "rel_max": self.rel_max,
                "normwise": self.sums.normwise(),
                "nonfinite_mismatch": self.mismatch,
            }
        else:
            m = {"count": 0}
        m["hist"] = {"edges": [float(v) for v in HIST_EDGES], "counts": [int(c) for c in self.hist]}
        m["scaled_max"] = self.scaled_max if n else None
        if n:
            _, li, y, ref, ulp, scaled = self.worst
            m["worst"] = {"index": self._index(li), "y": y, "ref": ref, "ulp": ulp, "scaled": scaled}
        m["failing"] = self.failing
        if n and self.sketch is not None:
            m["quantiles_approx"] = 2.0 ** -(SKETCH_BITS + 1)
        return m

    def result(self) -> tuple[str, str | None, dict]:
        from harness.verdicts import verdict

        m = self.metrics()
        status, message = verdict(self.quantity, m, self.failing, self.nonfinite_y, self.count,
                                  self.b_ulp, self.b_scaled)
        return status, message, m

    def special(self) -> dict:
        """This quantity's part of the special-value cell: positions where RN_F(reference) is
        inf/NaN, how many the output misses, the first three misses (index, y, ref)."""
        return {"count": self.sp_count, "mismatch": self.sp_mismatch,
                "examples": [{"index": self._index(i), "y": y, "ref": r} for i, y, r in self.sp_examples]}


# -- layouts ---------------------------------------------------------------------------------------


def row_block(arr: np.ndarray, problem: Problem, rows: slice) -> np.ndarray:
    """Rows ``rows`` of ``arr`` (in the logits' layout) as an (r, C) array, class axis last, like
    ``problem.rows()[0][rows]`` but without touching the other rows (a view for (C,) and
    (N, C), a copy of the block alone for K-dim inputs)."""
    if arr.ndim == 1:
        return arr.reshape(1, -1)[rows]
    if arr.ndim == 2:
        return arr[rows]
    moved = np.moveaxis(arr, 1, -1)  # (N, d1, ..., dk, C), a view
    idx = np.unravel_index(np.arange(rows.start, rows.stop), moved.shape[:-1])
    return moved[idx]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _locator(problem: Problem, row0: int, col0: int, width: int):
    """The map from flat positions p in a piece of rows row0, row0 + 1, ... and columns
    [col0, col0 + width) of problem.rows() to flat indices in C order of the logits' layout,
    and whether it is increasing."""
    C = problem.num_classes
    if problem.logits.ndim <= 2:
        if width == C:
            base = row0 * C
            return (lambda p: base + np.asarray(p, np.int64)), True
        base = row0 * C + col0
        return (lambda p: base + np.asarray(p, np.int64)), True  # a single row's segment
    D = math.prod(problem.logits.shape[2:])

    def locate(p):
        q = np.asarray(p, np.int64)
        m = row0 + q // width
        c = col0 + q % width
        n, s = np.divmod(m, D)
        return (n * C + c) * D + s

    return locate, False


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < n:
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="xent-judge")
        return _POOL


def default_threads() -> int:
    """Threads of a gradient judge: ``XENT_JUDGE_THREADS``, else the cores (at most 16). NumPy
    releases the GIL inside each pass over a chunk, so the chunks of a block run in parallel."""
    try:
        n = int(os.environ.get("XENT_JUDGE_THREADS", "").strip() or 0)
    except ValueError:
        n = 0
    return n if n >= 1 else min(16, os.cpu_count() or 1)


class GradJudge:
    """The gradient cell of one implementation's output ``y`` (logits' layout), fed the
    reference's :class:`~harness.reference.GradBlock` s in any order. The chunks of each block
    are shared among ``threads`` judges (one per thread, merged at the end: every accumulator
    merges exactly, so the cell does not depend on the threads either)."""

    def __init__(self, problem: Problem, y: np.ndarray, budget: dict, *, row_scale: np.ndarray | None = None,
                 exact_quantiles: int = EXACT_QUANTILES, chunk: int = CHUNK, threads: int | None = None):
        from harness.budgets import grad_row_scales

        self.problem = problem
        self.y = y
        self.budget = budget
        self.exact_quantiles = exact_quantiles
        allowance = Allowance(exact_quantiles)
        self.threads = max(1, threads or default_threads())
        self.parts = [Judge(problem, "grad", budget, allowance=allowance) for _ in range(self.threads)]
        self.row_scale = grad_row_scales(problem) if row_scale is None else row_scale
        self.chunk = chunk
        self._merged: Judge | None = None

    def _pieces(self, block):
        """(y, hi, lo, scale, locate, ordered) of each chunk of a block, in layout order."""
        rows, C = block.rows, self.problem.num_classes
        r = rows.stop - rows.start
        if r <= 0 or C == 0:
            return
        yb = row_block(self.y, self.problem, rows)
        sc = self.row_scale[rows]
        if C <= SEGMENT:
            k = max(1, self.chunk // C)
            for a in range(0, r, k):
                b = min(r, a + k)
                locate, ordered = _locator(self.problem, rows.start + a, 0, C)
                yield yb[a:b], _f64(block.hi[a:b]), _f64(block.lo[a:b]), sc[a:b, None], locate, ordered
            return
        for i in range(r):
            for seg in segments(C):
                locate, ordered = _locator(self.problem, rows.start + i, seg.start, seg.stop - seg.start)
                yield (yb[i:i + 1, seg], _f64(block.hi[i:i + 1, seg]), _f64(block.lo[i:i + 1, seg]),
                       float(sc[i]), locate, ordered)

    def add(self, block) -> None:
        """Judge one :class:`~harness.reference.GradBlock` (rows ``block.rows``, (r, C) arrays)."""
        if self._merged is not None:
            raise RuntimeError("GradJudge: add() after result()")
        pieces = list(self._pieces(block))
        T = min(self.threads, len(pieces))
        if T <= 1:
            for piece in pieces:
                self.parts[0].add(*piece)
            return
        # contiguous runs of chunks per thread, so each judge sees its chunks in layout order
        bounds = np.linspace(0, len(pieces), T + 1).astype(int)

        def work(t: int) -> None:
            for piece in pieces[bounds[t]:bounds[t + 1]]:
                self.parts[t].add(*piece)

        for f in [_pool(self.threads).submit(work, t) for t in range(T)]:
            f.result()

    def take(self, judges: list[Judge]) -> None:
        """The cell from judges of this output that saw disjoint row blocks elsewhere (one per
        Dask worker task, harness.executor), instead of :meth:`add`: merged in order, and the
        quantiles exact only while all their kept errors together fit this judge's allowance,
        as when one process judges every block (past it, the sketch of all of them)."""
        if self._merged is not None:
            raise RuntimeError("GradJudge: take() after result()")
        j = self.parts[0]
        for other in judges:
            j.merge(other)
        if j.kept is not None and j.kept_n > j.allowance.cap:
            j.allowance.over = True
            j._to_sketch()
        self.parts = [j]

    @property
    def judge(self) -> Judge:
        if self._merged is None:
            j = self.parts[0]
            for other in self.parts[1:]:
                j.merge(other)
            self._merged = j
        return self._merged

    def result(self) -> tuple[str, str | None, dict]:
        return self.judge.result()

    def special(self) -> dict:
        return self.judge.special()

    @property
    def hi_nonfinite(self) -> bool:
        return self.judge.hi_nonfinite


def judge_grad(problem: Problem, y: np.ndarray, blocks: Iterable, budget: dict, **kwargs) -> tuple[str, str | None, dict]:
    """(status, message, metrics) of the gradient ``y`` against reference blocks: what
    ``verdicts.judge(problem, 'grad', y, grad_hi, grad_lo, budget)`` gives, in bounded memory."""
    j = GradJudge(problem, y, budget, **kwargs)
    for b in blocks:
        j.add(b)
    return j.result()


def judge_loss(problem: Problem, y: np.ndarray, hi, lo, budget: dict, **kwargs) -> tuple[str, str | None, dict]:
    """The loss cell through the same accumulator: the loss (at most N values, C order) is one
    row, judged in segments."""
    from harness.budgets import scales

    j = Judge(problem, "loss", budget, **kwargs)
    hi = _f64(hi).reshape(1, -1)
    lo = _f64(lo).reshape(1, -1)
    scale = _f64(scales(problem, "loss")).reshape(-1)
    y = np.asarray(y).reshape(1, -1)
    for seg in segments(hi.shape[1]):
        a = seg.start
        j.add(y[:, seg], hi[:, seg], lo[:, seg], scale[None, seg], (lambda p, a=a: a + np.asarray(p, np.int64)), True)
    return j.result()


def judge_special(problem: Problem, outputs: dict, loss_hi, loss_lo, grad: GradJudge | Judge | None
                  ) -> tuple[str, str | None, dict] | None:
    """``verdicts.judge_special`` with the gradient's part taken from a judge that saw the whole
    gradient (None: no gradient output, only the loss is checked)."""
    from harness.verdicts import special_part, special_verdict

    parts = [special_part(problem, np.asarray(outputs["loss"]), loss_hi, loss_lo, "loss")]
    if grad is not None and outputs.get("grad") is not None:
        g = grad.special()
        parts.append((g["count"], g["mismatch"], [{"quantity": "grad", **e} for e in g["examples"]]))
    return special_verdict(parts)
