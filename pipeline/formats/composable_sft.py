"""The reference implementation's diff file (cambridgeltl/composable-sft, ``pytorch_diff.bin``),
read and written: the one place that knows its layout and its index order.

The file is a ``torch.save`` of::

    {"diffs": {name: {"size": shape, "index_steps": steps, "values": values}},
     "abs":   {name: tensor}}

``index_steps`` are the sorted flat indices of the changed entries, delta-coded (the first
absolute), flattened with the FIRST dimension varying fastest (column-major: the reference's
``decode_sparse_tensor`` divides by the cumulative product of the leading sizes); ``abs``
holds tensors stored whole (a task head). Our SparseDiff keeps row-major indices, so both
directions convert here.

Reading: with torch's weights-only unpickler, allowing only the numpy scalar and dtype globals
the released files contain (they were written with a numpy int64 as the first step) — never a
general unpickle, which could run arbitrary code. Writing: only plain Python ints,
``torch.Size`` and tensors, which torch's weights-only loader accepts with its default
allow-list, so the reference's own ``torch.load`` (weights-only by default in torch ≥ 2.6) and
``SFT(dir).apply(model)`` read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.atomic import atomic_dir
from pipeline.formats.sparse_diff import DiffError, SparseDiff, _dtype_name
from pipeline.formats.weights_only import WeightsOnlyError, load_weights_only

FILE = "pytorch_diff.bin"  # the name the reference's SFT(dir) reads
# Where numpy keeps the scalar reconstructor that pickled numpy scalars name. Every released
# file was pickled under numpy 1.x and names the first; numpy 2 pickles name the second.
SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


def _numpy_globals() -> list[Any]:
    """What pickled numpy scalars need, and nothing else: the scalar reconstructor (under
    both numpy generations' names), dtype and the dtype classes."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [*((scalar, name) for name in SCALAR_NAMES), np.dtype, *dtype_classes]


def load(path: str | Path) -> dict[str, Any]:
    """The raw ``{"diffs", "abs"}`` mapping, loaded without executing code. ``path`` is a
    ``pytorch_diff.bin`` or a directory holding one (as the reference's SFT(dir))."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise DiffError(f"{path}: file not found")
    try:
        obj = load_weights_only(path, _numpy_globals())
    except WeightsOnlyError as err:
        raise DiffError(f"{path}: not a loadable published diff ({err})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("diffs"), dict):
        raise DiffError(f"{path}: expected a mapping with a 'diffs' entry")
    return obj


def _shape(size: Any, where: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in (size if isinstance(size, (list, tuple, torch.Size)) else [size]))
    except (TypeError, ValueError):
        raise DiffError(f"{where}: size {size!r} is not a shape") from None


def column_major_to_row_major(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices with the first dimension fastest → our flat indices (last dimension fastest)."""
    return np.ravel_multi_index(np.unravel_index(flat, shape, order="F"), shape, order="C")


def row_major_to_column_major(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Our flat indices (last dimension fastest) → the reference's (first dimension fastest)."""
    return np.ravel_multi_index(np.unravel_index(flat, shape, order="C"), shape, order="F")


def to_sparse_diff(obj: dict[str, Any], source: str = "", base_model: str = "") -> SparseDiff:
    """The reference's mapping (as ``load`` returns it) as our SparseDiff."""
    shapes, dtypes, indices, values = {}, {}, {}, {}
    for name, entry in obj["diffs"].items():
        where = f"{source}: {name}" if source else name
        if not isinstance(entry, dict) or not {"size", "index_steps", "values"} <= set(entry):
            raise DiffError(f"{where}: expected size, index_steps and values")
        shape = _shape(entry["size"], where)
        steps = torch.as_tensor(entry["index_steps"]).reshape(-1).to(torch.int64).numpy()
        vals = torch.as_tensor(entry["values"]).reshape(-1)
        if steps.size != vals.numel():
            raise DiffError(f"{where}: {steps.size} indices but {vals.numel()} values")
        flat = np.cumsum(steps)
        numel = int(np.prod(shape))
        if flat.size and (flat[0] < 0 or flat[-1] >= numel or np.any(steps[1:] <= 0)):
            raise DiffError(f"{where}: indices are not strictly increasing within 0..{numel - 1}")
        ours = column_major_to_row_major(flat, shape) if len(shape) > 1 else flat
        order = np.argsort(ours, kind="stable")
        shapes[name], dtypes[name] = shape, _dtype_name(vals.dtype)
        if ours.size:
            indices[name] = torch.from_numpy(ours[order].astype(np.int64))
            values[name] = vals[torch.from_numpy(order)].clone()
    dense = {name: torch.as_tensor(t).clone() for name, t in (obj.get("abs") or {}).items()}
    return SparseDiff(shapes, dtypes, indices, values, dense, base_model=base_model,
                      provenance={"method": "lt-sft-published", "imported_from": source})


def from_sparse_diff(diff: SparseDiff) -> dict[str, Any]:
    """Our SparseDiff in the reference's layout: every maskable tensor (one with no entries
    too, so that its shape survives a round trip), indices re-ordered column-major and
    delta-coded, the first absolute; dense tensors under ``abs``.

    Only plain Python ints, ``torch.Size`` and tensors: a numpy scalar (which the reference's
    own writer leaves as the first step) is refused by torch's default weights-only loader."""
    diffs: dict[str, Any] = {}
    for name, shape in diff.shapes.items():
        if name in diff.indices:
            flat = diff.indices[name].cpu().numpy().astype(np.int64)
            ref = row_major_to_column_major(flat, shape) if len(shape) > 1 else flat
            order = np.argsort(ref, kind="stable")
            ref = ref[order]
            steps = np.diff(ref, prepend=0)  # the first step is the first index itself
            values = diff.values[name].detach().cpu()[torch.from_numpy(order)].contiguous()
        else:
            steps, values = np.zeros(0, dtype=np.int64), torch.zeros(0, dtype=getattr(torch, diff.dtypes[name]))
        diffs[name] = {"size": torch.Size(shape), "index_steps": steps.tolist(),
                       "values": values}
    return {"diffs": diffs, "abs": {name: t.detach().cpu().contiguous() for name, t in diff.dense.items()}}


def write(diff: SparseDiff, out: str | Path) -> Path:
    """Write ``out/pytorch_diff.bin`` (the directory the reference's ``SFT(out)`` reads), atomically."""
    out = Path(out)
    obj = from_sparse_diff(diff)
    with atomic_dir(out) as tmp:
        torch.save(obj, tmp / FILE)
    return out
