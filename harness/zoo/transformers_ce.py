"""Hugging Face transformers: ``transformers.loss.loss_utils.ForCausalLMLoss``, the loss every
causal language model's ``forward(labels=...)`` computes, gradient by torch autograd.

Called as a model calls it, with the labels already shifted (``shift_labels=target``, so no
second shift) and ``vocab_size=C``: 'mean' is ``num_items_in_batch=None`` (PyTorch's mean over
the non-ignored tokens), 'sum' is ``num_items_in_batch=1`` (the sum divided by 1). It has no
class weights, probability targets or reduction 'none'. ``label_smoothing`` is passed as a
keyword, the way model code forwards ``**kwargs`` to it: ``ForCausalLMLoss`` accepts it, and what
it does with it is for the sweeps to find. It upcasts the logits with ``logits.float()`` (to
float32, whatever they were); the adapter rounds its result to the logits' dtype. Rows with the
class axis last (a transpose for K-dim inputs), as a model's (batch, sequence, vocab) logits.
"""

from __future__ import annotations

from harness.zoo.base import LAYOUTS, AutodiffAdapter, class_last
from harness.zoo.convert import from_torch, to_torch


class Transformers(AutodiffAdapter):
    """transformers ForCausalLMLoss (pre-shifted labels), mean or sum, torch autograd gradient."""

    name = "transformers"
    description = "transformers.loss.loss_utils.ForCausalLMLoss(logits, shift_labels=t), torch autograd"
    library = "transformers"
    extra = "zoo-transformers"
    requires = ("transformers", "torch")
    features = LAYOUTS | {"ignore_index", "label_smoothing", "reduction:mean", "reduction:sum"}

    to_numpy = staticmethod(from_torch)

    def _run(self, problem, grad: bool):
        import torch
        from transformers.loss.loss_utils import ForCausalLMLoss

        rows, t = class_last(problem)
        x = to_torch(rows).requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            loss = ForCausalLMLoss(x, None, problem.num_classes, shift_labels=to_torch(t),
                                   num_items_in_batch=1 if problem.reduction == "sum" else None,
                                   ignore_index=problem.ignore_index, label_smoothing=problem.label_smoothing)
            g = torch.autograd.grad(loss, x)[0] if grad else None
        return loss, g
