"""The reference's own speed: the exact loss and gradient (every value >= 106 bits, correctly
rounded to the four formats), in-process.

* ``time_reference_evaluate``: a fixed 32 x 256 float32 problem (8192 logits) with one worker,
  through whatever path the reference picks (the fast pass settles these rows);
* ``time_reference_mpfr``: the same problem on the MPFR path alone;
* ``time_reference_fast``: 256 x 32768 float32 (8.4 M logits, normal sigma = 4) on every core:
  the fast pass's throughput, logits/s = 8388608 / time (the target is >= 10 M/s on 2 cores).

asv treats a larger value as worse, so the tracked figures are times (lower is better).
"""

from __future__ import annotations

from ._common import random_problem

N, C = 32, 256


class Reference:
    rounds = 1
    repeat = (1, 3, 5.0)
    warmup_time = 0.0
    number = 1

    def setup(self):
        from harness import reference

        self.reference = reference
        self.problem = random_problem(N, C, "float32", seed=1)
        reference.evaluate(self.problem, workers=1)  # numba's compile (or cache load) is not timed

    def time_reference_evaluate(self):
        self.reference.evaluate(self.problem, workers=1)

    def time_reference_mpfr(self):
        fast, self.reference.FAST = self.reference.FAST, False
        try:
            self.reference.evaluate(self.problem, workers=1)
        finally:
            self.reference.FAST = fast


class ReferenceFast:
    rounds = 1
    repeat = (1, 2, 30.0)
    warmup_time = 0.0
    number = 1
    timeout = 300

    def setup(self):
        import numpy as np

        from harness import reference
        from harness.problem import Problem

        self.reference = reference
        rng = np.random.default_rng(0)
        x = rng.standard_normal((256, 32768), dtype=np.float32) * 4
        self.problem = Problem(x, rng.integers(0, 32768, 256))
        reference.evaluate(Problem(x[:2, :64], np.zeros(2, np.int64)))  # compile outside timing

    def time_reference_fast(self):
        self.reference.evaluate(self.problem)
