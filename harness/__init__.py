"""xent-harness: prove a softmax cross-entropy right and fast.

The package reads as its pipeline:

    problem -> reference -> implementations -> sweeps -> results -> report

Only light modules are imported here, so ``import harness`` stays fast and works when
torch, jax or cupy are missing.
"""

__version__ = "0.1.0"

from harness.problem import Problem, ProblemError

__all__ = ["Problem", "ProblemError", "__version__"]
