"""Composing diffs onto θ0 for evaluation: θ0 + task diff (with its head) + a target
language's diff. Every diff-based method evaluates through this one composer, which is
what makes their comparison fair.

Every variant starts from the same composed model, restored bit-exactly from a snapshot
between targets (not by reverting, which would accumulate rounding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.formats.sparse_diff import SparseDiff
from pipeline.core.method import ComponentComposer
from pipeline.core.parameters import restore, snapshot


class DiffComposer(ComponentComposer):
    """θ0 + task diff (with its head), plus a target language's diff on request.

    The task diff is read from ``task_path``, or given in memory (the sparsity sweep
    evaluates diffs it does not keep)."""

    def __init__(self, task_path: Path, lang_paths: dict[str, Path], task_diff: SparseDiff | None = None):
        super().__init__(task_path, lang_paths)
        self.task_diff = task_diff

    def load(self, model: Any) -> None:
        task_diff = self.task_diff or SparseDiff.load(self._read(self.task_path))
        task_diff.apply(model, with_dense=True)  # dense = the head
        self.task_params = int(task_diff.provenance.get("trainable_parameters", task_diff.nnz))
        self.k = task_diff.provenance.get("k")
        self.composed = snapshot(model)

    def prepare(self, model: Any, lang: str, with_language: bool) -> int:
        restore(model, self.composed)
        if not with_language:
            return 0
        lang_diff = SparseDiff.load(self._read(self.lang_paths[lang]))
        lang_diff.apply(model)  # sparse part only: a language diff's MLM head stays out
        return int(lang_diff.provenance.get("trainable_parameters", lang_diff.nnz))
