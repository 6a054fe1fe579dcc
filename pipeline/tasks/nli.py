"""Natural language inference (XNLI/AmericasNLI-style): a sentence-pair classifier, 3 labels.

The data (``NliExample``, JSON-lines files, ``NLI_LABELS`` in MultiNLI's order
entailment/neutral/contradiction = 0/1/2) lives in ``pipeline.formats.nli``; it is re-exported
here. The model is ``AutoModelForSequenceClassification``; the trained-dense head is the
``classifier`` module: BERT's pooler belongs to the encoder body (``bert.pooler``), so
``Task.head_parameter_names`` leaves it maskable like the rest of the body. Accuracy is
over all examples (truncation only shortens inputs; no example is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from pipeline.formats.nli import NLI_LABELS, NliExample, read_nli, write_nli
from pipeline.tasks.base import Features, Task, eval_batches

__all__ = ["NLI_LABELS", "NaturalLanguageInference", "NliExample", "read_nli", "write_nli"]


class NaturalLanguageInference(Task):
    name = "nli"
    title = "Natural language inference (NLI)"
    metric = "accuracy"
    data_format = "jsonl"
    labels = NLI_LABELS

    def read(self, path: str | Path) -> list[NliExample]:
        return read_nli(path)

    def text_lines(self, example: NliExample) -> list[str]:
        return [example.premise, example.hypothesis]

    def build_model(self, base: str | Path, seed: int) -> PreTrainedModel:
        # The seed fixes the new classifier and, where the checkpoint has none (an MLM
        # checkpoint such as models/base), the pooler: evaluation rebuilds the same θ0.
        torch.manual_seed(seed)
        return AutoModelForSequenceClassification.from_pretrained(
            str(base), num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id={t: i for i, t in enumerate(self.labels)},
        )

    def featurize(
        self, examples: Sequence[NliExample], tokenizer: PreTrainedTokenizerFast, max_length: int
    ) -> list[Features]:
        """Premise/hypothesis pairs, truncated longest-first to ``max_length``. Segment ids are
        always returned: BERT pairs need them (a tokenizer need not list them among its
        model inputs), and tokenizers of models without segments (XLM-R) give all zeros."""
        if not examples:
            return []
        label_ids = {label: i for i, label in enumerate(self.labels)}
        encoded = tokenizer([e.premise for e in examples], [e.hypothesis for e in examples],
                            truncation="longest_first", max_length=max_length, return_token_type_ids=True)
        return [
            {key: encoded[key][i] for key in ("input_ids", "token_type_ids", "attention_mask")}
            | {"labels": label_ids[example.label]}
            for i, example in enumerate(examples)
        ]

    def collator(self, tokenizer: PreTrainedTokenizerFast) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(tokenizer)

    @torch.no_grad()
    def evaluate(
        self, model: PreTrainedModel, examples: Sequence[NliExample], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> dict[str, float]:
        features = self.featurize(examples, tokenizer, max_length)
        correct = 0
        for batch in eval_batches(model, features, self.collator(tokenizer), batch_size):
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
        n = len(examples)
        return {"accuracy": correct / n if n else float("nan"), "examples": float(n)}
