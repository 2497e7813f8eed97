"""``numpy``: an accurate and fast softmax cross-entropy in plain NumPy.

Formulas. Per row of logits x (target y), every result is a sum of non-negative terms, so
tiny losses and gradient entries keep their digits: logits [20, 0] in float32 give
2.0611537e-9, [200, 0] in float64 1.3838965267367376e-87 (and a gradient of the same size).

* Index targets without label smoothing (the common case): the *target* entry is removed from
  the row sum, T_y = sum_{j != y} e^{x_j}, and with e_y = e^{x_y} (float64)

      -log p_y = log1p(T_y / e_y),   p_y - 1 = -T_y / (T_y + e_y),   p_j = e^{x_j} / (T_y + e_y).

  No argmax pass and no x - m rounding. The exponentials are unshifted; this is used only
  where a check proves they lose nothing against exp(x - m): T_y finite and >= C * tiny, e_y
  finite and normal (or x_y = -inf), and T_y + e_y at least the largest gradient coefficient.
* Otherwise (label smoothing, probability targets, or a block failing that check) the max
  shift, with m = x_k the row max: the tail T = sum_{j != k} e^{x_j - m} is summed with the max
  entry removed, so log sum_j e^{x_j - m} = log1p(T), and

      -log p_y = (m - x_y) + log1p(T),   p_y - 1 = -(T - expm1(x_y - m)) / (1 + T),
      sum_c w_c (-log p_c) = W log1p(T) - sum_c w_c (x_c - m)   (label smoothing),
      sum_c b_c (-log p_c) = B log1p(T) - sum_c b_c (x_c - m)   (probability targets),

  with b = w ((1 - eps) t + eps / C), B = sum_c b_c, W = sum_c w_c. The shift itself is exact:
  where 0 <= m <= log(max) - log C - 1, e^{x_j} is taken unshifted (no overflow, no more
  underflow than e^{x_j - m}) and exp(-m) is applied to the row sums in float64; elsewhere
  x_j - m is formed exactly (in float64 for float32 and 16-bit inputs, with a TwoSum correction
  exp(s + t) = exp(s) (1 + t) for float64 inputs). Rounding x_j - m in the input precision, as
  the textbook form does, costs |x_j - m| * u relative error in e_j: 32 ulps in float32 when
  the logits spread over 32..64.
* float16 / bfloat16 are computed in float32 and rounded once at the end; float32 in float32
  with every per-row quantity (sums, the loss, the gradient's row factor) in float64; float64
  in float64. Row sums use einsum over chunks of at most 4096 elements, combined in float64.
  Observed against a 100-digit oracle: losses within 3 u, gradients within 4.5 u (u = 2^-53
  or 2^-24), i.e. about 2 ulps.

Speed (the timed callable from :meth:`NumpyStable.prepare`; rows, tiling and scratch are set
up there):

* Rows are processed in blocks of ``tile_elems`` elements (default 4 MiB of the compute dtype);
  each pass over a block is one ufunc with ``out=``: exp, einsum row sum and, for the backward,
  one in-place multiply (the argmax method adds an argmax, taken on the exponentials: NumPy's
  argmax is twice as slow on the read-only arrays a Problem holds). The forward reads the
  logits from memory once; the per-call overhead of NumPy (~1-2 us) is amortized by the size
  of the blocks.
* Forward and backward are fused: the exponentials are written straight into the gradient
  array and scaled in place by their row factor while the block is in cache; the loss and the
  gradient's target (and argmax) entries are then computed per row range, vectorized.
* Threads (a pool; NumPy releases the GIL inside ufuncs) claim chunks of rows one at a time
  (guided: each takes 1/(2T) of the blocks left, down to single blocks) and finish the rows of
  each chunk; a thread slowed by other work on its core takes fewer chunks. Rows longer than ``max_tile_cols`` are cut into column tiles whose
  sums (and maxima) are combined afterwards (sum = sum_j s_j exp(shift_j - m)); with too few
  rows to balance (fewer than 4 per thread) the column tiles are what the threads claim.
* Threads: ``NumpyStable(num_threads=...)`` / the ``num_threads`` attribute, else the
  environment variable ``XENT_NUM_THREADS``, else ``os.cpu_count()``.

Specials follow ``torch.nn.functional.cross_entropy`` in float64: a -inf logit contributes 0;
a -inf target logit gives +inf; +inf or NaN anywhere in a row, or a row that is all -inf, makes
that row's loss and gradient NaN (the gradient even when the row is ignored, as PyTorch's
log_softmax backward does); label smoothing or probability targets with a -inf logit give +inf,
or NaN where that class's coefficient is 0 (0 * inf); with eps = 1 a -inf target logit gives
NaN ((1 - eps) * inf); 'mean' with zero total weight gives NaN (or ±inf for a nonzero
numerator), and its gradient reproduces PyTorch's (0 on ignored rows, NaN or inf on the others).
A NaN or infinite class weight or probability target would make the rearranged sums above
inf - inf, so such problems follow PyTorch's own chain of operations in float64 instead
(:class:`_IeeePlan`); problems without samples or classes (M = 0 or C = 0) return PyTorch's
fixed results (:mod:`harness.implementations._degenerate`).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np

from harness.formats import compute_dtype
from harness.implementations._degenerate import degenerate_result, is_degenerate
from harness.problem import Problem
from harness.registry import Implementation, default_threads

_F64 = np.dtype(np.float64)
_TINY64 = float(np.finfo(np.float64).tiny)
_MAX64 = float(np.finfo(np.float64).max)
_BF16 = np.dtype(ml_dtypes.bfloat16)

#: Bytes of compute-dtype data per block of rows. Larger blocks mean fewer NumPy calls, whose
#: fixed cost (~1-2 us each, plus a GIL hand-off between threads, several us on a VM) is what
#: blocks amortize; the working set (the block and its exponentials) still fits a shared L3.
#: Measured on 2 cores: 4 MiB blocks beat 1 MiB (and 256 KiB by far) for every shape.
DEFAULT_TILE_BYTES = 1 << 22
#: Longest row handled whole; longer rows are cut into column tiles of at most this many.
DEFAULT_MAX_TILE_COLS = 1 << 18
#: Row sums are taken by einsum over chunks of this many elements, combined in float64.
_SUM_CHUNK = 4096
#: With fewer than 4 rows per thread, rows of at least twice this are split by columns too.
_MIN_COLS_PER_THREAD = 4096
#: Fewest elements worth a thread (a hand-off to the pool costs tens of microseconds).
DEFAULT_MIN_TASK_ELEMS = 1 << 15

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="xent-numpy")
        return pool


def _quiet(fn: Callable[[], None]) -> Callable[[], None]:
    """np.errstate is per thread: silence the expected inf/NaN warnings inside worker tasks."""

    def task():
        with np.errstate(all="ignore"):
            fn()

    return task


def _parallel(tasks: list[Callable[[], None]], pool: ThreadPoolExecutor | None) -> None:
    """Run the tasks: all but the first on the pool, the first in the calling thread."""
    if len(tasks) == 1 or pool is None:
        for task in tasks:
            task()
        return
    futures = [pool.submit(_quiet(task)) for task in tasks[1:]]
    try:
        tasks[0]()
    finally:
        for fut in futures:
            fut.result()


def round_to(values, dtype) -> np.ndarray:
    """Round float64 values once (to nearest even) into ``dtype``.

    NumPy rounds float64 -> float16/float32 correctly, but ml_dtypes converts float64 ->
    bfloat16 through float32, which double-rounds; for bfloat16 we round to float32 *to odd*
    first, after which the float32 -> bfloat16 rounding is correct.
    """
    values = np.asarray(values, dtype=_F64)
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype != _BF16:
            return values.astype(dtype)
        y = values.astype(np.float32)
        y64 = y.astype(_F64)
        inexact = (y64 != values) & np.isfinite(y64) & np.isfinite(values)
        if inexact.any():
            toward_zero = np.where(np.abs(y64) > np.abs(values), np.nextafter(y, np.float32(0)), y)
            bits = np.asarray(toward_zero, np.float32).view(np.uint32)
            y = np.where(inexact, bits | np.uint32(1), y.view(np.uint32)).view(np.float32)
        return y.astype(_BF16)


try:  # einsum's C entry point, without the Python wrapper (saves ~1.5 us a call)
    from numpy._core.multiarray import c_einsum as _c_einsum
except ImportError:  # pragma: no cover - other NumPy layouts
    _c_einsum = np.einsum


def _rowsum(a: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j a[i, j] in a's dtype: einsum's SIMD sum, chunked and combined in float64
    beyond 8192 columns (a single einsum accumulates ~n/64 terms per lane)."""
    n = a.shape[1]
    if n <= 2 * _SUM_CHUNK:
        _c_einsum("ij->i", a, out=out)
        return
    q, rem = divmod(n, _SUM_CHUNK)
    parts = np.einsum("ijk->ij", a[:, : q * _SUM_CHUNK].reshape(a.shape[0], q, _SUM_CHUNK))
    total = parts.sum(axis=1, dtype=_F64)
    if rem:
        total += np.einsum("ij->i", a[:, q * _SUM_CHUNK :])
    out[...] = total


def _rowdot(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[i] = sum_j a[i, j] b[j] (b 1-D) or a[i, j] b[i, j] (b 2-D), chunked like _rowsum."""
    spec = "ij,j->i" if b.ndim == 1 else "ij,ij->i"
    n = a.shape[1]
    if n <= 2 * _SUM_CHUNK:
        _c_einsum(spec, a, b, out=out)
        return
    total = np.zeros(a.shape[0], dtype=_F64)
    for lo in range(0, n, _SUM_CHUNK):
        hi = min(n, lo + _SUM_CHUNK)
        total += np.einsum(spec, a[:, lo:hi], b[lo:hi] if b.ndim == 1 else b[:, lo:hi])
    out[...] = total


_F16 = np.dtype(np.float16)


def _f32_to_f16(src: np.ndarray, out: np.ndarray, tmp: list[np.ndarray]) -> None:
    """out = src rounded to float16 (to nearest even), vectorized bit arithmetic after F.
    Giesen's float_to_half_fast3_rtne; bit for bit NumPy's cast, which is a scalar loop (2.5 ns
    an element) and 25 times slower still when results are subnormal (it signals underflow by
    computing one). ``tmp``: four uint32 arrays of src's shape."""
    u = src.view(np.uint32)
    sign = np.bitwise_and(u, np.uint32(0x80000000), out=tmp[0])
    a = np.bitwise_xor(u, sign, out=tmp[1])  # |src|
    res = np.right_shift(a, np.uint32(13), out=tmp[2])  # normal results: round, rebias
    res &= np.uint32(1)
    res += a
    res += np.uint32((-(112 << 23) + 0xFFF) & 0xFFFFFFFF)
    res >>= np.uint32(13)
    if np.minimum.reduce(a, axis=None) < np.uint32(113 << 23):  # subnormal or zero results
        sub = np.add(a.view(np.float32), np.float32(0.5), out=tmp[3].view(np.float32))
        sub = sub.view(np.uint32)
        sub -= np.uint32(126 << 23)
        np.copyto(res, sub, where=a < np.uint32(113 << 23))
    if np.maximum.reduce(a, axis=None) >= np.uint32(143 << 23):  # overflow, inf, NaN
        big = np.where(a > np.uint32(255 << 23), np.uint32(0x7E00), np.uint32(0x7C00))
        np.copyto(res, big, where=a >= np.uint32(143 << 23))
    sign >>= np.uint32(16)
    res |= sign
    np.copyto(out.view(np.uint16), res, casting="unsafe")


def _to_f32(src: np.ndarray, out: np.ndarray) -> None:
    """out = src (float16 or bfloat16) in float32, exactly. (NumPy's float16 cast is a scalar
    loop, 1.7 ns an element, but it releases the GIL; a table lookup with np.take is a little
    faster alone and holds the GIL, which serializes the threads.)"""
    np.copyto(out, src, casting="unsafe")


def _two_diff(a, b) -> tuple[np.ndarray, np.ndarray]:
    """s = fl(a - b) and its exact rounding error t = (a - b) - s (Knuth's TwoSum), float64;
    t is 0 where a or b is not finite."""
    a = np.asarray(a, _F64)
    nb = -np.asarray(b, _F64)
    s = a + nb
    bb = s - a
    t = (a - (s - bb)) + (nb - bb)
    return s, np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


class _State:
    """The arrays of one run (shared by the worker threads, which write disjoint rows)."""


class _Plan:
    """Everything about one problem that does not depend on running it: row views, tiling,
    scratch buffers. :meth:`run` is the timed part.

    Rows that fit one tile (K = 1 column tile) go through :meth:`_whole_rows`, fused: per block
    of rows, exp -> (argmax) -> row sum -> (backward) scale into the gradient while cached, by
    :meth:`_target_tail` or the argmax method. Longer rows go through column tiles:
    :meth:`_phase1` (tile max, exponentials, sums), :meth:`_combine` (per row), :meth:`_phase2`
    (scale into the gradient). Each thread then finishes its rows (:meth:`_finish`: losses, the
    gradient's target and argmax entries) and :meth:`_reduce` applies the reduction.
    """

    def __init__(
        self, problem: Problem, num_threads: int, tile_elems: int, max_tile_cols: int,
        min_task_elems: int = DEFAULT_MIN_TASK_ELEMS,
    ):
        self.problem = problem
        x, t = problem.rows()
        self.x = np.ascontiguousarray(x)
        self.xflat = self.x.reshape(-1)
        self.t = np.ascontiguousarray(t)
        self.M, self.C = self.x.shape
        M, C = self.M, self.C
        self.in_dtype = problem.dtype
        self.f = compute_dtype(problem.format)
        self.convert = self.in_dtype != self.f
        self.prob = problem.probability_target
        self.eps = float(problem.label_smoothing)
        self.reduction = problem.reduction
        self.ignore_index = problem.ignore_index
        w = problem.weight
        self.w64 = None if w is None else w.astype(_F64)
        self.wf = None if w is None else w.astype(self.f)
        info = np.finfo(self.f)
        self.fmax = float(info.max)
        self.tiny = float(info.tiny)
        # exp(x) for x <= lim cannot overflow, nor can a sum of C of them
        self.lim = math.log(self.fmax) - math.log(C) - 1.0
        self.rowbase = np.arange(M, dtype=np.int64) * C
        self.ones = np.ones(M)

        # -- tiling ---------------------------------------------------------------------------
        T = max(1, min(int(num_threads), M * C // max(1, min_task_elems)))
        K = max(1, -(-C // max(1, max_tile_cols)))
        # too few rows to balance over the threads (M < 4T): split the classes too
        self.col_parallel = T > 1 and M < 4 * T and C >= 2 * _MIN_COLS_PER_THREAD
        if self.col_parallel:
            K = max(K, min(-(-4 * T // M), C // _MIN_COLS_PER_THREAD))
        bounds = [C * j // K for j in range(K + 1)]
        self.K = K
        self.col_bounds = list(itertools.pairwise(bounds))
        width = max(hi - lo for lo, hi in self.col_bounds)
        B = max(1, tile_elems // width)
        # Work is cut into chunks that the threads claim one at a time (dynamic scheduling): a
        # thread slowed down by other work on its core takes fewer, instead of holding everyone
        # up with a fixed half.
        if self.col_parallel:
            B = max(1, min(B, M))
            self.tiles = [(r0, min(M, r0 + B), j) for r0 in range(0, M, B) for j in range(K)]
            self.num_tasks = min(T, len(self.tiles))
            self.chunks = []
        else:
            B = max(1, min(B, -(-M // T))) if M else 1
            nblocks = -(-M // B) if M else 1
            # guided: each chunk takes 1/(2T) of the blocks left, so the last ones are single
            # blocks and the threads finish together
            sizes, left = [], nblocks
            while left > 0:
                size = left if T == 1 else max(1, -(-left // (2 * T)))
                sizes.append(size)
                left -= size
            edges = [min(M, B * b) for b in itertools.accumulate([0, *sizes])]
            self.chunks = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]
            self.num_tasks = max(1, min(T, len(self.chunks)))
            self.tiles = []
        self.B = B
        self.pool = _pool(self.num_tasks) if self.num_tasks > 1 else None

        # -- per-task scratch (B rows x tile width) ------------------------------------------
        nt, f = self.num_tasks, self.f
        self.work = [np.empty((B, width), f) for _ in range(nt)]
        self.src = [np.empty((B, width), f) if self.convert else None for _ in range(nt)]
        self.buf64 = [None] * nt  # float64 scratch for the shifted path, made on first use
        self.u32 = [None] * nt  # uint32 scratch of the float16 rounding, made on first use
        needs_b = self.prob and (
            self.eps > 0 or w is not None or self.convert or self.reduction == "mean"
        )
        self.bbuf = [np.empty((B, width), f) if needs_b else None for _ in range(nt)]
        dots = self.prob or self.eps > 0
        self.dbuf = [np.empty((B, width), f) if dots else None for _ in range(nt)]
        # index targets without smoothing: the target-removed tail first (see _target_tail)
        self.tz = not dots
        self.loc = [np.empty(B, np.int64) for _ in range(nt)]
        self.ar = np.arange(B)
        self.arC = np.arange(B, dtype=np.int64) * width
        if not self.prob and self.eps > 0:
            w64 = self.w64 if self.w64 is not None else np.ones(C)
            self.W_tile = np.array([w64[lo:hi].sum() for lo, hi in self.col_bounds])
            self.Wc = float(w64.sum())
            self.wvec64 = w64

    # -- the timed part -------------------------------------------------------------------------
    def run(self, backward: bool):
        M, C, K, f = self.M, self.C, self.K, self.f
        dots = self.prob or self.eps > 0
        st = _State()
        st.backward = backward
        st.g = np.empty((M, C), self.in_dtype) if backward else None
        st.store = backward and not self.convert  # exponentials are written into the gradient
        st.m = np.empty(M, _F64)
        st.T = np.empty(M, _F64)
        if dots:
            st.D = np.empty(M, _F64)
        if self.prob:
            st.Bsum = np.empty(M, _F64)
            st.bk = np.empty(M, _F64)
        if K == 1:
            st.M1 = np.empty(M, f)
            st.T1 = np.empty(M, f)  # tail sums in units of exp(S1)
            st.S1 = np.zeros(M, f)  # the shift of each row's exponentials (0: unshifted)
            st.IDX = np.empty(M, np.int64)
            if dots:
                st.D1 = np.empty(M, f)
            if self.prob:
                st.B1 = np.empty(M, f)
                st.BK1 = np.empty(M, f)
        else:
            st.TY = np.empty(M, _F64)  # target-removed tails (target-tail rows)
            st.DEN = np.empty(M, _F64)  # their row sums T_y + e_y
            st.MK = np.empty((M, K), f)  # tile maxima
            st.SH = np.empty((M, K), f)  # shift used for the exponentials (0: unshifted)
            st.DSH = np.empty((M, K), f)  # shift used for the dot products (finite tile max)
            st.TK = np.empty((M, K), f)
            st.KL = np.empty((M, K), np.int64)
            if dots:
                st.DK = np.empty((M, K), f)
            if self.prob:
                st.BK = np.empty((M, K), f)
                st.BKL = np.empty((M, K), f)
            if backward:
                st.FK = np.empty((M, K), _F64)
                st.FH = np.empty((M, K), _F64)
                st.EK = np.empty((M, K), _F64)

        # rows done by the argmax method (the others by the target-removed tail, self.tz)
        st.MODE = np.zeros(M, bool) if self.tz else np.ones(M, bool)
        if self.prob:
            st.LP = np.empty(M, _F64)  # per-row losses
        else:
            st.DT = np.empty(M, _F64)  # x_y - m
            st.ERR = np.zeros(M, _F64)  # its rounding error (float64 inputs)
            st.NLL = np.empty(M, _F64)  # -log p_y
            st.GY = np.empty(M, _F64)  # the target entry of the gradient (target-tail rows)
            st.LN = np.empty(M, _F64)  # w_y (-log p_y), 0 on ignored rows
            if self.eps > 0:
                st.LS = np.empty(M, _F64)  # sum_c w_c (-log p_c), 0 on ignored rows

        with np.errstate(all="ignore"):
            self._coefficients(st)
            if M and self.col_parallel:
                self._target_logits(st, 0, M)

                def tiles(fn):
                    todo = iter(self.tiles)  # shared: each next() hands one tile to one thread

                    def work(slot):
                        for r0, r1, j in todo:
                            fn(st, r0, r1, j, slot)

                    _parallel([(lambda i=i: work(i)) for i in range(self.num_tasks)], self.pool)

                def phases(first, second, combine):
                    tiles(first)
                    ok = combine(st, 0, M)
                    if ok is not False and backward:
                        tiles(second)
                    return ok

                if not (self.tz and phases(self._tz_phase1, self._tz_phase2, self._tz_combine)):
                    st.MODE[:] = True
                    phases(self._phase1, self._phase2, self._combine)
                self._finish(st, 0, M)
            elif M:
                kernel = self._whole_rows if K == 1 else self._tiled_rows
                todo = iter(self.chunks)  # shared: each next() hands one chunk to one thread

                def work(slot):
                    for lo, hi in todo:
                        self._target_logits(st, lo, hi)
                        kernel(st, lo, hi, slot)
                        self._finish(st, lo, hi)

                _parallel([(lambda i=i: work(i)) for i in range(self.num_tasks)], self.pool)
            loss = self._reduce(st)
            grad = None
            if backward:
                grad = st.g
                if not self.prob and st.slow_grad:
                    grad = self._torch_style_grad(st)
                grad = self.problem.unrows(grad)
        return loss, grad

    def _finish(self, st, lo: int, hi: int) -> None:
        """Per-row results of rows lo:hi: max, tail, losses, and the gradient's single entries."""
        argmax_rows = bool(st.MODE[lo:hi].any())
        if not argmax_rows and self._finish_tail_fast(st, lo, hi):
            return
        if self.K == 1 and argmax_rows:
            m = st.M1[lo:hi].astype(_F64)
            st.m[lo:hi] = m
            # tail in units of exp(x - m); NaN where the max is +inf, NaN or -inf (then S1 = m)
            np.multiply(st.T1[lo:hi], np.exp(st.S1[lo:hi] - m), out=st.T[lo:hi])
            if self.prob or self.eps > 0:
                st.D[lo:hi] = st.D1[lo:hi]
            if self.prob:
                st.Bsum[lo:hi] = st.B1[lo:hi]
                st.bk[lo:hi] = st.BK1[lo:hi]
        if not self.prob:
            mode = st.MODE[lo:hi]
            if argmax_rows:  # rows done by the argmax method
                # x_y - m = dt + err exactly (float64 inputs; for float32 and 16-bit, err = 0)
                if self.f == _F64:
                    st.DT[lo:hi], st.ERR[lo:hi] = _two_diff(st.xt[lo:hi], st.m[lo:hi])
                else:
                    np.subtract(st.xt[lo:hi], st.m[lo:hi], out=st.DT[lo:hi])
                lse = np.log1p(st.T[lo:hi])  # log sum_j exp(x_j - m)
                st.NLL[lo:hi] = (lse - st.DT[lo:hi]) - st.ERR[lo:hi]  # (m - x_y) + log1p(T)
            if not mode.all():  # rows done by the target-removed tail
                ty = (st.T1 if self.K == 1 else st.TY)[lo:hi].astype(_F64)
                ey, xt = st.EY[lo:hi], st.xt[lo:hi]
                ratio = ty / ey
                # -log p_y = log1p(T_y / e_y); when e_y underflows (or x_y = -inf), log T_y - x_y
                nll = np.where(ratio < np.inf, np.log1p(ratio), np.log(ty) - xt)
                st.NLL[lo:hi] = np.where(mode, st.NLL[lo:hi], nll) if mode.any() else nll
                if st.backward:
                    st.GY[lo:hi] = -st.atot[lo:hi] * ty / (ty + ey) + 0.0
        self._row_losses(st, lo, hi)
        if st.backward and not (not self.prob and st.slow_grad):
            self._fix_entries(st, lo, hi)

    def _finish_tail_fast(self, st, lo: int, hi: int) -> bool:
        """_finish of rows all done by the target-removed tail, no weights, no ignored row, no
        underflowing e_y: the row loss is log1p(T_y / e_y) itself (four NumPy calls)."""
        if not st.plain_rows:
            return False
        ty = (st.T1 if self.K == 1 else st.TY)[lo:hi]
        ey = st.EY[lo:hi]
        ratio = np.divide(ty, ey, dtype=_F64)
        if not np.maximum.reduce(ratio) < np.inf:  # e_y underflowed (or x_y = -inf)
            return False
        np.log1p(ratio, out=st.LN[lo:hi])
        if st.backward:
            # p_y - 1 = -T_y / (T_y + e_y), times atot = (1 - eps) s on every row
            ratio += 1.0
            np.divide(-st.alpha0, ratio, out=ratio)  # -atot / (1 + T_y / e_y)
            ratio *= ty
            ratio /= ey
            self._set_targets(st, lo, hi, ratio)
        return True

    def _coefficients(self, st) -> None:
        """Per-row coefficients; they depend on the targets only.

        Index targets: row loss alpha_n (-log p_y) + beta_n sum_c w_c (-log p_c), alpha_n =
        s (1 - eps) w_y, beta_n = s eps / C (both 0 on ignored rows; s = 1/sum w_y for 'mean',
        else 1), so the gradient row is atot_n p - a with atot_n = alpha_n + beta_n W.
        Probability targets: gradient row s (B_n p - b), s = 1/M for 'mean', else 1.
        """
        M, C, eps = self.M, self.C, self.eps
        if self.prob:
            st.s = (1.0 / M if M else np.nan) if self.reduction == "mean" else 1.0
            return
        t = self.t
        valid = t != self.ignore_index
        all_valid = bool(valid.all())
        st.valid = valid
        tsafe = t if all_valid else np.where(valid, t, 0)
        st.tsafe = tsafe
        if self.w64 is None:
            st.wy_raw = self.ones
            wy = self.ones if all_valid else valid.astype(_F64)
        else:
            st.wy_raw = self.w64[tsafe]
            wy = st.wy_raw if all_valid else np.where(valid, st.wy_raw, 0.0)
        st.wy = wy
        if self.reduction == "mean":
            st.W = np.float64(M if all_valid and self.w64 is None else wy.sum())
            s = 1.0 / st.W
        else:
            st.W = None
            s = 1.0
        st.s = s
        st.slow_grad = st.backward and not np.isfinite(s)
        st.alpha = (1.0 - eps) * s * wy
        # every row valid, no class weights: one coefficient for all rows
        st.plain_rows = all_valid and self.w64 is None and self.tz and not st.slow_grad
        st.alpha0 = (1.0 - eps) * s
        if eps > 0:
            st.beta = (eps / C) * s * valid
            st.atot = st.alpha + st.beta * self.Wc
            st.all_valid = all_valid
            st.beta_w = ((eps / C) * s * self.wvec64).astype(self.f)  # beta * w, valid rows
        else:
            st.beta = None
            st.atot = st.alpha
        st.xt = np.empty(M, _F64)  # x_y, filled per chunk by _target_logits
        if self.tz:
            st.EY = np.empty(M, _F64)
            st.ey_ok = np.empty(M, bool)
            if self.w64 is None:  # atot = alpha = (1 - eps) s on the valid rows
                st.atot_max = abs((1.0 - eps) * s) if M and valid.any() else 0.0
            else:
                st.atot_max = float(np.abs(st.atot).max()) if M else 0.0

    def _target_logits(self, st, lo: int, hi: int) -> None:
        """x_y and (target-removed tail) e_y = exp(x_y) of rows lo:hi, for column tiles (blocks
        of whole rows take x_y themselves, from the cached block)."""
        if self.prob or (self.K == 1 and not self.col_parallel):
            return
        xt = st.xt[lo:hi]
        xt[...] = self.xflat[self.rowbase[lo:hi] + st.tsafe[lo:hi]]
        if self.tz:
            np.exp(xt, out=st.EY[lo:hi])
            self._ey_ok(st, lo, hi)

    def _ey_ok(self, st, lo: int, hi: int) -> None:
        """e_y usable as it is: finite, and normal unless x_y = -inf (then p_y = 0 exactly)."""
        ey = st.EY[lo:hi]
        st.ey_ok[lo:hi] = (ey >= _TINY64) & (ey <= _MAX64) | (st.xt[lo:hi] == -np.inf)

    # -- shared helpers -------------------------------------------------------------------------
    def _row_shift(self, m: np.ndarray) -> np.ndarray | None:
        """Per-row shift for the exponentials: 0 where exp(x) is safe and at least as accurate
        (0 <= m <= lim), else m. None when every row of the block is unshifted."""
        lim = self.lim
        if np.minimum.reduce(m) >= 0.0 and np.maximum.reduce(m) <= lim:
            return None
        ok = (m >= 0.0) & (m <= lim)
        return np.where(ok, self.f.type(0), m)

    def _target_tail(self, st, lo: int, hi: int, slot: int) -> list[tuple[int, int]]:
        """Index targets without smoothing, no argmax pass: w = exp(x) unshifted, the *target*
        entry removed, T_y = sum_{j != y} e^{x_j}; then -log p_y = log1p(T_y / e_y) and
        p_y - 1 = -T_y / (T_y + e_y), both free of cancellation (see _finish), and every other
        gradient entry is atot e^{x_j} / (T_y + e_y). Four NumPy calls per block (exp, the
        target's index, its removal, the row sum), two more and a multiply for the gradient.

        The result of a row stands only if T_y is finite (no overflow) and at least C * tiny (a
        subnormal e^{x_j} then costs less than an ulp of T_y), e_y is finite and normal (or 0
        from x_y = -inf), and T_y + e_y >= atot (a subnormal e^{x_j} then costs under half an
        ulp of its gradient entry): then these unshifted values lose nothing against
        exp(x - m). That is checked once for the rows lo:hi (the same in the forward and the
        backward, so both take the same method and give the same bits); the blocks of rows that
        fail are returned, to be redone by the argmax method."""
        C, B, arC = self.C, self.B, self.arC
        x, srcbuf, work, locbuf = self.x, self.src[slot], self.work[slot], self.loc[slot]
        backward, store = st.backward, st.store
        tsafe, T1, xt = st.tsafe, st.T1, st.xt
        for r0 in range(lo, hi, B):
            r1 = min(hi, r0 + B)
            n = r1 - r0
            if srcbuf is None:
                src = x[r0:r1]
            else:
                src = srcbuf[:n]
                _to_f32(x[r0:r1], src)
            w = st.g[r0:r1] if store else work[:n]
            np.exp(src, out=w)
            ly = np.add(arC[:n], tsafe[r0:r1], out=locbuf[:n])
            xt[r0:r1] = src.reshape(-1)[ly]  # x_y, while the block is in cache
            w.reshape(-1)[ly] = 0
            _rowsum(w, T1[r0:r1])
            if backward:
                ey = np.exp(xt[r0:r1], out=st.EY[r0:r1])
                den = np.add(ey, T1[r0:r1])  # sum_j e^{x_j}
                self._apply_factor(w, st.atot[r0:r1], den)
                if not store:
                    self._store(st.g[r0:r1], w, slot)
        if not backward:
            np.exp(xt[lo:hi], out=st.EY[lo:hi])
        self._ey_ok(st, lo, hi)
        ty = T1[lo:hi]
        den = st.EY[lo:hi] + ty
        ok = (
            (ty >= C * self.tiny) & (ty <= self.fmax) & st.ey_ok[lo:hi]
            & (den >= st.atot_max) & (den <= _MAX64)
        )
        if ok.all():
            return []
        bad = np.unique(np.nonzero(~ok)[0] // B)
        return [(lo + b * B, min(hi, lo + (b + 1) * B)) for b in bad.tolist()]

    def _max_and_exp(self, src, w, locbuf, arC, slot: int):
        """Row maxima (flat index in the block, value) and w = exp(src - shift).

        The exponentials come first, unshifted, and the argmax is taken on them: they are
        writeable and cached, while the logits are read-only (Problem freezes them) and NumPy's
        argmax is twice as slow on read-only arrays. exp is monotonic, so this finds a k with
        e_k = max_j e_j, which is all the formulas need (a tie that rounding creates gives the
        same sums). When a row max lies outside [0, lim], the block takes the argmax of the
        logits themselves and redoes the exponentials with the shift (rare)."""
        np.exp(src, out=w)
        loc = np.add(arC, w.argmax(axis=1), out=locbuf)
        m = src.reshape(-1)[loc]
        shift = self._row_shift(m)
        if shift is not None:
            loc = np.add(arC, src.argmax(axis=1), out=locbuf)
            m = src.reshape(-1)[loc]
            shift = self._row_shift(m)
            if shift is not None:
                self._exp(src, shift, w, slot)
        return loc, m, shift

    def _exp(self, src, shift, w, slot: int) -> None:
        """w = exp(src - shift[:, None]) with the difference effectively exact: formed in float64
        for float32, and for float64 corrected by its exact rounding error t (TwoSum):
        exp(s + t) = exp(s) (1 + t)."""
        if shift is None:
            np.exp(src, out=w)
            return
        n, L = src.shape
        bufs = self.buf64[slot]
        if bufs is None:
            bufs = self.buf64[slot] = [np.empty(self.work[slot].shape, _F64) for _ in range(2)]
        if self.f != _F64:
            buf = bufs[0][:n, :L]
            np.subtract(src, shift.astype(_F64)[:, None], out=buf)
            np.exp(buf, out=buf)
            np.copyto(w, buf, casting="same_kind")
            return
        a, b = src, -shift[:, None]
        bb, aa = bufs[0][:n, :L], bufs[1][:n, :L]
        np.add(a, b, out=w)  # s = fl(x - shift)
        np.subtract(w, a, out=bb)
        np.subtract(w, bb, out=aa)
        np.subtract(a, aa, out=aa)  # a - (s - bb)
        np.subtract(b, bb, out=bb)  # b - bb
        np.add(aa, bb, out=bb)  # t = (x - shift) - s exactly
        np.nan_to_num(bb, copy=False, nan=0.0)  # -inf logits: exp(s) = 0 needs no correction
        np.exp(w, out=w)
        np.multiply(w, bb, out=bb)
        np.add(w, bb, out=w)

    def _store(self, g: np.ndarray, w: np.ndarray, slot: int) -> None:
        """g = w (float32) rounded once into the 16-bit gradient."""
        if self.in_dtype != _F16:
            np.copyto(g, w, casting="unsafe")
            return
        tmp = self.u32[slot]
        if tmp is None:
            tmp = self.u32[slot] = [np.empty(self.work[slot].size, np.uint32) for _ in range(4)]
        _f32_to_f16(w, g, [t[: w.size].reshape(w.shape) for t in tmp])

    def _apply_factor(self, w: np.ndarray, coef: np.ndarray, den: np.ndarray) -> None:
        """w *= (coef / den)[:, None]; for float64 row sums near the top of the range, coef/den
        could be subnormal, so it is applied as the two normal factors coef/sqrt(den) and
        1/sqrt(den)."""
        if self.f == _F64 and np.maximum.reduce(den) > 2.0**500:
            sq = np.sqrt(den)
            self._scale_rows(w, coef / sq, 1.0 / sq)
        else:
            self._scale_rows(w, coef / den)

    def _scale_rows(self, w: np.ndarray, r: np.ndarray, h: np.ndarray | None = None) -> None:
        """w *= (r h)[:, None] (float64 factors; h = 1 when None), in two steps when the
        factor is below the normal range of w's dtype (w may be large: unshifted exponentials)."""
        fac = r if h is None else r * h
        a = np.abs(fac)
        if not np.minimum.reduce(a) >= self.tiny and bool(((a < self.tiny) & (a > 0.0)).any()):
            if h is None:
                h = np.sqrt(np.abs(r))
                first = np.sign(r) * h
            else:
                first = r
            np.multiply(w, first.astype(self.f)[:, None], out=w)
            np.multiply(w, h.astype(self.f)[:, None], out=w)
        else:
            np.multiply(w, fac.astype(self.f)[:, None], out=w)

    def _subtract_smoothing(self, st, w, r0, r1, c0, c1) -> None:
        """w -= beta_n w_c on the valid rows (the eps/C part of the gradient's -a term)."""
        if st.all_valid:
            np.subtract(w, st.beta_w[c0:c1], out=w)
        else:
            coef = st.valid[r0:r1].astype(self.f)
            np.subtract(w, np.multiply.outer(coef, st.beta_w[c0:c1]), out=w)

    def _btile(self, r0, r1, c0, c1, slot):
        """b = w ((1 - eps) t + eps / C) on a probability-target tile, in the compute dtype."""
        tt = self.t[r0:r1, c0:c1]
        buf = self.bbuf[slot]
        if buf is None:
            return tt
        b = buf[: r1 - r0, : c1 - c0]
        eps = self.eps
        if self.convert:
            _to_f32(tt, b)
            if eps > 0:
                np.multiply(b, 1.0 - eps, out=b)
        elif eps > 0:
            np.multiply(tt, 1.0 - eps, out=b)
        else:
            np.copyto(b, tt)
        if eps > 0:
            np.add(b, eps / self.C, out=b)
        if self.wf is not None:
            np.multiply(b, self.wf[c0:c1], out=b)
        return b

    def _source(self, r0, r1, c0, c1, slot):
        """The logits tile in the compute dtype (16-bit inputs converted into scratch)."""
        xs = self.x[r0:r1, c0:c1]
        if not self.convert:
            return xs
        src = self.src[slot][: r1 - r0, : c1 - c0]
        _to_f32(xs, src)
        return src

    # -- K = 1: blocks of whole rows, forward and backward fused ---------------------------------
    def _whole_rows(self, st, lo: int, hi: int, slot: int) -> None:
        C, B = self.C, self.B
        x, srcbuf = self.x, self.src[slot]
        prob, eps, backward, store = self.prob, self.eps, st.backward, st.store
        dots = prob or eps > 0
        work, locbuf, arC = self.work[slot], self.loc[slot], self.arC
        if self.tz:
            blocks = self._target_tail(st, lo, hi, slot)  # those left to the argmax method
        else:
            blocks = [(r0, min(hi, r0 + B)) for r0 in range(lo, hi, B)]
        for r0, r1 in blocks:
            n = r1 - r0
            if srcbuf is None:
                src = x[r0:r1]
            else:
                src = srcbuf[:n]
                _to_f32(x[r0:r1], src)
            w = st.g[r0:r1] if store else work[:n]
            st.MODE[r0:r1] = True
            if not prob:  # x_y, while the block is in cache
                st.xt[r0:r1] = src.reshape(-1)[arC[:n] + st.tsafe[r0:r1]]
            loc, m, shift = self._max_and_exp(src, w, locbuf[:n], arC[:n], slot)
            st.M1[r0:r1] = m
            if dots:
                d = self.dbuf[slot][:n]
                np.subtract(src, m[:, None], out=d)  # d = x - m <= 0, for the dot products
                if prob:
                    b = self._btile(r0, r1, 0, C, slot)
                    _rowsum(b, st.B1[r0:r1])
                    _rowdot(d, b, st.D1[r0:r1])
                    st.BK1[r0:r1] = b.reshape(-1)[loc]
                elif self.wf is None:
                    _rowsum(d, st.D1[r0:r1])
                else:
                    _rowdot(d, self.wf, st.D1[r0:r1])
            w.reshape(-1)[loc] = 0  # remove the max entry: the row sum is the tail T
            T1 = st.T1[r0:r1]
            _rowsum(w, T1)
            if shift is not None:
                st.S1[r0:r1] = shift
            if not backward:
                continue
            # scale the block into the gradient now, while it is cached; its argmax and
            # target entries are set in _fix_entries
            np.add(loc, r0 * C, out=st.IDX[r0:r1])
            # row factor coef / sum_j exp(x_j - shift), the removed max entry being exp(m - shift)
            if shift is None:
                den = np.exp(m, dtype=_F64)
            else:
                den = np.exp(np.subtract(m, shift, dtype=_F64))  # 1, or NaN on non-finite rows
            den += T1
            coef = st.s * st.B1[r0:r1] if prob else st.atot[r0:r1]
            self._apply_factor(w, coef, den)
            if prob:
                if st.s != 1.0:  # then b is scratch (see needs_b)
                    np.multiply(b, st.s, out=b)
                np.subtract(w, b, out=w)
            elif eps > 0:
                self._subtract_smoothing(st, w, r0, r1, 0, C)
            if not store:
                self._store(st.g[r0:r1], w, slot)

    # -- K > 1: column tiles, partial results combined per row -----------------------------------
    def _tiled_rows(self, st, lo: int, hi: int, slot: int) -> None:
        K = self.K
        for r0 in range(lo, hi, self.B):
            r1 = min(hi, r0 + self.B)
            if self.tz:
                for j in range(K):
                    self._tz_phase1(st, r0, r1, j, slot)
                if self._tz_combine(st, r0, r1):
                    if st.backward:
                        for j in range(K):
                            self._tz_phase2(st, r0, r1, j, slot)
                    continue
                st.MODE[r0:r1] = True
            for j in range(K):
                self._phase1(st, r0, r1, j, slot)
            self._combine(st, r0, r1)
            if st.backward:
                for j in range(K):
                    self._phase2(st, r0, r1, j, slot)

    # the target-removed tail on column tiles: partial sums simply add up (no max needed)
    def _tz_phase1(self, st, r0, r1, j, slot) -> None:
        c0, c1 = self.col_bounds[j]
        n = r1 - r0
        src = self._source(r0, r1, c0, c1, slot)
        work = st.g[r0:r1, c0:c1] if st.store else self.work[slot][:n, : c1 - c0]
        np.exp(src, out=work)
        ys = st.tsafe[r0:r1]
        rows = np.nonzero((ys >= c0) & (ys < c1))[0]
        if rows.size:
            work[rows, ys[rows] - c0] = 0
        _rowsum(work, st.TK[r0:r1, j])

    def _tz_combine(self, st, r0, r1) -> bool:
        """T_y = sum of the tiles' sums; the checks of :meth:`_target_tail`."""
        ty = st.TK[r0:r1].sum(axis=1, dtype=_F64)
        st.TY[r0:r1] = ty
        if not (np.minimum.reduce(ty) >= self.C * self.tiny and np.maximum.reduce(ty) <= _MAX64):
            return False
        if not (np.maximum.reduce(st.TK[r0:r1].reshape(-1)) <= self.fmax):
            return False  # a tile's float32 sum overflowed
        if not st.ey_ok[r0:r1].all():
            return False
        den = st.EY[r0:r1] + ty
        if not (np.minimum.reduce(den) >= st.atot_max and np.maximum.reduce(den) <= _MAX64):
            return False
        st.DEN[r0:r1] = den
        return True

    def _tz_phase2(self, st, r0, r1, j, slot) -> None:
        c0, c1 = self.col_bounds[j]
        n = r1 - r0
        gt = st.g[r0:r1, c0:c1]
        if st.store:
            work = gt
        else:  # 16-bit input: recompute the exponentials in float32
            work = self.work[slot][:n, : c1 - c0]
            np.exp(self._source(r0, r1, c0, c1, slot), out=work)
        self._apply_factor(work, st.atot[r0:r1], st.DEN[r0:r1])
        if not st.store:
            self._store(gt, work, slot)

    def _tile_exp(self, st, src, w, r0, r1, j, slot) -> None:
        sh = st.SH[r0:r1, j]
        self._exp(src, sh if sh.any() else None, w, slot)

    def _phase1(self, st, r0, r1, j, slot) -> None:
        """Tile maxima, exponentials (stored in the gradient when possible), tail sums, dots."""
        c0, c1 = self.col_bounds[j]
        n = r1 - r0
        ar = self.ar[:n]
        dots = self.prob or self.eps > 0
        src = self._source(r0, r1, c0, c1, slot)
        work = st.g[r0:r1, c0:c1] if st.store else self.work[slot][:n, : c1 - c0]
        # as in _max_and_exp: exponentials first, unshifted, argmax on them; redo if needed
        np.exp(src, out=work)
        kl = work.argmax(axis=1)
        mk = src[ar, kl]
        # a tile of -inf is shifted by -max (exponentials 0) rather than by -inf (NaN)
        dsh = np.maximum(mk, -self.fmax)
        shift = self._row_shift(dsh)
        if shift is not None:
            kl = src.argmax(axis=1)
            mk = src[ar, kl]
            dsh = np.maximum(mk, -self.fmax)
            shift = self._row_shift(dsh)
            if shift is not None:
                self._exp(src, shift, work, slot)
        st.KL[r0:r1, j] = kl
        st.MK[r0:r1, j] = mk
        st.DSH[r0:r1, j] = dsh
        st.SH[r0:r1, j] = 0.0 if shift is None else shift
        if dots:
            d = self.dbuf[slot][:n, : c1 - c0]
            np.subtract(src, dsh[:, None], out=d)
            if self.prob:
                b = self._btile(r0, r1, c0, c1, slot)
                _rowsum(b, st.BK[r0:r1, j])
                _rowdot(d, b, st.DK[r0:r1, j])
                st.BKL[r0:r1, j] = b[ar, kl]
            elif self.wf is None:
                _rowsum(d, st.DK[r0:r1, j])
            else:
                _rowdot(d, self.wf[c0:c1], st.DK[r0:r1, j])
        work[ar, kl] = 0
        _rowsum(work, st.TK[r0:r1, j])

    def _combine(self, st, r0, r1) -> None:
        """m = max_j m_j; T = sum_j exp(shift_j - m) T_j + the other tiles' max entries."""
        n = r1 - r0
        mk = st.MK[r0:r1].astype(_F64)
        sh = st.SH[r0:r1].astype(_F64)
        m = mk.max(axis=1)
        jstar = mk.argmax(axis=1)
        # tile j's values are in units of exp(shift_j); exp(shift_j - m) may be subnormal (an
        # unshifted tile in a row whose max is huge), so it is applied as two halves h h, and
        # shift_j - m is taken exactly (TwoSum): exp(s + t) = exp(s) (1 + t)
        dif, err = _two_diff(sh, m[:, None])
        h = np.exp(0.5 * dif) * (1.0 + 0.5 * err)
        ek = np.exp(mk - sh)  # each tile's removed max entry, in its own units
        u = (ek * h) * h
        u[np.arange(n), jstar] = 0.0
        T = ((st.TK[r0:r1] * h) * h).sum(axis=1) + u.sum(axis=1) + (m - m)
        st.m[r0:r1] = m
        st.T[r0:r1] = T
        if self.prob or self.eps > 0:
            if self.prob:
                bk = st.BK[r0:r1].astype(_F64)
                st.Bsum[r0:r1] = bk.sum(axis=1)
                st.bk[r0:r1] = st.BKL[r0:r1][np.arange(n), jstar]
            else:
                bk = self.W_tile[None, :]
            dsh = st.DSH[r0:r1].astype(_F64)
            st.D[r0:r1] = (st.DK[r0:r1] + (dsh - m[:, None]) * bk).sum(axis=1)
        if st.backward:
            coef = st.s * st.Bsum[r0:r1] if self.prob else st.atot[r0:r1]
            st.FK[r0:r1] = (coef / (1.0 + T))[:, None] * h  # the factor is FK * FH
            st.FH[r0:r1] = h
            st.EK[r0:r1] = ek

    def _phase2(self, st, r0, r1, j, slot) -> None:
        """Scale the tile's exponentials into the gradient (target entries come later)."""
        c0, c1 = self.col_bounds[j]
        n = r1 - r0
        ar = self.ar[:n]
        fac, fh = st.FK[r0:r1, j], st.FH[r0:r1, j]
        gt = st.g[r0:r1, c0:c1]
        if st.store:
            work = gt
        else:  # 16-bit input: recompute the exponentials in float32
            work = self.work[slot][:n, : c1 - c0]
            src = self._source(r0, r1, c0, c1, slot)
            self._tile_exp(st, src, work, r0, r1, j, slot)
        self._scale_rows(work, fac, fh)
        kl = st.KL[r0:r1, j]
        kval = (fac * st.EK[r0:r1, j]) * fh  # the tile's max entry, zeroed in phase 1
        if self.prob:
            b = self._btile(r0, r1, c0, c1, slot)
            bkl = b[ar, kl].astype(_F64)
            if st.s != 1.0:
                np.multiply(b, st.s, out=b)
            np.subtract(work, b, out=work)
            kval -= st.s * bkl
        elif self.eps > 0:
            self._subtract_smoothing(st, work, r0, r1, c0, c1)
            kval -= st.beta[r0:r1] * self.wvec64[c0 + kl]
        work[ar, kl] = kval
        if not st.store:
            self._store(gt, work, slot)

    # -- per-row entries of the gradient, all rows at once ----------------------------------------
    def _fix_entries(self, st, lo: int, hi: int) -> None:
        """The argmax entries (K = 1) and, for index targets, the target entries
        p_y - 1 = -(T - expm1(x_y - m)) / (1 + T), free of cancellation, of rows lo:hi."""
        eps = self.eps
        g = st.g.reshape(-1)
        mode = st.MODE[lo:hi]
        if not mode.any():  # every row by the target-removed tail
            self._set_targets(st, lo, hi, st.GY[lo:hi])
            return
        T, m = st.T[lo:hi], st.m[lo:hi]
        inv = 1.0 / (1.0 + T)
        if self.K == 1:
            ek = 1.0 + (m - m)  # e_k = 1, NaN on a non-finite row
            idx = st.IDX[lo:hi]
            if self.prob:
                kval = st.s * (st.Bsum[lo:hi] * inv * ek - st.bk[lo:hi])
            else:
                kval = st.atot[lo:hi] * inv * ek
                if eps > 0:
                    kval -= st.beta[lo:hi] * self.wvec64[idx - self.rowbase[lo:hi]]
            if not mode.all():
                g[idx[mode]] = self._cast(kval[mode])
            else:
                g[idx] = self._cast(kval)
        if self.prob:
            return
        dt, err = st.DT[lo:hi], st.ERR[lo:hi]
        ey = np.exp(dt)
        gy = -st.alpha[lo:hi] * (T - (np.expm1(dt) + ey * err)) * inv
        if eps > 0:
            gy += st.beta[lo:hi] * (self.Wc * (ey + ey * err) * inv - st.wy_raw[lo:hi])
        gy += 0.0  # -0.0 -> 0.0 on ignored rows
        if not mode.all():
            gy = np.where(mode, gy, st.GY[lo:hi])
        self._set_targets(st, lo, hi, gy)

    def _set_targets(self, st, lo: int, hi: int, gy: np.ndarray) -> None:
        """The gradient's target entries of rows lo:hi (-0.0 made 0.0, as on ignored rows)."""
        gy += 0.0
        st.g.reshape(-1)[self.rowbase[lo:hi] + st.tsafe[lo:hi]] = self._cast(gy)

    def _cast(self, v: np.ndarray) -> np.ndarray:
        """float64 values into the gradient's dtype, rounded once."""
        return round_to(v, self.in_dtype) if self.convert else v.astype(self.f)

    # -- loss ---------------------------------------------------------------------------------------
    def _row_losses(self, st, lo: int, hi: int) -> None:
        if self.prob or self.eps > 0:
            lse = np.log1p(st.T[lo:hi])  # log sum_j exp(x_j - m)
        if self.prob:
            st.LP[lo:hi] = st.Bsum[lo:hi] * lse - st.D[lo:hi]  # sum_c b_c (lse - d_c)
            return
        valid = st.valid[lo:hi]
        st.LN[lo:hi] = np.where(valid, st.wy[lo:hi] * st.NLL[lo:hi], 0.0)
        if self.eps > 0:
            st.LS[lo:hi] = np.where(valid, self.Wc * lse - st.D[lo:hi], 0.0)

    def _reduce(self, st) -> np.ndarray:
        """The reduction of the per-row losses, in float64, rounded once to the logits' dtype."""
        eps, C, red = self.eps, self.C, self.reduction
        if self.prob:
            out = st.LP if red == "none" else st.LP.sum() * st.s
        else:
            if red == "none":
                out = (1.0 - eps) * st.LN + (eps / C) * st.LS if eps > 0 else st.LN
            else:
                total = st.LN.sum()
                total_sm = st.LS.sum() if eps > 0 else 0.0
                if red == "mean":
                    total = total / st.W
                    total_sm = total_sm / st.W
                out = (1.0 - eps) * total + (eps / C) * total_sm if eps > 0 else total
        out = np.asarray(out, dtype=_F64).reshape(self.problem.output_shape)
        return round_to(out, self.in_dtype)

    # -- 'mean' with zero total weight: PyTorch's NaN/inf pattern ---------------------------------
    def _torch_style_grad(self, st) -> np.ndarray:
        """PyTorch's autograd when the mean divides by a zero total weight: it backpropagates
        G = -((1-eps)/W) w_y onehot_y - ((eps/C)/W) w (valid rows) through log_softmax as
        G - p sum(G). Only used when sum_n w_{y_n} = 0, where the loss is NaN anyway."""
        M, C, eps = self.M, self.C, self.eps
        x = self.x.astype(_F64)
        m = x.max(axis=1, keepdims=True)
        p = np.exp(x - m) / np.exp(x - m).sum(axis=1, keepdims=True)
        G = np.zeros((M, C))
        W = st.W
        rows = np.nonzero(st.valid)[0]
        G[rows, st.tsafe[rows]] = st.wy_raw[rows] * -((1.0 - eps) / W)
        if eps > 0:
            G[rows] += -((eps / C) / W) * self.wvec64
        grad = G - p * G.sum(axis=1, keepdims=True)
        return grad.astype(self.in_dtype)


class _EmptyPlan:
    """The plan of a problem with M = 0 samples or C = 0 classes: PyTorch's fixed results."""

    col_parallel = False

    def __init__(self, problem: Problem):
        self.problem = problem

    def run(self, backward: bool):
        loss, grad = degenerate_result(self.problem)
        return loss, (grad if backward else None)


class _IeeePlan:
    """Problems whose coefficients are not all finite (a NaN or infinite class weight or
    probability target): the rearranged sums of the fast path (W log1p(T) - sum_c w_c d_c)
    would turn an infinite coefficient into inf - inf, so these follow PyTorch's own chain of
    operations in float64, whose inf/NaN pattern the contract is (docs/semantics.md):
    log p = log_softmax(x); the reduction of the (1 - eps) nll and (eps/C) smoothing parts; the
    gradient G with respect to log p, then G - p sum(G). Rare, unblocked, one thread."""

    col_parallel = False

    def __init__(self, problem: Problem):
        self.problem = problem

    def run(self, backward: bool):
        pr = self.problem
        with np.errstate(all="ignore"):
            loss, grad = self._compute(backward)
        loss = round_to(np.asarray(loss, _F64).reshape(pr.output_shape), pr.dtype)
        if grad is not None:
            grad = pr.unrows(round_to(grad, pr.dtype))
        return loss, grad

    def _compute(self, backward: bool):
        pr = self.problem
        x, t = pr.rows()
        x = x.astype(_F64)
        M, C = x.shape
        eps, red = pr.label_smoothing, pr.reduction
        w = np.ones(C) if pr.weight is None else pr.weight.astype(_F64)
        # log_softmax: (x - m) - log1p(sum of the other exponentials), m a row max
        k = x.argmax(axis=1)
        m = x[np.arange(M), k]
        d = x - m[:, None]
        e = np.exp(d)
        e[np.arange(M), k] = 0.0
        lp = d - np.log1p(e.sum(axis=1))[:, None]
        p = np.exp(lp)
        G = np.zeros((M, C))
        if pr.probability_target:
            tp = t.astype(_F64)
            if eps > 0:
                tp = tp * (1.0 - eps) + eps / C
            rows = -(lp * tp * w).sum(axis=1)
            if red == "none":
                loss = rows
            else:
                loss = rows.sum() / M if red == "mean" else rows.sum()
            s = 1.0 / M if red == "mean" else 1.0
            G = -(tp * w) * s
        else:
            kept = t != pr.ignore_index
            r = np.nonzero(kept)[0]
            y = t[r]
            wy = w[y]
            nll = np.zeros(M)
            nll[r] = -(wy * lp[r, y])
            if eps > 0:
                smooth = np.zeros(M)
                smooth[r] = -(lp[r] * w).sum(axis=1)
            W = wy.sum()
            if red == "none":
                loss = (1.0 - eps) * nll + smooth * (eps / C) if eps > 0 else nll
            else:
                total = nll.sum() / W if red == "mean" else nll.sum()
                if eps > 0:
                    sm = smooth.sum() / W if red == "mean" else smooth.sum()
                    total = (1.0 - eps) * total + sm * (eps / C)
                loss = total
            a = (1.0 - eps) / W if red == "mean" else 1.0 - eps
            G[r, y] = -(wy * a)
            if eps > 0:  # PyTorch's masked_fill backward gives the ignored rows 0 * w_j
                b = (eps / C) / W if red == "mean" else eps / C
                G += -(np.where(kept, b, 0.0)[:, None] * w)
        if not backward:
            return loss, None
        return loss, G - p * G.sum(axis=1, keepdims=True)


def _nonfinite_coefficients(problem: Problem) -> bool:
    if problem.weight is not None and not np.isfinite(problem.weight.astype(_F64)).all():
        return True
    return problem.probability_target and not np.isfinite(problem.target.astype(_F64)).all()


class NumpyStable(Implementation):
    name = "numpy"
    description = (
        "NumPy: max-shifted softmax cross-entropy with a log1p tail (tiny losses keep their "
        "digits) and a cancellation-free fused gradient; 16-bit computed in float32; "
        "cache-blocked and multithreaded"
    )

    def __init__(
        self,
        num_threads: int | None = None,
        tile_elems: int | None = None,
        max_tile_cols: int = DEFAULT_MAX_TILE_COLS,
        min_task_elems: int = DEFAULT_MIN_TASK_ELEMS,
    ):
        #: worker threads; None: XENT_NUM_THREADS or os.cpu_count()
        self.num_threads = num_threads
        #: elements per block; None: DEFAULT_TILE_BYTES of the compute dtype
        self.tile_elems = tile_elems
        self.max_tile_cols = max_tile_cols
        self.min_task_elems = min_task_elems

    @property
    def threads(self) -> int:
        return int(self.num_threads) if self.num_threads else default_threads()

    def plan(self, problem: Problem) -> _Plan | _EmptyPlan | _IeeePlan:
        if is_degenerate(problem):  # no sample or no class: nothing to compute
            return _EmptyPlan(problem)
        if _nonfinite_coefficients(problem):  # NaN/inf weights or probability targets
            return _IeeePlan(problem)
        tile = self.tile_elems
        if tile is None:
            tile = DEFAULT_TILE_BYTES // compute_dtype(problem.format).itemsize
        return _Plan(problem, self.threads, tile, self.max_tile_cols, self.min_task_elems)

    def loss_and_grad(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Loss and gradient from one fused pass."""
        return self.plan(problem).run(backward=True)

    def loss(self, problem: Problem) -> np.ndarray:
        return self.plan(problem).run(backward=False)[0]

    def grad(self, problem: Problem) -> np.ndarray:
        return self.plan(problem).run(backward=True)[1]

    def prepare(self, problem: Problem, *, backward: bool = False) -> Callable[[], object]:
        """Rows, tiling and scratch are set up here, untimed. The callable runs the forward
        (returns the loss) or the fused forward+backward (computes both, returns the gradient)."""
        plan = self.plan(problem)
        if backward:
            return lambda: plan.run(True)[1]
        return lambda: plan.run(False)[0]
