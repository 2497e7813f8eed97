"""The reference's own speed: the exact loss and gradient of a fixed 32 × 256 float32 problem
(8192 logits) in MPFR, in-process with one worker. It bounds how large a sweep can be.

asv treats a larger value as worse, so the tracked figure is a time (lower is better) rather
than a rate: logits per second = 8192 / time.
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

        self.evaluate = reference.evaluate
        self.problem = random_problem(N, C, "float32", seed=1)

    def time_reference_evaluate(self):
        self.evaluate(self.problem, workers=1)
