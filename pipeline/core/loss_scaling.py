"""Keep the training loss the mean over ALL items of an optimizer step when the step's batch
is split: over data-parallel processes (DDP) or over accumulated micro-batches.

Our models return a per-batch MEAN over the items they score (masked positions, labelled
tokens, sentences, words with a gold head). Split a step's batch in parts and the Trainer
combines part means with equal weight: DDP averages the processes' gradients, and with
``num_items_in_batch`` (which the Trainer computes for any model whose ``forward`` takes
``**kwargs``) it also multiplies each part's loss by the number of processes and skips its
division by the accumulation steps, expecting the model to have divided a SUM by the step's
item count. A model that returns a mean (our masked-LM forward does, by design) then gets
gradients N times too large, and parts with more items count no more than parts with fewer:
no longer the gradient of one process on the whole batch.

:func:`global_item_mean` fixes both by rescaling each part's mean to its share of the step's
mean, ``mean_part · items_part / items_step``; the Trainer's own factor and DDP's averaging
then give exactly the mean over the whole step (up to float rounding). The step's item count
is the Trainer's ``num_items_in_batch`` where it computes one (batches with ``labels``),
otherwise this part's count summed over the processes. Which batch key holds the items is a
model attribute ``loss_items`` (default ``labels``; -100 marks an unscored position).

With one process and no accumulation nothing is installed: the loss is bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

IGNORE = -100


def _items(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor | None:
    """How many items this batch's loss averages over, or None if it has no such key."""
    values = batch.get(getattr(model, "loss_items", "labels"))
    return None if values is None else values.ne(IGNORE).sum()


@contextmanager
def global_item_mean(model: torch.nn.Module, world_size: int, accumulation_steps: int = 1) -> Iterator[None]:
    """While active, ``model``'s training loss is its share of the whole step's item mean.

    An instance-level ``forward`` wrapper (the Trainer itself is not extended): it accepts
    the Trainer's ``num_items_in_batch`` instead of passing it on, so the model computes its
    usual mean. Evaluation (``model.eval()``) is passed through untouched. Removed on exit.
    """
    if world_size <= 1 and accumulation_steps <= 1:
        yield
        return
    original = model.forward
    had_own_forward = "forward" in model.__dict__  # an instance override (our masked-LM forward)

    def forward(*args: Any, num_items_in_batch: torch.Tensor | int | None = None, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        loss = getattr(output, "loss", None)
        if not model.training or loss is None:
            return output
        local = _items(model, kwargs)
        if local is None:
            return output  # nothing says what the mean is over: left as the model computed it
        local = local.to(loss.device)
        if num_items_in_batch is not None:
            # The Trainer multiplies this loss by the number of processes itself.
            total, factor = torch.as_tensor(num_items_in_batch, device=loss.device), 1
        else:
            total, factor = local.clone(), world_size
            if world_size > 1:
                torch.distributed.all_reduce(total)
        output.loss = loss * (local * factor / total.clamp(min=1))
        return output

    model.forward = forward
    try:
        yield
    finally:
        if had_own_forward:
            model.forward = original
        else:
            del model.forward
