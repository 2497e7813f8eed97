"""TensorFlow: ``tf.nn.sparse_softmax_cross_entropy_with_logits`` (class indices) and
``tf.nn.softmax_cross_entropy_with_logits`` (probabilities), gradient by ``tf.GradientTape``.

TensorFlow's core ops, as a TensorFlow user calls them: rows with the class axis last (a
transpose for K-dim and unbatched inputs), ``tf.reduce_mean`` / ``tf.reduce_sum`` for the
reductions. The ops have no class weights, ``ignore_index`` or label smoothing (those live in
Keras, a separate adapter): declared unsupported. The fused kernels compute in the input's dtype
on the CPU (float16 and bfloat16 included), and their registered gradient is ``softmax − labels``
whatever the labels sum to. bfloat16 crosses by ``tf.bitcast`` (see :mod:`harness.zoo.convert`).
"""

from __future__ import annotations

from harness.zoo.base import LAYOUTS, REDUCTIONS, AutodiffAdapter, class_last
from harness.zoo.convert import from_tf, to_tf


class TensorFlow(AutodiffAdapter):
    """tf.nn.(sparse_)softmax_cross_entropy_with_logits, tf.reduce_mean/sum, tf.GradientTape."""

    name = "tensorflow"
    description = "tf.nn.sparse_softmax_cross_entropy_with_logits / softmax_cross_entropy_with_logits, GradientTape"
    library = "tensorflow-cpu"
    extra = "zoo-tf"
    requires = ("tensorflow",)
    contract = "tensorflow"  # the gradient assumes normalised probability targets (docs/contracts.md)
    features = REDUCTIONS | LAYOUTS | {"probability_target"}

    to_numpy = staticmethod(from_tf)

    def _run(self, problem, grad: bool):
        import tensorflow as tf

        x, t = class_last(problem)
        xt, tt = to_tf(x), to_tf(t)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            if problem.probability_target:
                per = tf.nn.softmax_cross_entropy_with_logits(labels=tt, logits=xt)
            else:
                per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tt, logits=xt)
            if problem.reduction == "none":
                loss, total = per, tf.reduce_sum(per)
            else:
                loss = total = tf.reduce_mean(per) if problem.reduction == "mean" else tf.reduce_sum(per)
        g = tape.gradient(total, xt) if grad else None
        return loss, g
