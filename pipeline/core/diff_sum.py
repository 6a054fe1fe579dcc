"""`ltsft diff compose`: several diffs as one, their sum (``SparseDiff.__add__``, folded in
the order given): the union of their entries with values added where two change the same
one, K the sum of theirs, the provenance listing the parts.

Dense tensors (heads) are absolute values, not differences, so two of them for the same
tensor cannot be added: such a pair is refused unless ``head_from`` names the diff whose
dense tensors the sum keeps (the other parts' are then dropped, e.g. a language diff's MLM
head, which the evaluation never composes into a task model either).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.core.merged import load_diffs, named_diff
from pipeline.formats.sparse_diff import DiffError, SparseDiff


def sum_diffs(diffs: Sequence[SparseDiff], head_from: str | Path | None = None) -> SparseDiff:
    """The sum of ``diffs`` (loaded from directories: their ``source`` names them)."""
    if len(diffs) < 2:
        raise DiffError("compose needs at least two diffs")
    if head_from is not None:
        keep = named_diff(diffs, head_from)
        diffs = [d if d is keep else replace(d, dense={}) for d in diffs]
    carriers: dict[str, SparseDiff] = {}
    for diff in diffs:
        for name in diff.dense:
            if name in carriers:
                raise DiffError(f"{carriers[name].source} and {diff.source} both carry head tensor {name!r}: "
                                "name the diff to keep it from with --head-from")
            carriers[name] = diff
    for diff in diffs[1:]:
        if diff.base_fingerprint != diffs[0].base_fingerprint:
            raise DiffError(f"{diff.source}: base fingerprint {diff.base_fingerprint} differs from {diffs[0].source}'s "
                            f"{diffs[0].base_fingerprint} (a diff over another model or tensor set)")
    total = functools.reduce(operator.add, diffs)
    total.provenance = {
        "method": "composed",
        "parts": [{"path": str(d.source), "k": d.k, "nnz": d.nnz, "provenance": d.provenance} for d in diffs],
        "head_from": str(head_from) if head_from is not None else None,
    }
    # The kept head's task and seed, so that `ltsft diff apply --with-head` builds its model.
    heads = [d for d in diffs if d.dense]
    if len(heads) == 1:
        total.provenance.update({key: heads[0].provenance[key] for key in ("kind", "task", "seed")
                                 if key in heads[0].provenance})
    return total


def compose_diffs(paths: Sequence[str | Path], out: str | Path, head_from: str | Path | None = None) -> SparseDiff:
    """Sum the diff directories at ``paths`` and save the result at ``out`` (atomically)."""
    total = sum_diffs(load_diffs(paths), head_from)
    total.save(out)
    return total
