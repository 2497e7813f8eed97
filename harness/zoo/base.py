"""What every zoo adapter shares: the library it wraps, the extra that installs it, and the
small, exact glue around a library's cross-entropy (layouts, the output dtype).

An adapter is an ordinary :class:`~harness.registry.Implementation` registered through the
``xent_harness.implementations`` entry points, so it is loaded, called and timed in a child of
its own like any plugin. It declares what the *library* offers (its ``dtypes``, its
``features``, and a ``supports(problem)`` for combinations a flat feature list cannot say) and
passes PyTorch's arguments to the library's own function the way a user of that library would.
The glue it may add is exact and says nothing about accuracy: moving the class axis last (a
transpose), one-hot encoding class indices, and the final conversion to the logits' dtype.
Anything that would need arithmetic the library does not do (class weights where it has none,
PyTorch's weighted mean where it cannot divide by the weights) is declared unsupported, so a
finding is always the library's.
"""

from __future__ import annotations

import numpy as np

from harness.problem import Problem
from harness.registry import FEATURES, Implementation

#: Every reduction, for adapters whose library has all three.
REDUCTIONS = frozenset({"reduction:mean", "reduction:sum", "reduction:none"})
#: Layout features every adapter can offer by transposing (exact).
LAYOUTS = frozenset({"kdim", "unbatched"})


class Adapter(Implementation):
    """A zoo adapter: set ``library`` (the distribution whose version is reported), ``extra``
    (its ``pip install 'xent-harness[EXTRA]'``) and ``requires`` (the modules it imports)."""

    library: str = ""
    extra: str = ""
    features: frozenset[str] = FEATURES
    opt_in = True  # third-party libraries: judged by name or by `xent-harness zoo`, not by default

    def available(self) -> str | None:
        reason = super().available()
        if reason and self.extra:
            return f"{reason} (pip install 'xent-harness[{self.extra}]')"
        return reason

    def describe(self) -> dict:
        return super().describe() | {"library": self.library, "extra": self.extra}



class AutodiffAdapter(Adapter):
    """An adapter whose library computes the loss and its autodiff gradient in one call:
    :meth:`_run` returns both as the library's values; this class converts them
    (:meth:`to_numpy`), puts per-sample losses and (M, C) gradient rows back in the problem's
    layout, and returns exactly the logits' dtype."""

    def _run(self, problem: Problem, grad: bool):
        """(loss, gradient or None) as the library returns them."""
        raise NotImplementedError

    @staticmethod
    def to_numpy(value) -> np.ndarray:
        return np.asarray(value)

    def grad_in_rows(self, problem: Problem) -> bool:
        """Whether the library's gradient is (M, C) rows (class axis last), else the logits' layout."""
        return True

    def _loss(self, problem: Problem, loss) -> np.ndarray:
        y = self.to_numpy(loss)
        return output(problem, per_sample(problem, y) if problem.reduction == "none" else y.reshape(()))

    def loss(self, problem):
        return self._loss(problem, self._run(problem, grad=False)[0])

    def grad(self, problem):
        return self.loss_and_grad(problem)[1]

    def loss_and_grad(self, problem):
        loss, g = self._run(problem, grad=True)
        g = self.to_numpy(g)
        return self._loss(problem, loss), output(problem, rows_back(problem, g) if self.grad_in_rows(problem) else g)

def class_last(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Logits as (M, C) rows and targets as (M,) indices or (M, C) probabilities (exact)."""
    return problem.rows()


def per_sample(problem: Problem, losses: np.ndarray) -> np.ndarray:
    """(M,) per-sample losses back in the problem's sample shape (for reduction 'none')."""
    return np.asarray(losses).reshape(problem.sample_shape)


def rows_back(problem: Problem, grad_rows: np.ndarray) -> np.ndarray:
    """An (M, C) gradient back in the logits' layout."""
    return np.ascontiguousarray(problem.unrows(np.asarray(grad_rows)))


def output(problem: Problem, y) -> np.ndarray:
    """A result as exactly the logits' dtype (what the harness requires): identity, an exact
    widening, or one rounding of a wider result, as the library's own cast would do."""
    y = np.asarray(y)
    return y if y.dtype == problem.dtype else y.astype(problem.dtype)


def one_hot(target: np.ndarray, num_classes: int, dtype) -> np.ndarray:
    """Class indices (M,) as (M, C) one-hot rows of ``dtype`` (exact)."""
    out = np.zeros((target.size, num_classes), dtype)
    out[np.arange(target.size), target.reshape(-1)] = 1
    return out
