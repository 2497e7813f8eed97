"""optax's softmax cross-entropies, as an optax user calls them (no PyTorch options around them).

Three variants, one class each (the built-in ``jax`` wraps the first with PyTorch's weights,
``ignore_index`` and smoothing; these are the plain functions):

* ``optax-integer-labels``: ``optax.softmax_cross_entropy_with_integer_labels(x, t)`` for class
  indices;
* ``optax-softmax``: ``optax.softmax_cross_entropy(x, labels)`` with probability targets, or
  class indices one-hot encoded (``jax.nn.one_hot``), label smoothing by ``optax.smooth_labels``;
* ``optax-safe``: ``optax.safe_softmax_cross_entropy`` (0·log 0 = 0 where a logit is −inf), the
  same targets and smoothing.

Reductions are ``jnp.mean`` / ``jnp.sum`` of the per-sample losses (what optax's documentation
shows), the gradient ``jax.value_and_grad`` of the reduced loss, jitted. optax computes in the
input's dtype: float16 and bfloat16 are not upcast. float64 is float64 (``jax_enable_x64``, as
the built-in jax switches it on). optax has no class weights or ``ignore_index``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from harness.zoo.base import LAYOUTS, REDUCTIONS, AutodiffAdapter, class_last


@cache
def _function(variant: str, probability: bool, reduction: str, num_classes: int, smoothing: bool):
    from harness.implementations.jax_impl import _jax

    jax, jnp, optax = _jax()  # x64 on, the compilation cache set

    def losses(x, t, eps):
        if variant == "integer-labels":
            return optax.softmax_cross_entropy_with_integer_labels(x, t)
        labels = t if probability else jax.nn.one_hot(t, num_classes, dtype=x.dtype)
        if smoothing:
            labels = optax.smooth_labels(labels, eps)
        if variant == "safe":
            return optax.safe_softmax_cross_entropy(x, labels)
        return optax.softmax_cross_entropy(x, labels)

    def reduced(x, t, eps):
        per = losses(x, t, eps)
        if reduction == "none":
            return jnp.sum(per), per
        value = jnp.mean(per) if reduction == "mean" else jnp.sum(per)
        return value, value

    forward = jax.jit(lambda x, t, eps: reduced(x, t, eps)[1])
    both = jax.jit(jax.value_and_grad(reduced, has_aux=True))
    return forward, both


class _Optax(AutodiffAdapter):
    library = "optax"
    extra = "zoo-optax"
    requires = ("jax", "optax")
    #: optax's conventions differ per function (docs/contracts.md): each variant says its own
    contract = "pytorch"
    variant = ""

    def _run(self, problem, grad: bool):
        x, t = class_last(problem)
        fwd, both = _function(self.variant, problem.probability_target, problem.reduction,
                              problem.num_classes, problem.label_smoothing > 0)
        eps = np.asarray(problem.label_smoothing, problem.dtype)
        if not grad:
            return fwd(x, t, eps), None
        (_, loss), g = both(x, t, eps)
        return loss, g

class OptaxIntegerLabels(_Optax):
    """optax.softmax_cross_entropy_with_integer_labels, jnp.mean/jnp.sum, jax.value_and_grad."""

    name = "optax-integer-labels"
    description = "optax.softmax_cross_entropy_with_integer_labels (class indices), jnp reductions, jitted"
    variant = "integer-labels"
    contract = "optax"  # a +inf logit gives +inf
    features = REDUCTIONS | LAYOUTS


class OptaxSoftmax(_Optax):
    """optax.softmax_cross_entropy on probabilities or one-hot indices, optax.smooth_labels."""

    name = "optax-softmax"
    description = "optax.softmax_cross_entropy (probabilities, or jax.nn.one_hot indices), optax.smooth_labels"
    variant = "softmax"
    contract = "optax-softmax"  # 0 · log 0 = NaN where a one-hot label is 0 at a −inf logit
    features = REDUCTIONS | LAYOUTS | {"probability_target", "label_smoothing"}


class OptaxSafe(_Optax):
    """optax.safe_softmax_cross_entropy (0·log 0 = 0 for −inf logits), as optax-softmax."""

    name = "optax-safe"
    description = "optax.safe_softmax_cross_entropy (0·log 0 = 0 at −inf logits), one-hot indices, smooth_labels"
    variant = "safe"
    # PyTorch's for class indices (0 · log 0 = 0 is PyTorch's index semantics); its finite value
    # for a probability target 0 at a −inf logit (PyTorch: NaN) is not profiled
    features = REDUCTIONS | LAYOUTS | {"probability_target", "label_smoothing"}
