"""Forward and forward+backward time and peak memory: implementation × dtype × shape.

Each benchmark calls the zero-argument callable of ``Implementation.prepare``, which runs on
inputs already on the device (compiled, for jax) and synchronizes the device before returning,
so only the computation is timed. Shapes are 4 M logits each: an LLM-like vocabulary (256 ×
32768) and a classifier-like one (4096 × 1024).
"""

from __future__ import annotations

from ._common import DTYPES, IMPLS, implementation, random_problem

SHAPES = ("4096x1024", "256x32768")


class _Pass:
    params = (list(IMPLS), list(DTYPES), list(SHAPES))
    param_names = ("impl", "dtype", "shape")
    backward = False
    # quick: one process round, up to 5 samples or 2 s per combination
    rounds = 1
    repeat = (1, 5, 2.0)
    warmup_time = 0.05
    timeout = 180  # setup compiles (jax) on possibly slow shared runners

    def setup(self, impl, dtype, shape):
        self.impl = implementation(impl)
        N, C = (int(v) for v in shape.split("x"))
        problem = random_problem(N, C, dtype)
        reason = self.impl.supports(problem)
        if reason:
            raise NotImplementedError(reason)
        if self.backward and not self.impl.has_grad:
            raise NotImplementedError(f"{impl} provides no gradient")
        self.fn = self.impl.prepare(problem, backward=self.backward)
        self.fn()  # warm-up outside the timing (first autograd call, caches)


class Forward(_Pass):
    def time_forward(self, impl, dtype, shape):
        self.fn()

    def peakmem_forward(self, impl, dtype, shape):
        self.fn()


class ForwardBackward(_Pass):
    backward = True

    def time_forward_backward(self, impl, dtype, shape):
        self.fn()

    def peakmem_forward_backward(self, impl, dtype, shape):
        self.fn()
