"""The `head-only` floor: the untouched pretrained encoder with only a task head trained.

It measures what the encoder's representations give by themselves: every LT-SFT (or
adapter) number should be read against it. The result is stored as a SparseDiff with no
sparse entries and the head as its dense tensors, so evaluation composes it like any diff.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import PreTrainedModel

from pipeline.sft import SparseDiff, maskable_parameter_names, snapshot
from pipeline.sparse_adamw import SparseAdamW
from pipeline.training import PhaseBudget, RunSettings, run_trainer


def train_head_only(
    model: PreTrainedModel,
    train_features: Sequence[dict],
    collator: Callable,
    head: Sequence[str],
    budget: PhaseBudget,
    settings: RunSettings,
    max_grad_norm: float = 1.0,
    diff_meta: dict[str, Any] | None = None,
) -> SparseDiff:
    """Train the ``head`` parameters with everything else frozen; return the head as a diff."""
    maskable = maskable_parameter_names(model)
    theta0 = snapshot(model, maskable)
    params = dict(model.named_parameters())
    trainable = set(head)
    for name, param in params.items():
        param.requires_grad_(name in trainable)
    optimizer = SparseAdamW([params[n] for n in head], lr=settings.learning_rate, max_grad_norm=max_grad_norm)
    run_trainer(model, optimizer, train_features, collator, budget, settings, "head-only")
    return SparseDiff.from_states(theta0, snapshot(model, [*maskable, *head]), maskable, head, **(diff_meta or {}))
