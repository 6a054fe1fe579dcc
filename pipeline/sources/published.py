"""Import the paper authors' published diffs (``pytorch_diff.bin``) into our SparseDiff.

The released files (hub repos ``cambridgeltl/mbert-lang-sft-<lang>-small``,
``cambridgeltl/mbert-task-sft-{pos,dp,masakhaner}``, ``cambridgeltl/xlmr-…``) are a
``torch.save`` of::

    {"diffs": {name: {"size": shape, "index_steps": steps, "values": values}},
     "abs":   {name: tensor}}

``index_steps`` are the sorted flat indices of the changed entries, delta-coded (the first
absolute), flattened with the FIRST dimension varying fastest (column-major); ``abs`` holds
tensors stored whole (a task head). We read them with torch's weights-only unpickler,
allowing only the numpy scalar and dtype globals these files contain — never a general
unpickle, which could run arbitrary code — and re-index to our row-major flat indices.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.formats.sparse_diff import DiffError, SparseDiff, _dtype_name


FILE = "pytorch_diff.bin"  # the name the reference's SFT(dir) reads
# Where numpy keeps the scalar reconstructor that pickled numpy scalars name. Every released
# file was pickled under numpy 1.x and names the first; numpy 2 pickles name the second.
SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _numpy_globals() -> list[Any]:
    """What pickled numpy scalars need, and nothing else: the scalar reconstructor (under
    both numpy generations' names), dtype and the dtype classes."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [*((scalar, name) for name in SCALAR_NAMES), np.dtype, *dtype_classes]


def refusal_reason(err: BaseException) -> str:
    """torch's refusal as one line: the unpickler's own reason when there is one (torch puts
    it after paragraphs of advice), whole, without terminal escapes."""
    text = _ANSI.sub("", str(err))
    marker = text.find("WeightsUnpickler error:")
    if marker >= 0:
        text = text[marker:].split("\n\n")[0]
    else:  # e.g. "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
        advice = ("Weights only load failed", "Check the documentation of torch.load")
        reasons = [part for part in text.split("\n\n") if part.strip() and not part.strip().startswith(advice)]
        text = "\n".join(reasons) or text
    return " ".join(text.split()) or type(err).__name__


def load_published(path: str | Path) -> dict[str, Any]:
    """The raw ``{"diffs", "abs"}`` mapping, loaded without executing code. ``path`` is a
    released ``pytorch_diff.bin`` or a directory holding one (as the reference's SFT(dir))."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise DiffError(f"{path}: file not found")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights-only refusals and corrupt files alike: one line
        raise DiffError(f"{path}: not a loadable published diff ({refusal_reason(err)})") from None
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


def to_sparse_diff(obj: dict[str, Any], source: str = "", base_model: str = "") -> SparseDiff:
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
