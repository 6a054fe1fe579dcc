"""Adapter files: a checked directory (``madx_adapter.safetensors`` + ``adapter.json``).

``adapter.json`` holds the module's own description (``module.describe()``: kind, hidden
size, layers, reduction factor, non-linearity), its parameter count, the caller's provenance
and the checksum of the tensors. A load is verified completely (format, architecture,
checksum, tensor names and shapes) before the module is touched, so a refused load changes
nothing.

The tensors file is not called ``adapter.safetensors``: that is the name the `adapters`
library (AdapterHub) gives its own, differently keyed, weights (``pipeline/sources/adapterhub.py``
converts those). Version 2 directories, written before the rename, are still read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pipeline.core.errors import LtsftError
from pipeline.formats import checked
from pipeline.core.parameters import count_parameters

FORMAT_NAME = "ltsft-adapter"
FORMAT_VERSION = 3  # v3: tensors in madx_adapter.safetensors; v2: the shared checksum fields (v1: "sha256")
READ_VERSIONS = (FORMAT_VERSION, 2)
TENSORS_FILE = "madx_adapter.safetensors"
V2_TENSORS_FILE = "adapter.safetensors"  # the v2 name, which the `adapters` library also uses
META_FILE = "adapter.json"


class AdapterError(LtsftError, ValueError):
    """An adapter that cannot be saved or loaded; the message is one line naming the file."""


def _describe(module: nn.Module) -> dict[str, Any]:
    describe = getattr(module, "describe", None)
    if not callable(describe):
        raise AdapterError(f"save_adapter: cannot describe a {type(module).__name__}")
    return describe()


def save_adapter(module: nn.Module, path: str | Path, meta: dict) -> None:
    """Write ``module``'s weights and description to the directory ``path``, atomically.

    The architecture fields and parameter count are computed here and take precedence over
    same-named keys in ``meta``, so re-saving loaded meta stays truthful.
    """
    record = {**meta, **_describe(module), "format": FORMAT_NAME, "version": FORMAT_VERSION,
              "parameters": count_parameters(module)}
    for key in (checked.SHA256, checked.BYTES):
        record.pop(key, None)
    checked.write_checked(path, TENSORS_FILE, META_FILE, module.state_dict(), record)


def read_adapter_meta(path: str | Path) -> dict[str, Any]:
    """``adapter.json`` of an adapter directory, validated for format and version."""
    meta = checked.read_meta(Path(path) / META_FILE, FORMAT_NAME, READ_VERSIONS, AdapterError)
    if meta["version"] == 2:
        meta.setdefault("non_linearity", "relu")  # v2 predates the field: every v2 adapter is ReLU
    return meta


def load_adapter(path: str | Path, module: nn.Module) -> dict:
    """Load an adapter saved by :func:`save_adapter` into ``module`` (strict); return its meta."""
    path = Path(path)
    meta = read_adapter_meta(path)
    meta_path = path / META_FILE
    tensors_path = path / (TENSORS_FILE if meta["version"] == FORMAT_VERSION else V2_TENSORS_FILE)
    for key, value in _describe(module).items():
        if meta.get(key) != value:
            raise AdapterError(f"{meta_path}: {key} is {meta.get(key)!r}, the module's is {value!r}")
    device = next(module.parameters()).device
    tensors = checked.read_tensors(tensors_path, meta, META_FILE, AdapterError, device)
    checked.check_state(tensors, module.state_dict(), tensors_path, AdapterError)
    module.load_state_dict(tensors, strict=True)
    return meta


def load_adapter_pretrained(repo_id_or_dir: str | Path, module: nn.Module, revision: str | None = None) -> dict:
    """:func:`load_adapter` from a local directory or a Hugging Face Hub repo (``owner/name`` at
    ``revision``) as ``ltsft adapter push`` uploads it; the same checks either way. A MAD-X task
    component (``adapter/`` + ``head/``) holds its adapter under ``adapter/``."""
    from pipeline.formats.hub_repo import local_or_download

    path = local_or_download(repo_id_or_dir, revision, what="adapter")
    return load_adapter(path if (path / META_FILE).is_file() else path / "adapter", module)
