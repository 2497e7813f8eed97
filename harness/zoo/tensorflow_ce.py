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

from harness.zoo.base import LAYOUTS, REDUCTIONS, Adapter, class_last, output, per_sample, rows_back
from harness.zoo.convert import from_tf, to_tf


class TensorFlow(Adapter):
    """tf.nn.(sparse_)softmax_cross_entropy_with_logits, tf.reduce_mean/sum, tf.GradientTape."""

    name = "tensorflow"
    description = "tf.nn.sparse_softmax_cross_entropy_with_logits / softmax_cross_entropy_with_logits, GradientTape"
    library = "tensorflow-cpu"
    extra = "zoo-tf"
    requires = ("tensorflow",)
    features = REDUCTIONS | LAYOUTS | {"probability_target"}

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

    def _loss(self, problem, loss):
        y = from_tf(loss)
        return output(problem, per_sample(problem, y) if problem.reduction == "none" else y)

    def loss(self, problem):
        return self._loss(problem, self._run(problem, grad=False)[0])

    def grad(self, problem):
        return self.loss_and_grad(problem)[1]

    def loss_and_grad(self, problem):
        loss, g = self._run(problem, grad=True)
        return self._loss(problem, loss), output(problem, rows_back(problem, from_tf(g)))
