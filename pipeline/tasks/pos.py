"""Part-of-speech tagging with UD's 17 UPOS tags: a linear head over first sub-words.

Only each word's first sub-word carries a label (the rest get -100), as in the reference
setup (the mechanism is shared with NER in ``pipeline.tasks.tagging``). Accuracy is over
words: a word lost to truncation counts as wrong, so a too-short ``max_length`` shows up
in the score instead of silently shrinking the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.formats.conllu import UPOS_TAGS, Sentence, read_conllu
from pipeline.tasks.tagging import IGNORE, WordTagging, first_subword_labels

__all__ = ["IGNORE", "PosTagging", "first_subword_labels"]  # the last two kept importable from here


class PosTagging(WordTagging):
    name = "pos"
    title = "Part-of-speech tagging (POS)"
    metric = "accuracy"
    data_format = "conllu"
    labels = UPOS_TAGS

    def read(self, path: str | Path) -> list[Sentence]:
        return read_conllu(path)

    def words_of(self, example: Sentence) -> Sequence[str]:
        return example.words

    def tags_of(self, example: Sentence) -> Sequence[str]:
        return example.upos

    def score(self, gold: list[list[str]], predicted: list[list[str | None]]) -> dict[str, float]:
        """Accuracy over all words; a word lost to truncation (None) is wrong."""
        words = sum(len(g) for g in gold)
        correct = sum(p == g for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True))
        return {"accuracy": correct / words if words else float("nan"), "words": float(words)}
