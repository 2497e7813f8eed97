"""Keras 3 (jax backend): ``keras.losses.SparseCategoricalCrossentropy`` and
``CategoricalCrossentropy`` with ``from_logits=True``, gradient by ``jax.value_and_grad``.

The loss objects a Keras user compiles a model with, called with their defaults:

* class indices: ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)``, class
  weights as ``sample_weight = w[y]``; Keras's sparse loss has no label smoothing, so smoothing
  with class indices is declared unsupported;
* probabilities: ``CategoricalCrossentropy(from_logits=True, label_smoothing=ε)`` (Keras smooths
  as PyTorch does, t' = (1 − ε)t + ε/C); PyTorch's per-class weights multiply probability
  targets, which Keras cannot express: unsupported;
* reductions: ``None`` ('none'), ``"sum"``, and ``"mean_with_sample_weight"`` for 'mean' (Σ w·l /
  Σ w, PyTorch's weighted mean; the ignored samples' weight is 0).

The loss objects' ``dtype`` is left at its default, ``keras.config.floatx()`` (float32): Keras
casts the logits to it, so float64 input is computed in float32 and 16-bit input upcast, and the
adapter rounds the result to the logits' dtype. ``KERAS_BACKEND=jax`` is set before Keras is
first imported (a process that already imported Keras with another backend is refused), and jax
runs with float64 enabled, as the built-in jax does.
"""

from __future__ import annotations

import os

import numpy as np

from harness.zoo.base import AutodiffAdapter, class_last

_REDUCTION = {"none": None, "sum": "sum", "mean": "mean_with_sample_weight"}


def _keras():
    import sys

    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    from harness.implementations.jax_impl import _jax

    jax, jnp, _ = _jax()
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras was imported with the {keras.backend.backend()!r} backend; "
                           "this adapter needs KERAS_BACKEND=jax")
    return keras, jax, jnp


class Keras(AutodiffAdapter):
    """keras.losses.(Sparse)CategoricalCrossentropy(from_logits=True), jax backend, jax gradient."""

    name = "keras"
    description = "keras.losses.SparseCategoricalCrossentropy / CategoricalCrossentropy(from_logits=True), jax backend"
    library = "keras"
    extra = "zoo-keras"
    requires = ("keras", "jax")
    contract = "keras"  # a 'mean' over no weight is 0 (divide_no_nan; docs/contracts.md)

    def supports(self, problem):
        reason = super().supports(problem)
        if reason:
            return reason
        if problem.label_smoothing and not problem.probability_target:
            return "label_smoothing with class indices not supported (SparseCategoricalCrossentropy has none)"
        if problem.weight is not None and problem.probability_target:
            return "weight with probability targets not supported (Keras weights samples, not classes)"
        return None

    def _run(self, problem, grad: bool):
        keras, jax, jnp = _keras()
        x, t = class_last(problem)
        reduction = _REDUCTION[problem.reduction]
        if problem.probability_target:
            fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=problem.label_smoothing,
                                                      reduction=reduction)
            sample_weight = None
        else:
            ignored = bool((t == problem.ignore_index).any())
            fn = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=problem.ignore_index if ignored else None, reduction=reduction)
            sample_weight = None
            if problem.weight is not None:
                safe = np.where(t == problem.ignore_index, 0, t)  # w[y] of an ignored y is never used
                sample_weight = problem.weight[safe]

        def objective(xj):
            loss = fn(t, xj, sample_weight=sample_weight)
            return jnp.sum(loss), loss

        if not grad:
            return np.asarray(objective(jnp.asarray(x))[1]), None
        (_, loss), g = jax.value_and_grad(objective, has_aux=True)(jnp.asarray(x))
        return np.asarray(loss), np.asarray(g)
