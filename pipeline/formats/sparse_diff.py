"""SparseDiff: a sparse fine-tuning φ such that θ = θ0 + φ.

A diff holds, for every *maskable* tensor of the encoder, the sorted flat indices of the
entries it changes and the change at each; plus whole ("dense") copies of trainable
tensors that are not maskable, such as a task head. Dense tensors are absolute values, not
differences, and are written into a model only when asked (``with_dense=True``), because a
language diff's MLM head must not leak into a task model when diffs are composed.

On disk a diff is a directory:
- ``diff.safetensors``: ``values/<name>`` (the parameter's dtype, lossless), the indices as
  Elias-Fano bit streams ``index_high/<name>`` and ``index_low/<name>`` (uint8), and
  ``dense/<name>``. Elias-Fano spends 2 + ⌊log2(numel/nnz)⌋ bits per index: about 0.7 bytes
  at the paper's task density, against the 2 bytes of the reference's delta-coded int16
  steps; so ≈4.7 bytes per entry with float32 values instead of 6.0.
- ``diff.json``: format version, base model name, a fingerprint of θ0 (names, shapes and
  dtypes of the maskable tensors), K, per-tensor shapes and counts, provenance, and the
  sha256 of ``diff.safetensors`` so that truncation or corruption is refused on load.
Nothing is pickled: loading a diff never runs code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pipeline.core.errors import LtsftError
from pipeline.formats import checked, index_codec
from pipeline.formats.checked import read_tensors, write_checked

FORMAT_NAME = "ltsft-sparse-diff"
FORMAT_VERSION = 1
TENSORS_FILE = "diff.safetensors"
META_FILE = "diff.json"


class DiffError(LtsftError, ValueError):
    """A diff that cannot be loaded, built or applied; the message is one line."""


def fingerprint(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str]) -> str:
    """A short hash of parameter names, shapes and dtypes: which θ0 a diff belongs to."""
    digest = hashlib.sha256()
    for name in sorted(shapes):
        digest.update(f"{name}:{tuple(shapes[name])}:{dtypes[name]}\n".encode())
    return digest.hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module, names: Iterable[str]) -> str:
    """Fingerprint of ``model`` restricted to ``names``; raises DiffError for a missing name."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise DiffError(f"model has no parameter {missing[0]!r} that the diff changes")
    names = list(names)
    return fingerprint(
        {n: tuple(params[n].shape) for n in names}, {n: _dtype_name(params[n].dtype) for n in names}
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class SparseDiff:
    """φ over the maskable tensors (sparse) plus whole copies of dense tensors (heads)."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    indices: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    k: int | None = None
    base_model: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False)  # the directory it was loaded from

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_states(
        cls,
        theta0: Mapping[str, torch.Tensor],
        theta: Mapping[str, torch.Tensor],
        maskable: Iterable[str],
        dense_names: Iterable[str] = (),
        **meta: Any,
    ) -> SparseDiff:
        """φ = θ − θ0 on every maskable tensor (entries that did not change are dropped);
        dense tensors are copied whole from θ."""
        shapes, dtypes, indices, values = {}, {}, {}, {}
        for name in maskable:
            before, after = theta0[name], theta[name]
            if before.shape != after.shape:
                raise DiffError(f"{name}: shape {tuple(after.shape)} != θ0 {tuple(before.shape)}")
            shapes[name] = tuple(before.shape)
            dtypes[name] = _dtype_name(before.dtype)
            delta = (after.detach() - before.detach()).reshape(-1)
            changed = torch.nonzero(delta, as_tuple=True)[0]
            if changed.numel():
                indices[name] = changed
                values[name] = delta[changed].clone()
        dense = {n: theta[n].detach().clone() for n in dense_names}
        return cls(shapes, dtypes, indices, values, dense, **meta)

    @classmethod
    def from_masks(
        cls,
        theta0: Mapping[str, torch.Tensor],
        indices: Mapping[str, torch.Tensor],
        values: Mapping[str, torch.Tensor],
        dense: Mapping[str, torch.Tensor] | None = None,
        **meta: Any,
    ) -> SparseDiff:
        """A diff from explicit flat indices and values; θ0 gives every maskable shape."""
        shapes = {n: tuple(t.shape) for n, t in theta0.items()}
        dtypes = {n: _dtype_name(t.dtype) for n, t in theta0.items()}
        clean_idx, clean_val = {}, {}
        for name, idx in indices.items():
            if name not in shapes:
                raise DiffError(f"{name}: not a maskable tensor of θ0")
            idx = idx.to(torch.int64).reshape(-1)
            val = values[name].reshape(-1).to(theta0[name].dtype)
            if idx.numel() != val.numel():
                raise DiffError(f"{name}: {idx.numel()} indices but {val.numel()} values")
            order = torch.argsort(idx)
            idx, val = idx[order], val[order]
            if idx.numel() and (idx[0] < 0 or idx[-1] >= theta0[name].numel()):
                raise DiffError(f"{name}: index out of range")
            if idx.numel() > 1 and bool((idx[1:] == idx[:-1]).any()):
                raise DiffError(f"{name}: duplicate indices")
            if idx.numel():
                clean_idx[name], clean_val[name] = idx, val
        dense = {n: t.detach().clone() for n, t in (dense or {}).items()}
        return cls(shapes, dtypes, clean_idx, clean_val, dense, **meta)

    # ----------------------------------------------------------------- properties
    @property
    def base_fingerprint(self) -> str:
        return fingerprint(self.shapes, self.dtypes)

    @property
    def nnz(self) -> int:
        return sum(int(v.numel()) for v in self.values.values())

    @property
    def maskable_numel(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes.values())

    @property
    def density(self) -> float:
        total = self.maskable_numel
        return self.nnz / total if total else 0.0

    # ----------------------------------------------------------------- model surgery
    def _check_model(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        where = f"{self.source}: " if self.source else ""
        try:
            found = model_fingerprint(model, self.shapes)
        except DiffError as err:
            raise DiffError(f"{where}{err}") from None
        if found != self.base_fingerprint:
            raise DiffError(
                f"{where}diff base fingerprint {self.base_fingerprint} does not match the model's {found} "
                "(a diff for another base model?)"
            )
        return dict(model.named_parameters())

    @torch.no_grad()
    def apply(self, model: torch.nn.Module, with_dense: bool = False) -> torch.nn.Module:
        """θ ← θ + φ in place; with ``with_dense`` the dense tensors overwrite the model's."""
        params = self._check_model(model)
        for name, idx in self.indices.items():
            flat = params[name].data.view(-1)
            flat.index_add_(0, idx.to(flat.device), self.values[name].to(flat.device, flat.dtype))
        if with_dense:
            for name, tensor in self.dense.items():
                if name not in params:
                    raise DiffError(f"model has no parameter {name!r} for the diff's dense tensor")
                if params[name].shape != tensor.shape:
                    raise DiffError(
                        f"{name}: dense tensor shape {tuple(tensor.shape)} != model's "
                        f"{tuple(params[name].shape)}"
                    )
                params[name].data.copy_(tensor)
        return model

    @torch.no_grad()
    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        """θ ← θ − φ in place (sparse part only: dense tensors have no θ0 to return to)."""
        params = self._check_model(model)
        for name, idx in self.indices.items():
            flat = params[name].data.view(-1)
            flat.index_add_(0, idx.to(flat.device), -self.values[name].to(flat.device, flat.dtype))
        return model

    def __add__(self, other: SparseDiff) -> SparseDiff:
        """Composition φ_a + φ_b: union of entries, values summed where both change one."""
        if not isinstance(other, SparseDiff):
            return NotImplemented
        if self.base_fingerprint != other.base_fingerprint:
            raise DiffError(
                f"cannot add diffs over different bases ({self.base_fingerprint} vs "
                f"{other.base_fingerprint})"
            )
        clash = sorted(set(self.dense) & set(other.dense))
        if clash:
            raise DiffError(f"both diffs carry dense tensor {clash[0]!r}")
        indices, values = {}, {}
        for name in sorted(set(self.indices) | set(other.indices)):
            parts = [d for d in (self, other) if name in d.indices]
            if len(parts) == 1:
                indices[name] = parts[0].indices[name]
                values[name] = parts[0].values[name]
                continue
            idx = torch.cat([parts[0].indices[name], parts[1].indices[name]])
            val = torch.cat([parts[0].values[name], parts[1].values[name]])
            unique, inverse = torch.unique(idx, sorted=True, return_inverse=True)
            # Each output slot receives at most two addends, and float addition of two
            # numbers is commutative, so a + b and b + a are bit-identical.
            summed = torch.zeros(unique.numel(), dtype=val.dtype).index_add_(0, inverse, val)
            keep = summed != 0
            indices[name], values[name] = unique[keep], summed[keep]
        k = None if self.k is None or other.k is None else self.k + other.k
        return SparseDiff(
            dict(self.shapes),
            dict(self.dtypes),
            indices,
            values,
            {**self.dense, **other.dense},
            k=k,
            base_model=self.base_model or other.base_model,
            provenance={"composed_of": [self.provenance, other.provenance]},
        )

    # ----------------------------------------------------------------- storage
    def save(self, path: str | Path) -> Path:
        """Write the diff directory atomically (a temp dir renamed into place)."""
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        per_tensor: dict[str, dict[str, Any]] = {}
        for name, shape in self.shapes.items():
            entry: dict[str, Any] = {"shape": list(shape), "dtype": self.dtypes[name], "nnz": 0}
            if name in self.indices:
                numel = int(np.prod(shape))
                encoded = index_codec.encode(self.indices[name].cpu().numpy(), numel)
                tensors[f"values/{name}"] = self.values[name].detach().cpu().contiguous()
                tensors[f"index_high/{name}"] = torch.from_numpy(encoded.high)
                tensors[f"index_low/{name}"] = torch.from_numpy(encoded.low)
                entry.update(nnz=encoded.count, low_bits=encoded.low_bits)
            per_tensor[name] = entry
        for name, tensor in self.dense.items():
            tensors[f"dense/{name}"] = tensor.detach().cpu().contiguous()
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "base_model": self.base_model,
            "base_fingerprint": self.base_fingerprint,
            "k": self.k,
            "nnz": self.nnz,
            "maskable": per_tensor,
            "dense": {n: list(t.shape) for n, t in self.dense.items()},
            "provenance": self.provenance,
        }
        write_checked(path, TENSORS_FILE, META_FILE, tensors, meta)
        return path

    @classmethod
    def from_pretrained(cls, repo_id_or_dir: str | Path, revision: str | None = None) -> SparseDiff:
        """A diff from a local directory, or from a Hugging Face Hub repo (``owner/name``, at
        ``revision``: a branch, tag or commit) as ``ltsft diff push`` uploads it. Read by
        :meth:`load`, so the Hub's copy is checked (size, sha256, structure) like a local one."""
        from pipeline.formats.hub_repo import local_or_download

        return cls.load(local_or_download(repo_id_or_dir, revision, what="diff"))

    @classmethod
    def load(cls, path: str | Path) -> SparseDiff:
        """Read a diff directory, refusing (DiffError, one line) anything damaged."""
        path = Path(path)
        meta = read_meta(path)
        blob = path / TENSORS_FILE
        stored = read_tensors(blob, meta, META_FILE, DiffError)

        def take(key: str) -> torch.Tensor:
            if key not in stored:
                raise DiffError(f"{blob}: missing tensor {key!r}")
            return stored[key]

        shapes, dtypes, indices, values = {}, {}, {}, {}
        for name, entry in meta["maskable"].items():
            shapes[name] = tuple(entry["shape"])
            dtypes[name] = entry["dtype"]
            if not entry["nnz"]:
                continue
            encoded = index_codec.EncodedIndices(
                count=entry["nnz"],
                universe=int(np.prod(entry["shape"])),
                low_bits=entry["low_bits"],
                high=take(f"index_high/{name}").numpy(),
                low=take(f"index_low/{name}").numpy(),
            )
            try:
                indices[name] = torch.from_numpy(index_codec.decode(encoded))
            except ValueError as err:
                raise DiffError(f"{blob}: bad index stream for {name} ({err})") from None
            values[name] = take(f"values/{name}")
            if values[name].numel() != entry["nnz"]:
                raise DiffError(f"{blob}: {name} has {values[name].numel()} values, not {entry['nnz']}")
        dense = {name: take(f"dense/{name}") for name in meta["dense"]}
        diff = cls(shapes, dtypes, indices, values, dense, k=meta["k"],
                   base_model=meta["base_model"], provenance=meta["provenance"], source=path)
        if diff.base_fingerprint != meta["base_fingerprint"]:
            raise DiffError(f"{path / META_FILE}: fingerprint does not match its own tensor list")
        return diff


_REQUIRED_META = ("base_model", "base_fingerprint", "k", "maskable", "dense", "provenance")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``diff.json`` of a diff directory, validated for format and version."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise DiffError(f"{meta_path}: file missing (not a diff directory?)")
    return checked.read_meta(meta_path, FORMAT_NAME, FORMAT_VERSION, DiffError, _REQUIRED_META)
