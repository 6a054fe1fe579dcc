"""Part-of-speech tagging with UD's 17 UPOS tags: a linear head over first sub-words.

Only each word's first sub-word carries a label (the rest get -100), as in the reference
setup. Accuracy is over words: a word lost to truncation counts as wrong, so a too-short
``max_length`` shows up in the score instead of silently shrinking the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from pipeline.data.conllu import UPOS_TAGS, Sentence, read_conllu
from pipeline.tasks.base import Features, Task, eval_batches

IGNORE = -100


def first_subword_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Label each word's first sub-word; special tokens and continuation pieces get IGNORE."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else word_labels[word])
        previous = word
    return labels


class PosTagging(Task):
    name = "pos"
    metric = "accuracy"
    data_format = "conllu"
    labels = UPOS_TAGS

    def read(self, path: str | Path) -> list[Sentence]:
        return read_conllu(path)

    def build_model(self, base: str | Path, seed: int) -> PreTrainedModel:
        torch.manual_seed(seed)  # the new classifier's initial weights
        return AutoModelForTokenClassification.from_pretrained(
            str(base), num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id={t: i for i, t in enumerate(self.labels)},
        )

    def featurize(self, examples: Sequence[Sentence], tokenizer: PreTrainedTokenizerFast, max_length: int) -> list[Features]:
        label_ids = {tag: i for i, tag in enumerate(self.labels)}
        encoded = tokenizer([list(s.words) for s in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length)
        features = []
        for i, sentence in enumerate(examples):
            tags = [label_ids[tag] for tag in sentence.upos]
            features.append({
                "input_ids": encoded["input_ids"][i],
                "attention_mask": encoded["attention_mask"][i],
                "labels": first_subword_labels(encoded.word_ids(i), tags),
            })
        return features

    def collator(self, tokenizer: PreTrainedTokenizerFast) -> DataCollatorForTokenClassification:
        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    @torch.no_grad()
    def evaluate(
        self, model: PreTrainedModel, examples: Sequence[Sentence], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> dict[str, float]:
        features = self.featurize(examples, tokenizer, max_length)
        correct = 0
        for batch in eval_batches(model, features, self.collator(tokenizer), batch_size):
            labels = batch.pop("labels")
            predicted = model(**batch).logits.argmax(-1)
            scored = labels != IGNORE
            correct += int((predicted[scored] == labels[scored]).sum())
        words = sum(len(s.words) for s in examples)
        return {"accuracy": correct / words if words else float("nan"), "words": float(words)}
