"""`ltsft diff info PATH`: what a diff directory holds, read from its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.formats.sparse_diff import TENSORS_FILE, SparseDiff


def info(path: Path) -> dict[str, Any]:
    diff = SparseDiff.load(path)  # verifies checksum and structure
    file_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    sparse_bytes = _sparse_bytes(path)
    return {
        "nnz": diff.nnz,
        "k": diff.k,
        "density": diff.density,
        "file_bytes": file_bytes,
        "sparse_bytes_per_entry": sparse_bytes / diff.nnz if diff.nnz else 0.0,
        "base_fingerprint": diff.base_fingerprint,
        "maskable_entries": diff.maskable_numel,
        "dense_tensors": sorted(diff.dense),
        "base_model": diff.base_model,
    }


def _sparse_bytes(path: Path) -> int:
    """Bytes of the sparse part (values + index streams) as stored, excluding dense heads."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path / TENSORS_FILE), framework="pt") as handle:
        for key in handle.keys():
            if not key.startswith("dense/"):
                sl = handle.get_slice(key)
                shape = sl.get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count * _itemsize(sl.get_dtype())
    return total


def _itemsize(dtype: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I8": 1, "I32": 4, "I64": 8}[dtype]
