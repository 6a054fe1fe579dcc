"""MAD-G generator files: a checked directory (``generator.safetensors`` + ``generator.json``).

``generator.json`` holds the generator's own description (``module.describe()``: kind, hidden
size, layers, reduction factor, typology / language / layer-embedding widths), its parameter
count, the base model it was trained on (its name and a fingerprint of the encoder's tensor
names, shapes and dtypes, as sparse diffs record theirs), the caller's provenance and the
tensors' checksum. A load is verified completely (format, architecture, base model, checksum,
tensor names and shapes) before the module is touched, so a refused load changes nothing.

The fingerprint covers the transformer layers only (``base_model.encoder``), the part the
generated adapters sit in: heads differ between the MLM model the generator trains with and
the task models that use its adapters, and vocabulary trimming (pipeline/vocab_trim.py)
changes only the embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pipeline.core.errors import LtsftError
from pipeline.core.parameters import count_parameters
from pipeline.formats import checked
from pipeline.formats.sparse_diff import fingerprint

FORMAT_NAME = "ltsft-mad-g-generator"
FORMAT_VERSION = 1
TENSORS_FILE = "generator.safetensors"
META_FILE = "generator.json"
_REQUIRED = ("kind", "base_model", "base_fingerprint")


class GeneratorError(LtsftError, ValueError):
    """A generator that cannot be saved or loaded; the message is one line naming the file."""


def base_fingerprint(model: nn.Module) -> str:
    """Names, shapes and dtypes of ``model``'s transformer layers, hashed (see the docstring)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    if encoder is None:
        raise GeneratorError(f"{type(model).__name__} has no base_model.encoder to fingerprint")
    params = dict(encoder.named_parameters())
    return fingerprint({n: tuple(p.shape) for n, p in params.items()},
                       {n: str(p.dtype).removeprefix("torch.") for n, p in params.items()})


def save_generator(module: nn.Module, path: str | Path, model: nn.Module, base_model: str,
                   meta: dict[str, Any]) -> None:
    """Write ``module`` (a generator with ``describe()``) trained on ``model`` to ``path``, atomically.

    The description, parameter count and base model are computed here and take precedence
    over same-named keys in ``meta``."""
    record = {**meta, **module.describe(), "format": FORMAT_NAME, "version": FORMAT_VERSION,
              "parameters": count_parameters(module), "base_model": base_model,
              "base_fingerprint": base_fingerprint(model)}
    for key in (checked.SHA256, checked.BYTES):
        record.pop(key, None)
    checked.write_checked(path, TENSORS_FILE, META_FILE, module.state_dict(), record)


def read_generator_meta(path: str | Path) -> dict[str, Any]:
    """``generator.json`` of a generator directory, validated for format and version."""
    return checked.read_meta(Path(path) / META_FILE, FORMAT_NAME, FORMAT_VERSION, GeneratorError, _REQUIRED)


def load_generator_into(path: str | Path, module: nn.Module, model: nn.Module,
                        base_model: str | None = None) -> dict[str, Any]:
    """Load the generator at ``path`` into ``module`` (strict) for use on ``model``; its meta.

    Refused, one line: another architecture, another base model (``base_model``: the name the
    caller's model was loaded as, checked when given; the fingerprint always), damage."""
    path = Path(path)
    meta_path = path / META_FILE
    meta = read_generator_meta(path)
    for key, value in module.describe().items():
        if meta.get(key) != value:
            raise GeneratorError(f"{meta_path}: {key} is {meta.get(key)!r}, the module's is {value!r}")
    if base_model is not None and meta["base_model"] != base_model:
        raise GeneratorError(f"{meta_path}: trained on base model {meta['base_model']!r}, not {base_model!r}")
    found = base_fingerprint(model)
    if meta["base_fingerprint"] != found:
        raise GeneratorError(f"{meta_path}: base fingerprint {meta['base_fingerprint']} does not match the "
                             f"model's {found} (a generator for another base model?)")
    device = next(module.parameters()).device
    tensors = checked.read_tensors(path / TENSORS_FILE, meta, META_FILE, GeneratorError, device)
    checked.check_state(tensors, module.state_dict(), path / TENSORS_FILE, GeneratorError)
    module.load_state_dict(tensors, strict=True)
    return meta
