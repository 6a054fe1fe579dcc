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
    """

    steps: int | None = None
    epochs: float | None = None
    min_steps: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("a phase budget needs exactly one of steps or epochs")
        if (self.steps is not None and self.steps <= 0) or (self.epochs is not None and self.epochs <= 0):
            raise ValueError("a phase budget must be positive")
        if self.steps is not None and (self.min_steps is not None or self.max_steps is not None):
            raise ValueError("min_steps / max_steps only clamp an epoch budget")
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError("min_steps must not exceed max_steps")

    def resolve(self, examples: int, batch_size: int) -> int:
        """Optimizer steps for a training set of ``examples`` (one device, no accumulation)."""
        if self.steps is not None:
            return self.steps
        steps = math.ceil(math.ceil(examples / batch_size) * self.epochs)
        if self.min_steps is not None:
            steps = max(steps, self.min_steps)
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        return max(steps, 1)
