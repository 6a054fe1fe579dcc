"""Word tagging (POS, NER): a token-classification head over each word's first sub-word.

Only each word's first sub-word carries a label (the rest, and special tokens, get -100),
as in the reference setup. At evaluation the tag predicted at a word's first sub-word is
that word's prediction; a word with no first sub-word in the (truncated) input gets None,
and each task's ``score`` decides what that counts as (POS: wrong; NER: ``O``), so a
too-short ``max_length`` shows up in the score instead of silently shrinking the test set.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import (
    AutoModelForTokenClassification,
    BatchEncoding,
    DataCollatorForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from pipeline.tasks.base import Features, Task, eval_batches

IGNORE = -100


def first_subword_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Label each word's first sub-word; special tokens and continuation pieces get IGNORE."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else word_labels[word])
        previous = word
    return labels


def first_subword_words(word_ids: Sequence[int | None]) -> list[int]:
    """The word index of each first sub-word, in order (the positions ``first_subword_labels`` labels)."""
    words, previous = [], None
    for word in word_ids:
        if word is not None and word != previous:
            words.append(word)
        previous = word
    return words


class WordTagging(Task):
    """A tagging task over words: subclasses name the tag set, read examples, and score.

    Subclasses provide ``labels`` (the tag set, in label-id order), ``read``,
    ``words_of``/``tags_of`` (an example's words and gold tags) and ``score``.
    """

    labels: ClassVar[tuple[str, ...]]

    @abstractmethod
    def words_of(self, example: Any) -> Sequence[str]:
        """The example's words."""

    @abstractmethod
    def tags_of(self, example: Any) -> Sequence[str]:
        """The example's gold tags, one per word, each in ``labels``."""

    @abstractmethod
    def score(self, gold: list[list[str]], predicted: list[list[str | None]]) -> dict[str, float]:
        """Metrics from gold and predicted tag sequences (one per example, one tag per word);
        a predicted None is a word lost to truncation. Must contain ``self.metric``."""

    def build_model(self, base: str | Path, seed: int) -> PreTrainedModel:
        torch.manual_seed(seed)  # the new classifier's initial weights
        return AutoModelForTokenClassification.from_pretrained(
            str(base), num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id={t: i for i, t in enumerate(self.labels)},
        )

    def _encode(self, examples: Sequence[Any], tokenizer: PreTrainedTokenizerFast, max_length: int) -> BatchEncoding:
        return tokenizer([list(self.words_of(e)) for e in examples], is_split_into_words=True,
                         truncation=True, max_length=max_length)

    def _features(self, examples: Sequence[Any], encoded: BatchEncoding) -> list[Features]:
        label_ids = {tag: i for i, tag in enumerate(self.labels)}
        features = []
        for i, example in enumerate(examples):
            tags = [label_ids[tag] for tag in self.tags_of(example)]
            features.append({
                "input_ids": encoded["input_ids"][i],
                "attention_mask": encoded["attention_mask"][i],
                "labels": first_subword_labels(encoded.word_ids(i), tags),
            })
        return features

    def featurize(self, examples: Sequence[Any], tokenizer: PreTrainedTokenizerFast, max_length: int) -> list[Features]:
        return self._features(examples, self._encode(examples, tokenizer, max_length))

    def collator(self, tokenizer: PreTrainedTokenizerFast) -> DataCollatorForTokenClassification:
        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    @torch.no_grad()
    def predict(
        self, model: PreTrainedModel, examples: Sequence[Any], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> list[list[str | None]]:
        """Each example's predicted tag per word; None for a word lost to truncation."""
        encoded = self._encode(examples, tokenizer, max_length)
        features = self._features(examples, encoded)
        predicted: list[list[str | None]] = []
        for batch in eval_batches(model, features, self.collator(tokenizer), batch_size):
            labels = batch.pop("labels")
            argmax = model(**batch).logits.argmax(-1)
            for row in range(labels.shape[0]):
                i = len(predicted)
                tags: list[str | None] = [None] * len(self.words_of(examples[i]))
                words = first_subword_words(encoded.word_ids(i))
                # Labelled positions, in order, are the first sub-words (whatever the padding side).
                ids = argmax[row][labels[row] != IGNORE].tolist()
                if len(ids) != len(words):
                    raise AssertionError(f"example {i}: {len(ids)} labelled positions for {len(words)} words")
                for word, label_id in zip(words, ids):
                    tags[word] = self.labels[label_id]
                predicted.append(tags)
        return predicted

    def evaluate(
        self, model: PreTrainedModel, examples: Sequence[Any], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> dict[str, float]:
        predicted = self.predict(model, examples, tokenizer, max_length, batch_size)
        gold = [list(self.tags_of(e)) for e in examples]
        return self.score(gold, predicted)
