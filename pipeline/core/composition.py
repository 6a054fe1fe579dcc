"""Composing diffs onto θ0 for evaluation: θ0 + task diff (with its head) + a target
language's diff. Every diff-based method evaluates through this one composer, which is
what makes their comparison fair.

Every variant starts from the same composed model, restored bit-exactly from a snapshot
between targets (not by reverting, which would accumulate rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.formats.sparse_diff import SparseDiff
from pipeline.core.method import ComponentComposer
from pipeline.core.parameters import restore, snapshot


def compose(model: Any, diffs: Sequence[SparseDiff], head: SparseDiff | None = None) -> Any:
    """θ0 + Σφ onto ``model`` in place, in the evaluation's order: ``head`` (the task diff)
    first with its dense tensors, then the other diffs in the order given, sparse part only
    (a language diff's MLM head stays out). Float addition is not associative, so this order
    is what makes a merged checkpoint (`ltsft diff apply`) bit-identical to what was scored."""
    if head is not None:
        head.apply(model, with_dense=True)
    for diff in diffs:
        if diff is not head:
            diff.apply(model)
    return model


class DiffComposer(ComponentComposer):
    """θ0 + task diff (with its head), plus a target language's diff on request.

    The task diff is read from ``task_path``, or given in memory (the sparsity sweep
    evaluates diffs it does not keep)."""

    def __init__(self, task_path: Path, lang_paths: dict[str, Path], task_diff: SparseDiff | None = None):
        super().__init__(task_path, lang_paths)
        self.task_diff = task_diff

    def load(self, model: Any) -> None:
        task_diff = self.task_diff or SparseDiff.load(self._read(self.task_path))
        compose(model, [task_diff], head=task_diff)  # dense = the head
        self.task_params = int(task_diff.provenance.get("trainable_parameters", task_diff.nnz))
        self.k = task_diff.provenance.get("k")
        self.composed = snapshot(model)

    def prepare(self, model: Any, lang: str, with_language: bool) -> int:
        restore(model, self.composed)
        if not with_language:
            return 0
        lang_diff = SparseDiff.load(self._read(self.lang_paths[lang]))
        compose(model, [lang_diff])  # sparse part only: a language diff's MLM head stays out
        return int(lang_diff.provenance.get("trainable_parameters", lang_diff.nnz))
