"""Import the paper authors' published diffs (``pytorch_diff.bin``) into our SparseDiff.

The released files (hub repos ``cambridgeltl/mbert-lang-sft-<lang>-small``,
``cambridgeltl/mbert-task-sft-{pos,dp,masakhaner}``, ``cambridgeltl/xlmr-…``) are in the
reference implementation's layout; pipeline/formats/composable_sft.py reads it (weights-only,
only numpy scalar globals allowed) and converts its column-major delta-coded indices to ours.
This module adds what importing a *released* diff needs beyond that: putting a released
head's rows into our label order.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.formats.composable_sft import FILE, to_sparse_diff
from pipeline.formats.composable_sft import load as load_published
from pipeline.formats.sparse_diff import DiffError, SparseDiff

# The import stage and the tests take these from here.
__all__ = ["FILE", "import_published", "load_published", "reorder_head", "to_sparse_diff"]


def import_published(path: str | Path, out: str | Path, base_model: str = "") -> SparseDiff:
    """Convert a published ``pytorch_diff.bin`` into a diff directory at ``out``."""
    diff = to_sparse_diff(load_published(path), str(path), base_model)
    diff.save(out)
    return diff


def reorder_head(diff: SparseDiff, published_labels: list[str], our_labels: list[str]) -> None:
    """Permute a released classifier head's rows from its label order into ours, in place.

    Every dense tensor whose first dimension is the number of labels is permuted (the
    classifier's weight and bias); a label set that differs from ours is refused, and so is
    a diff with no such tensor (an order given for a head that is not there would be ignored).
    """
    if sorted(published_labels) != sorted(our_labels):
        missing = sorted(set(our_labels) ^ set(published_labels))
        raise DiffError(f"released head labels differ from ours ({', '.join(missing)})")
    order = torch.tensor([published_labels.index(label) for label in our_labels])
    rows = [name for name, tensor in diff.dense.items() if tensor.shape and tensor.shape[0] == len(our_labels)]
    if not rows:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in sorted(diff.dense.items())) or "none"
        raise DiffError(f"no dense tensor with {len(our_labels)} rows (one per label) to reorder (dense: {shapes})")
    for name in rows:
        diff.dense[name] = diff.dense[name][order].clone()
