"""What the kernels promise and require: the proven error bounds, the flag thresholds, the
column limit, and the array form of their inputs.

The bounds are proven in the docstrings of :mod:`harness.fastpath.exponential` (``EXP_REL``,
``SUM_REL``, ``SUM_ABS``, the flags) and :mod:`harness.fastpath.scaling` (``PROD_REL``);
:mod:`harness.reference` builds its own error bounds on them.
"""

from __future__ import annotations

import numpy as np

EXP_REL = 2.0**-118
SUM_REL = EXP_REL + 2.0**-120
SUM_ABS = 2.0**-1073
PROD_REL = 2.0**-153.6  # the product's own error (the view's rounding excluded)
FLAG_D = -658.0  # s2 < FLAG_D  => flag 1 or 2
FLAG1_E = 2.0**-949.29  # flag 1 or 2 => e_true < FLAG1_E  (exp(-658 + 2^-41) < 2^-949.29)
FLAG1_ABS = 2.0**-1073  # flag 1: |e1 + e2 + e3 - e| <= EXP_REL e + FLAG1_ABS
FLAG2_D = -693.14718055  # -1000 ln 2 + 2^-30.4:  e_true < 2^-1000 => s2 < FLAG2_D => flag 2
FLAG_E = 2.0**-999.9999999  # flag 2 => e_true < FLAG_E  (exp(FLAG2_D + 2^-41) < 2^-999.9999999)
DROP_D = -745.5  # s2 < DROP_D => e_true < 2^-1075.5, stored and summed as 0
FLAG3_D = -760.0  # s2 < FLAG3_D => flag 3: e_true < 2^FLAG3_LOG2 (exp(-760 + 2^-41) < 2^-1096.4)
FLAG3_LOG2 = -1096  # flag 3 => e_true < 2^FLAG3_LOG2 (not a double: used scaled by 2^100)
FLAG3_E100 = 2.0 ** (FLAG3_LOG2 + 100)
MAX_COLS = 1 << 22
BOUND_PAD = 1.0 + 2.0**-50  # covers |f e| <= |hi| (1 + 2^-52) and a bound's own rounding


def as_f64_2d(a, name):
    a = np.asarray(a)
    if a.dtype != np.float64 or a.ndim != 2 or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous float64 2-D array")
    return a
