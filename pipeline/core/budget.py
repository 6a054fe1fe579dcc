"""How long one training phase runs (no torch: params parsing imports it)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseBudget:
    """How long one phase trains: a number of optimizer steps, or of epochs.

    An epoch budget may be clamped to ``min_steps``..``max_steps``, as the reference's
    language SFTs are ("100 epochs, at least 10k and at most 100k steps"): the steps
    are fixed once the training set's size is known (``resolve``).

    ``eval_every``: score the dev set every N optimizer steps (and at the last step; 0: never);
    ``select_best``: end the phase on the best-scoring of those states, as the reference's
    ``--load_best_model_at_end`` does (pipeline/core/best_checkpoint.py).
    """

    steps: int | None = None
    epochs: float | None = None
    min_steps: int | None = None
    max_steps: int | None = None
    eval_every: int = 0
    select_best: bool = False

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("a phase budget needs exactly one of steps or epochs")
        if (self.steps is not None and self.steps <= 0) or (self.epochs is not None and self.epochs <= 0):
            raise ValueError("a phase budget must be positive")
        if self.steps is not None and (self.min_steps is not None or self.max_steps is not None):
            raise ValueError("min_steps / max_steps only clamp an epoch budget")
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError("min_steps must not exceed max_steps")
        if self.eval_every < 0:
            raise ValueError("eval_every must be >= 0")
        if self.select_best and not self.eval_every:
            raise ValueError("select_best needs eval_every > 0 (the states it chooses from)")

    def resolve(self, examples: int, batch_size: int) -> int:
        """Optimizer steps for a training set of ``examples``; ``batch_size``: the examples one
        optimizer step sees (per-device batch × gradient accumulation steps)."""
        if self.steps is not None:
            return self.steps
        steps = math.ceil(math.ceil(examples / batch_size) * self.epochs)
        if self.min_steps is not None:
            steps = max(steps, self.min_steps)
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        return max(steps, 1)
