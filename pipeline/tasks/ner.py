"""Named-entity recognition (PER, ORG, LOC in IOB2): word tagging over first sub-words.

Scored like CoNLL (conlleval): entity-level micro precision, recall and F1 with seqeval in
its default mode. An entity counts only if both its span and its type match exactly, so a
type error is one false positive and one false negative. Predicted sequences need not be
valid IOB2: as in conlleval, an ``I-X`` that does not continue an ``X`` entity (after
``O``, at the start, or after another type) opens a new ``X`` entity. Words lost to
truncation are predicted ``O``, so their entities count as false negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


from pipeline.formats.bio import NER_TAGS, OUTSIDE, TaggedSentence, read_bio
from pipeline.tasks.tagging import WordTagging


class NamedEntityRecognition(WordTagging):
    name = "ner"
    title = "Named entity recognition (NER)"
    metric = "f1"
    data_format = "bio"
    labels = NER_TAGS

    def read(self, path: str | Path) -> list[TaggedSentence]:
        return read_bio(path)

    def words_of(self, example: TaggedSentence) -> Sequence[str]:
        return example.words

    def tags_of(self, example: TaggedSentence) -> Sequence[str]:
        return example.tags

    def score(self, gold: list[list[str]], predicted: list[list[str | None]]) -> dict[str, float]:
        """Entity-level micro P/R/F1 (seqeval default = conlleval); None (truncated) is ``O``.

        With no entity predicted (or none in gold) precision (recall) is 0, as in conlleval;
        with no words at all every metric is NaN.
        """
        words = sum(len(g) for g in gold)
        if not words:
            nan = float("nan")
            return {"f1": nan, "precision": nan, "recall": nan, "words": 0.0}
        # Imported here: seqeval loads scikit-learn (~2 s), which every other stage would pay for.
        from seqeval.metrics import f1_score, precision_score, recall_score

        # seqeval wants lists of lists (tuples are not recognised as sentences).
        y_true = [list(g) for g in gold]
        y_pred = [[OUTSIDE if tag is None else tag for tag in p] for p in predicted]
        for i, (g, p) in enumerate(zip(y_true, y_pred, strict=True)):
            if len(g) != len(p):
                raise ValueError(f"sentence {i + 1}: {len(g)} gold tags but {len(p)} predicted")
        return {
            "f1": float(f1_score(y_true, y_pred, zero_division=0)),
            "precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "words": float(words),
        }
