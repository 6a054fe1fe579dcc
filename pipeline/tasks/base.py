"""What every task provides: how to read its data, its model head, its features, its metric.

Training code (LT-SFT, and later the baselines) and evaluation code only talk to this
interface, so adding a task is adding one module under ``pipeline/tasks/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from pipeline.core.parameters import layer_norm_parameter_names, maskable_parameter_names

Features = dict[str, Any]


class Task(ABC):
    name: ClassVar[str]
    title: ClassVar[str]  # the report's section heading
    metric: ClassVar[str]  # the headline metric (dev scores, the sparsity plot, `dvc exp show`)
    # Every metric the report tables show, headline last (dependency parsing: UAS and LAS).
    report_metrics: ClassVar[tuple[str, ...]] = ()
    higher_is_better: ClassVar[bool] = True
    data_format: ClassVar[str]  # file suffix of a split: "conllu", "txt", ...
    # The settings of ``tasks.<name>`` in params that this task takes (TaskSpec fields, e.g.
    # dp's ``head``), each a keyword of its constructor: see ``pipeline.tasks.task_for``.
    options: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def read(self, path: str | Path) -> list[Any]:
        """Examples of one split file."""

    @abstractmethod
    def build_model(self, base: str | Path, seed: int) -> PreTrainedModel:
        """The encoder at ``base`` with this task's head; the head initialised from ``seed``."""

    @abstractmethod
    def featurize(self, examples: Sequence[Any], tokenizer: PreTrainedTokenizerFast, max_length: int) -> list[Features]:
        """Model inputs (and labels) for training."""

    @abstractmethod
    def collator(self, tokenizer: PreTrainedTokenizerFast) -> Callable[[list[Features]], dict[str, torch.Tensor]]:
        """Pads a list of features into a training batch."""

    @abstractmethod
    def evaluate(
        self, model: PreTrainedModel, examples: Sequence[Any], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> dict[str, float]:
        """Metrics on ``examples``; must contain ``self.metric``."""

    def text_lines(self, example: Any) -> list[str]:
        """The raw text of one labelled example, a line per sentence (never its labels): the
        language's masked-LM text and the vocabulary trim read it."""
        return [" ".join(example.words)]

    def reported_metrics(self) -> tuple[str, ...]:
        return self.report_metrics or (self.metric,)

    def head_parameter_names(self, model: PreTrainedModel) -> list[str]:
        """Trainable parameters outside the encoder body: trained densely, stored whole."""
        maskable = set(maskable_parameter_names(model))
        frozen = layer_norm_parameter_names(model)
        return [
            name for name, p in model.named_parameters()
            if p.requires_grad and name not in maskable and name not in frozen
        ]


def eval_batches(
    model: torch.nn.Module, features: list[Features], collate: Callable, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches in order (no shuffling, so metrics are deterministic), on the model's device,
    with the model switched to eval mode (no dropout)."""
    model.eval()
    device = next(model.parameters()).device
    for batch in DataLoader(features, batch_size=batch_size, shuffle=False, collate_fn=collate):
        yield {key: value.to(device) for key, value in batch.items()}
