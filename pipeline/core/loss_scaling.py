"""Gradient accumulation (and data parallelism) that sums to the same gradient as one big batch.

The Trainer passes ``num_items_in_batch`` (the labelled items of the whole optimizer step:
every micro-batch, and with ``average_tokens_across_devices`` every rank) to a model whose
``forward`` takes ``**kwargs``, and then trusts the model to divide its loss by it, so it does
NOT divide by the number of accumulation steps. Our models' losses (BERT's token and sequence
classification heads, our masked-LM forward) ignore it and return a mean over the
micro-batch's own labelled items: with 4 × 2 the step's gradient would be the SUM of two
means, twice that of batch 8 (before clipping).

``per_item_loss`` fixes this from outside the model: for the duration of a run it wraps the
instance's ``forward`` (as pipeline/tasks/mlm.py does; nothing of the class changes) so that
a loss that is a mean over this micro-batch's labels ≠ -100 (the items the Trainer counts)
becomes sum / num_items_in_batch: the micro-batches then add up to the mean over the whole
optimizer step, as batch 8 computes it (equal up to float summation order). Models that
decline loss kwargs (``accepts_loss_kwargs = False``, e.g. the dependency parser, whose
items are not ``labels``) are left alone: the Trainer divides each micro-batch's mean by the
number of accumulation steps, the mean of micro-batch means.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

IGNORE = -100  # the label the Trainer's item count (and every loss here) skips


@contextlib.contextmanager
def per_item_loss(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """While active, ``model``'s loss is normalised by the optimizer step's item count (see above)."""
    if not enabled or getattr(model, "accepts_loss_kwargs", True) is False:
        yield
        return
    had_own = "forward" in vars(model)
    inner = model.forward

    def forward(*args: Any, num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        outputs = inner(*args, **kwargs)
        labels = kwargs.get("labels")
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if num_items_in_batch is not None and labels is not None and loss is not None:
            outputs["loss"] = loss * labels.ne(IGNORE).sum() / num_items_in_batch
        return outputs

    model.forward = forward
    try:
        yield
    finally:
        if had_own:
            model.forward = inner
        else:
            del model.forward
