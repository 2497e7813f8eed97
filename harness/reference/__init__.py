"""The exact softmax cross-entropy of PyTorch's contract, and its gradient, correctly rounded.

Arithmetic is done in MPFR through gmpy2 (the library behind Zimmermann's accuracy tables and
the fast backend of mpmath); public results are returned as ``mpmath.mpf``. Every input float is
converted exactly, and the formulas never subtract nearly equal quantities:

* row statistics: m = max_j x_j, k = argmax, d_j = x_j - m computed *exactly* (the working
  precision of the subtraction is raised to cover both exponents), e_j = exp(d_j) <= 1,
  s = sum_{j != k} e_j (a correctly rounded sum, ``mpfr_sum``), S = 1 + s;
* -log p_c = (m - x_c) + log1p(s): both terms are >= 0, so a tiny loss keeps every digit
  (the textbook log(sum e^x) - x_c returns 0 for logits [200, 0] even at 256 bits);
* every value is a **head** plus a **tail** (:class:`.value._Value`): the head is the value at
  s = 0, built from the inputs by +, -, * only and exact whenever it is a dyadic number; the tail
  is a coefficient times log1p(s), e_j/S or -s/S, with a relative error of a few units of 2^-prec
  (the derivation is in :func:`.row._row`). So the target-class gradient p_t - 1 is the exact
  head -w_t plus the tail w_t e_t/S (or, at the argmax, head 0 and tail -s/S): no cancellation.

Ziv's strategy: a value is accepted when its rigorous bound (plus the double-double view's own
rounding) is below 2^-106 of it and the interval rounds to one value in each of float16,
bfloat16, float32 and float64; otherwise that row is recomputed at twice the precision, up to
MAX_BITS. A value still undecided there is a rounding boundary plus a tail far below it
(float16 [0x1.f42p+9, 0]: 1000.25 + e^-1000.25): it is decided exactly from the exact head and
the tail's sign (:func:`.value._sticky`), never by giving up. Rows of tied logits have rational
gradients and are computed in rationals, so exact zeros stay exact zeros (+0).

Range: MPFR runs with its whole exponent range (about 2^+-2^30 as gmpy2 builds it); terms below
it (float32 [0, -2e9]: e^-2e9) are carried in mpmath, whose exponents are unbounded, so the
public API returns every value with its 106 bits and its sign however small. The double-double
view (``Exact``) holds RN_float64 of each value plus a low part; below 2^-960 it is the
correctly rounded float64 with a sticky low part, which is all that rounding needs.

Speed: a fast first pass (:mod:`harness.fastpath`, numba) computes exp in triple-double with a
proven bound for whole row blocks; rows it cannot settle (bound too wide, special values,
smoothing, probability targets) take the MPFR path above. Problems are evaluated in row blocks
(:class:`Blocks`) in bounded memory.

Special values follow IEEE arithmetic in the same formulas, which reproduces PyTorch: a -inf
logit gives e_j = 0; a -inf target logit gives +inf; 0 * inf (a zero weight or a zero
probability target meeting a -inf logit) gives NaN; a row with NaN or +inf, or with every logit
-inf, gives NaN loss and a NaN gradient row (even when the row is ignored, because PyTorch's
log_softmax backward multiplies its NaN softmax by a zero upstream gradient). Rows whose
arithmetic meets an infinity elsewhere (an infinite probability target; a 'mean' whose kept
weights sum to 0) follow torch's own chain of operations in IEEE arithmetic
(:func:`.row._row_ieee`).

The package, one responsibility a module (each imports only those above it in this list):

* :mod:`.arithmetic`: the working precisions, the MPFR context, exact MPFR <-> mpmath conversion;
* :mod:`.exact`: :class:`Exact`, the result (double-double views, bounds, values of record);
* :mod:`.value`: one value as head + tail, and the sticky decision of boundary cases;
* :mod:`.stability`: the double-double view of MPFR values and the Ziv loop's acceptance test;
* :mod:`.row_setup`: what every row of a problem shares (weights, denominator, flags);
* :mod:`.row`: one row at one precision (head + tail formulas, deep terms, ties, IEEE rows);
* :mod:`.ziv_loop`: a block of rows through the Ziv loop (precision doubling, then sticky);
* :mod:`.pool`: the worker processes (fork or forkserver);
* :mod:`.fast_pass`: the vectorized first pass around :mod:`harness.fastpath`'s kernels;
* :mod:`.reduction`: 'mean' / 'sum' over the per-row losses, exactly;
* :mod:`.row_blocks`: :class:`Blocks`, the problem in row blocks in bounded memory;
* :mod:`.api`: ``evaluate``, ``evaluate_many``, ``blocks`` and the mpmath API.
"""

from __future__ import annotations

import os

from harness.reference.api import (
    blocks,
    cross_entropy,
    cross_entropy_grad,
    evaluate,
    evaluate_many,
    rounded,
)
from harness.reference.arithmetic import GOOD_BITS, MAX_BITS, START_BITS
from harness.reference.arithmetic import _to_mpf_array as _to_mpf_array  # for harness.golden
from harness.reference.exact import Exact
from harness.reference.row_blocks import BLOCK_LOGITS, Blocks, GradBlock

#: Bump when the algorithm or the stored layout changes: invalidates cached references.
VERSION = 2  # 2: 106-bit narrow rows, head + tail values, the fast pass, torch IEEE rows
#: Set XENT_REFERENCE_FAST=0 to force the MPFR path everywhere (for comparisons and debugging).
#: fast_pass reads it here at every block, so ``harness.reference.FAST = False`` switches it off.
FAST = os.environ.get("XENT_REFERENCE_FAST", "1") != "0"

__all__ = [
    "BLOCK_LOGITS",
    "FAST",
    "GOOD_BITS",
    "MAX_BITS",
    "START_BITS",
    "VERSION",
    "Blocks",
    "Exact",
    "GradBlock",
    "blocks",
    "cross_entropy",
    "cross_entropy_grad",
    "evaluate",
    "evaluate_many",
    "rounded",
]
