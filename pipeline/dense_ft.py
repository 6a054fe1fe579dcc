"""Dense fine-tuning, stored as a diff: `full-ft`, the dense half of `dense-composed`, and
the `head-only` floor.

All three train densely from the model's current state θ_start and return φ = θ − θ_start
as a SparseDiff (every entry that moved, so not sparse at all) with the head as its dense
tensors: evaluation composes them with the same code as LT-SFT diffs, which is what makes
the comparison fair. LayerNorms stay frozen, exactly as in LT-SFT's own dense phase 1, so
that full fine-tuning differs from LT-SFT only in sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import PreTrainedModel

from pipeline.sft import SparseDiff, maskable_parameter_names, snapshot
from pipeline.training import PhaseBudget, RunSettings, train_parameters


def train_dense(
    model: PreTrainedModel,
    train_features: Sequence[dict],
    collator: Callable,
    head: Sequence[str],
    budget: PhaseBudget,
    settings: RunSettings,
    train_body: bool = True,
    max_grad_norm: float = 1.0,
    description: str = "dense",
    diff_meta: dict[str, Any] | None = None,
    head_learning_rate: float | None = None,
) -> SparseDiff:
    """Train the encoder body (unless ``train_body`` is False: head-only) and ``head``."""
    maskable = maskable_parameter_names(model)
    start = snapshot(model, maskable)
    trained = [*maskable, *head] if train_body else list(head)
    train_parameters(model, trained, train_features, collator, budget, settings, description, max_grad_norm,
                     head=head, head_learning_rate=head_learning_rate)
    return SparseDiff.from_states(start, snapshot(model, [*maskable, *head]), maskable, head, **(diff_meta or {}))
