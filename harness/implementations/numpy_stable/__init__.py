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

  with b = w ((1 - eps) t + eps / C), B = sum_c b_c, W = sum_c w_c; x_c - m and these dot
  products are taken in the compute dtype, and rows where they overflow float32 (logits
  spanning more than its max, found by the hunt) are redone in float64 (rows.exact_dots;
  float64 rows spanning +-1e308 still give inf). The shift itself is exact:
  where 0 <= m <= log(max) - log C - 1, e^{x_j} is taken unshifted (no overflow, no more
  underflow than e^{x_j - m}) and exp(-m) is applied to the row sums in float64; elsewhere
  x_j - m is formed exactly (in float64 for float32 and 16-bit inputs, with a TwoSum correction
  exp(s + t) = exp(s) (1 + t) for float64 inputs). Rounding x_j - m in the input precision, as
  the textbook form does, costs |x_j - m| * u relative error in e_j: 32 ulps in float32 when
  the logits spread over 32..64.
* float16 / bfloat16 are computed in float32 and rounded once at the end; float32 in float32
  with every per-row quantity (sums, the loss, the gradient's row factor) in float64; float64
  in float64. Row sums use einsum over chunks of 128 elements, combined in float64 (longer
  chunks let a dominant term absorb the small ones: see sums.SUM_CHUNK).
  Observed against a 100-digit oracle: losses within 3 u, gradients within 4.5 u (u = 2^-53
  or 2^-24) on ordinary rows; float32 rows with a dominant logit (e^20 among terms near 1, a
  language model's confident rows) reach 8.6 u in their small gradient entries, where two
  float32 exponentials of NumPy's SIMD exp (each up to 2.4 u) and the row sum compound
  (tests/test_impl_numpy.py::test_long_confident_rows_float32). Not kept: float32 rows on the
  max shift (label smoothing) whose terms e^{x_j - m} are float32 subnormals (the target ~100
  above the rest): a loss ~4e-41 came out 9 ULP off in a constructed row and 1873 ULP in one
  the hunt found (still 2e-38 of the scaled budget; tests/test_impl_numpy_hunt.py).

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
  each chunk; a thread slowed by other work on its core takes fewer chunks. Rows longer than
  ``max_tile_cols`` are cut into column tiles whose sums (and maxima) are combined afterwards
  (sum = sum_j s_j exp(shift_j - m)); with too few rows to balance (fewer than 4 per thread)
  the column tiles are what the threads claim.
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
(:class:`~.fallbacks.PyTorchChainPlan`); problems without samples or classes (M = 0 or C = 0)
return PyTorch's fixed results (:mod:`harness.implementations._degenerate`).

Layout of the package: :mod:`.plan` (row views, tiling, scratch), :mod:`.state` (the arrays of
one run), :mod:`.run` (the timed part, its threads), :mod:`.whole_rows` and
:mod:`.column_tiles` (the passes over the logits), :mod:`.kernels` (their shared numerical
steps), :mod:`.rows` (per-row results, losses, reduction), :mod:`.rounding`, :mod:`.sums`,
:mod:`.fallbacks` (empty problems, non-finite coefficients).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.formats import compute_dtype
from harness.implementations._degenerate import is_degenerate
from harness.implementations.numpy_stable.fallbacks import (
    EmptyPlan,
    PyTorchChainPlan,
    nonfinite_coefficients,
)
from harness.implementations.numpy_stable.plan import (
    DEFAULT_MAX_TILE_COLS,
    DEFAULT_MIN_TASK_ELEMS,
    DEFAULT_TILE_BYTES,
    Plan,
    make_plan,
)
from harness.implementations.numpy_stable.rounding import _f32_to_f16, round_to
from harness.problem import Problem
from harness.registry import Implementation, default_threads

__all__ = [
    "DEFAULT_MAX_TILE_COLS",
    "DEFAULT_MIN_TASK_ELEMS",
    "DEFAULT_TILE_BYTES",
    "NumpyStable",
    "_f32_to_f16",
    "round_to",
]

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

    def plan(self, problem: Problem) -> Plan | EmptyPlan | PyTorchChainPlan:
        if is_degenerate(problem):  # no sample or no class: nothing to compute
            return EmptyPlan(problem)
        if nonfinite_coefficients(problem):  # NaN/inf weights or probability targets
            return PyTorchChainPlan(problem)
        tile = self.tile_elems
        if tile is None:
            tile = DEFAULT_TILE_BYTES // compute_dtype(problem.format).itemsize
        return make_plan(problem, self.threads, tile, self.max_tile_cols, self.min_task_elems)

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
