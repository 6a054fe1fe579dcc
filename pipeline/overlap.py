"""Where two diffs touch the same entries, layer by layer: the mechanism behind the paper's
interference argument (sparse language and task diffs that rarely overlap can be added
without disturbing each other; dense ones always overlap)."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.formats.sparse_diff import SparseDiff

LAYER = re.compile(r"\.layers?\.(\d+)\.")


def layer_of(name: str) -> str:
    """`embeddings`, `layer N` (transformer block N) or `other` (e.g. the pooler)."""
    if ".embeddings." in name or name.startswith("embeddings."):
        return "embeddings"
    match = LAYER.search(name)
    return f"layer {match.group(1)}" if match else "other"


def _layer_key(layer: str) -> tuple[int, int]:
    if layer == "embeddings":
        return (0, 0)
    if layer.startswith("layer "):
        return (1, int(layer.split()[1]))
    return (2, 0)


def diff_overlap(lang: SparseDiff, task: SparseDiff) -> dict[str, Any]:
    """Per layer: entries of each diff, entries they share, and the share expected if the
    two were independent uniform draws (Σ over tensors of n_lang · n_task / numel)."""
    counts: dict[str, dict[str, float]] = defaultdict(lambda: dict(lang=0, task=0, shared=0, expected=0.0))
    for name, shape in task.shapes.items():
        numel = int(np.prod(shape))
        task_idx = task.indices.get(name)
        lang_idx = lang.indices.get(name)
        n_task = 0 if task_idx is None else int(task_idx.numel())
        n_lang = 0 if lang_idx is None else int(lang_idx.numel())
        layer = counts[layer_of(name)]
        layer["task"] += n_task
        layer["lang"] += n_lang
        if n_task and n_lang:
            layer["shared"] += int(np.intersect1d(task_idx.numpy(), lang_idx.numpy(), assume_unique=True).size)
            layer["expected"] += n_lang * n_task / numel
    layers = sorted(counts, key=_layer_key)
    return {
        "layers": layers,
        "lang_entries": [int(counts[l]["lang"]) for l in layers],
        "task_entries": [int(counts[l]["task"]) for l in layers],
        "shared": [int(counts[l]["shared"]) for l in layers],
        "expected": [round(counts[l]["expected"], 3) for l in layers],
    }
