"""Checked tensor directories: the one writer and reader every on-disk format shares.

A checked directory holds a safetensors file and a JSON description of it. The JSON
records the tensors file's size and sha256 (``tensors_bytes``, ``tensors_sha256``), so a
truncated or corrupted file is refused on load instead of silently giving other weights.
The directory is written atomically (a temporary sibling renamed into place), and nothing
in it is pickled: reading it never runs code. Sparse diffs (``diff.json``) and adapters
(``adapter.json``) are both checked directories; each format adds its own fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.core.atomic import atomic_dir, write_json

SHA256 = "tensors_sha256"
BYTES = "tensors_bytes"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def write_checked(directory: str | Path, tensors_file: str, meta_file: str,
                  tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` (plus the tensors file's size and checksum) atomically."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        blob = tmp / tensors_file
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(blob))
        write_json(tmp / meta_file, {**meta, SHA256: sha256_file(blob), BYTES: blob.stat().st_size})
    return directory


def read_json(path: Path, error: type[Exception], missing: str = "file missing") -> Any:
    """A JSON file, or ``error`` in one line naming it (missing, unreadable, not JSON)."""
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: unreadable, not valid JSON ({err.__class__.__name__})") from None


def read_meta(meta_path: Path, format_name: str, version: int | tuple[int, ...], error: type[Exception],
              required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON description, refused (``error``, one line) unless it is this format and one of
    the versions (``version``: the current one, or a tuple of every version still read)."""
    meta = read_json(meta_path, error)
    versions = version if isinstance(version, tuple) else (version,)
    if not isinstance(meta, dict) or meta.get("format") != format_name or meta.get("version") not in versions:
        found = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else (None, None)
        expected = " or ".join(f"v{v}" for v in versions)
        raise error(f"{meta_path}: format {found[0]!r} v{found[1]!r}, expected {format_name!r} {expected}")
    missing = [key for key in (*required, SHA256, BYTES) if key not in meta]
    if missing:
        raise error(f"{meta_path}: missing field {missing[0]!r}")
    return meta


def read_tensors(tensors_path: Path, meta: Mapping[str, Any], meta_name: str, error: type[Exception],
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors file, after checking its size and sha256 against ``meta``."""
    if not tensors_path.is_file():
        raise error(f"{tensors_path}: file missing")
    size = tensors_path.stat().st_size
    if size != meta[BYTES]:
        raise error(f"{tensors_path}: {size} bytes, expected {meta[BYTES]} (truncated?)")
    if sha256_file(tensors_path) != meta[SHA256]:
        raise error(f"{tensors_path}: sha256 does not match {meta_name} (corrupted)")
    try:
        return load_file(str(tensors_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise error(f"{tensors_path}: unreadable safetensors file ({one_line(err)})") from None


def check_state(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], tensors_path: Path,
                error: type[Exception]) -> None:
    """Strict tensor names and shapes against a module's ``state_dict()`` (``expected``), refused
    (``error``, one line naming the file and the tensor) before anything is loaded."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise error(f"{tensors_path}: missing tensors {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise error(
                f"{tensors_path}: shape mismatch for {name}: file {tuple(tensor.shape)}, "
                f"module {tuple(expected[name].shape)}"
            )
