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
from pipeline.core.parameters import restore, snapshot


class DiffComposer:
    """θ0 + task diff (with its head), plus a target language's diff on request.

    The task diff is read from ``task_path``, or given in memory (the sparsity sweep
    evaluates diffs it does not keep)."""

    def __init__(self, task_path: Path, lang_paths: dict[str, Path], task_diff: SparseDiff | None = None):
        self.task_path, self.lang_paths, self.task_diff = task_path, lang_paths, task_diff
        self.task_params, self.k = 0, None
        self.used: list[Path] = []

    def inputs(self, with_language: bool) -> list[Path]:
        return [self.task_path, *(self.lang_paths.values() if with_language else [])]

    def load(self, model: Any) -> None:
        task_diff = self.task_diff or SparseDiff.load(self.task_path)
        task_diff.apply(model, with_dense=True)  # dense = the head
        self.task_params = int(task_diff.provenance.get("trainable_parameters", task_diff.nnz))
        self.k = task_diff.provenance.get("k")
        if self.task_diff is None:
            self.used.append(self.task_path)
        self.composed = snapshot(model)

    def prepare(self, model: Any, lang: str, with_language: bool) -> int:
        restore(model, self.composed)
        if not with_language:
            return 0
        lang_diff = SparseDiff.load(self.lang_paths[lang])
        lang_diff.apply(model)  # sparse part only: a language diff's MLM head stays out
        if self.lang_paths[lang] not in self.used:
            self.used.append(self.lang_paths[lang])
        return int(lang_diff.provenance.get("trainable_parameters", lang_diff.nnz))
