"""PaddlePaddle: ``paddle.nn.functional.cross_entropy`` on the CPU, gradient by ``paddle.grad``.

Paddle's signature is PyTorch's plus ``soft_label``/``axis``/``use_softmax``: class weights,
``ignore_index``, the three reductions, ``label_smoothing`` and probability targets
(``soft_label=True``) pass straight through, on rows with the class axis last (``axis=-1``, a
transpose for K-dim and unbatched inputs). Paddle's CPU kernel ``cross_entropy_with_softmax`` is
registered for float32 and float64 only ("Paddle support following DataTypes: float64,
float32"), so the 16-bit formats are declared unsupported here. Paddle documents a negative
``ignore_index`` as "no label value needs to be ignored" (its 'mean' then divides by every
sample, although the default is PyTorch's −100), and ``ignore_index`` as valid only for class
indices: problems with targets ignored through a negative ``ignore_index`` are declared
unsupported.
"""

from __future__ import annotations

from harness.zoo.base import AutodiffAdapter, class_last
from harness.zoo.convert import from_paddle, to_paddle


class Paddle(AutodiffAdapter):
    """paddle.nn.functional.cross_entropy (CPU), every PyTorch option, gradient by paddle.grad."""

    name = "paddle"
    description = "paddle.nn.functional.cross_entropy on the CPU (axis=-1, soft_label for probabilities), paddle.grad"
    library = "paddlepaddle"
    extra = "zoo-paddle"
    requires = ("paddle",)
    dtypes = frozenset({"float32", "float64"})

    def supports(self, problem):
        reason = super().supports(problem)
        if reason is None and problem.ignore_index < 0 and "ignore_index" in problem.features:
            return ("negative ignore_index not supported (Paddle documents it as 'no label value needs to be "
                    "ignored')")
        return reason

    to_numpy = staticmethod(from_paddle)

    def _run(self, problem, grad: bool):
        import paddle

        x, t = class_last(problem)
        xt = to_paddle(x)
        xt.stop_gradient = not grad
        w = None if problem.weight is None else to_paddle(problem.weight)
        loss = paddle.nn.functional.cross_entropy(
            xt, to_paddle(t), weight=w, ignore_index=problem.ignore_index, reduction=problem.reduction,
            soft_label=problem.probability_target, axis=-1, label_smoothing=problem.label_smoothing)
        g = None
        if grad:
            (g,) = paddle.grad([loss], [xt], grad_outputs=[paddle.ones_like(loss)])
        return loss, g
