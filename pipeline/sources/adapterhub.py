"""Import released MAD-X language adapters (AdapterHub, the `adapters` library) into our format.

A released adapter is a directory as the `adapters` library's ``model.save_adapter(dir, name)``
writes it (and the hub serves it, e.g. ``AdapterHub/bert-base-multilingual-cased-en-wiki_pfeiffer``):

- ``adapter_config.json``: ``{"config": {...}, "name", "model_type", "model_name",
  "hidden_size", "version", ...}``, where ``config`` is the library's ``BnConfig`` as a dict
  (``mh_adapter``, ``output_adapter``, ``reduction_factor``, ``non_linearity``,
  ``original_ln_before``, …, ``inv_adapter: "nice"``, ``inv_adapter_reduction_factor``).
  Files written by adapter-transformers 1.x nest the invertible adapter instead
  (``"invertible_adapter": {"block_type": "nice", "reduction_factor": 2, ...}``), carry no
  ``version``, and name the tanh GELU ``gelu``; the library reads both, and so do we.
- ``pytorch_adapter.bin`` (a ``torch.save`` of a plain state dict) or ``adapter.safetensors``,
  keyed like the library's model::

      bert.encoder.layer.{i}.output.adapters.<name>.adapter_down.0.{weight,bias}   (d → d/rf)
      bert.encoder.layer.{i}.output.adapters.<name>.adapter_up.{weight,bias}       (d/rf → d)
      bert.invertible_adapters.<name>.{F,G}.{0,2}.{weight,bias}                    (NICE)

  (``roberta.`` for XLM-R; no prefix when saved from a bare encoder; 1.x files say
  ``layer_text_lang_adapters`` / ``invertible_lang_adapters``, renamed as the library does).

These map one to one onto our ``LanguageAdapter`` (``layers.{i}.down``, ``layers.{i}.up``,
``invertible.{F,G}.{0,2}``), whose computation is the library's for exactly this config
(Pfeiffer placement after the FFN with the block's own LayerNorm before and after, the
residual taken before it, NICE coupling on the embeddings). Anything else is refused with
one line naming what: another architecture or placement, another reduction factor, a
non-linearity we do not compute, no invertible adapter, missing or extra tensors, a shape
that does not fit. The ``.bin`` is read with torch's weights-only unpickler and no extra
globals: a plain state dict of tensors needs none, and a file that names any other global
(``os.system``, …) is refused before anything in it runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.formats.adapter import AdapterError, save_adapter
from pipeline.formats.checked import one_line, read_json, sha256_file
from pipeline.formats.weights_only import WeightsOnlyError, load_weights_only
from pipeline.methods.madx.adapters import NON_LINEARITIES, LanguageAdapter

CONFIG_FILE = "adapter_config.json"
BIN_FILE = "pytorch_adapter.bin"
SAFETENSORS_FILE = "adapter.safetensors"
# The base model's attribute name in the library's state dicts, by model_type.
BASE_PREFIXES = {"bert": "bert", "xlm-roberta": "roberta", "roberta": "roberta"}
# The library's renames for adapter-transformers 1.x weights (AdapterLoader.legacy_weights_mapping).
LEGACY_NAMES = {"attention_text_task_adapters": "adapters", "attention_text_lang_adapters": "adapters",
                "layer_text_task_adapters": "adapters", "layer_text_lang_adapters": "adapters",
                "invertible_lang_adapters": "invertible_adapters"}
# The library's rename of activations in configs without a "version" (adapter-transformers 1.x).
ACTIVATION_RENAME = {"gelu": "gelu_new", "gelu_orig": "gelu"}
_REQUIRED = object()
# The MAD-X language adapter, field by field: (the value it must have, the library's default
# when a saved config leaves the field out; _REQUIRED: BnConfig has no default).
MADX_CONFIG: dict[str, tuple[Any, Any]] = {
    "mh_adapter": (False, _REQUIRED),  # no adapter after attention
    "output_adapter": (True, _REQUIRED),  # one after the feed-forward block
    "original_ln_before": (True, False),
    "original_ln_after": (True, True),
    "residual_before_ln": (True, True),
    "adapter_residual_before_ln": (False, False),
    "ln_before": (False, False),
    "ln_after": (False, False),
    "is_parallel": (False, False),
    "scaling": (1.0, 1.0),
    "use_gating": (False, False),
    "phm_layer": (False, False),
    "cross_adapter": (False, False),
    "leave_out": ([], []),  # every layer adapted
    # Dropout would act on the language adapter while our task adapter trains over it.
    "dropout": (0.0, 0.0),
    "stochastic_depth": (0.0, 0.0),
    "inv_adapter": ("nice", None),
    "inv_adapter_reduction_factor": (2, None),  # F and G: half → half/2 → half
}


def read_config(directory: Path) -> dict[str, Any]:
    """``adapter_config.json`` as the library reads it (its 1.x activation names renamed)."""
    path = directory / CONFIG_FILE
    top = read_json(path, AdapterError,
                            "file missing (not an adapter directory saved by the adapters library)")
    if not isinstance(top, dict) or not isinstance(top.get("config"), dict):
        found = type(top.get("config")).__name__ if isinstance(top, dict) else type(top).__name__
        raise AdapterError(f"{path}: 'config' must be the adapter's full config as a mapping (found {found})")
    config = dict(top["config"])
    nested = config.pop("invertible_adapter", None)  # 1.x: the invertible adapter's own block
    if nested:
        config["inv_adapter"] = nested.get("block_type")
        config["inv_adapter_reduction_factor"] = nested.get("reduction_factor")
    if "version" not in top and config.get("non_linearity") in ACTIVATION_RENAME:
        config["non_linearity"] = ACTIVATION_RENAME[config["non_linearity"]]
    return {**top, "config": config}


def check_madx_config(top: Mapping[str, Any], reduction_factor: int, where: Path) -> str:
    """Refuse (one line naming the field) any config that is not a MAD-X language adapter
    with ``reduction_factor``; return its non-linearity."""
    config = top["config"]
    if config.get("architecture") not in (None, "bottleneck"):
        raise AdapterError(f"{where}: config.architecture is {config['architecture']!r}, MAD-X is a bottleneck adapter")
    if top.get("type", "text_lang") != "text_lang":
        raise AdapterError(f"{where}: type is {top['type']!r}, a language adapter is 'text_lang'")
    for field, (expected, default) in MADX_CONFIG.items():
        value = config.get(field, default)
        if value is _REQUIRED:
            raise AdapterError(f"{where}: config.{field} missing")
        if field == "inv_adapter" and value is None:
            raise AdapterError(f"{where}: config.inv_adapter missing: MAD-X language adapters have an invertible "
                               f"(NICE) adapter")
        if value != expected or isinstance(value, bool) != isinstance(expected, bool):  # 1.0 == True
            raise AdapterError(f"{where}: config.{field} is {value!r}, MAD-X's is {expected!r}")
    if "reduction_factor" not in config:
        raise AdapterError(f"{where}: config.reduction_factor missing")
    factor = config["reduction_factor"]
    factors = set(factor.values()) if isinstance(factor, Mapping) else {factor}  # per layer, or one for all
    if factors != {reduction_factor} or any(isinstance(f, bool) for f in factors):
        raise AdapterError(f"{where}: config.reduction_factor is {factor!r}, expected {reduction_factor} "
                           f"(madx.language.reduction_factor)")
    raw = config.get("non_linearity")
    name = raw.lower() if isinstance(raw, str) else raw
    if name not in NON_LINEARITIES:
        raise AdapterError(f"{where}: config.non_linearity is {raw!r}, MAD-X here computes "
                           f"{', '.join(NON_LINEARITIES)}")
    return name


def read_weights(directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The state dict, from ``adapter.safetensors`` (preferred: no pickle) or ``pytorch_adapter.bin``."""
    safe, binary = directory / SAFETENSORS_FILE, directory / BIN_FILE
    if safe.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return safe, load_file(str(safe))
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterError(f"{safe}: unreadable safetensors file ({one_line(err)})") from None
    if not binary.is_file():
        raise AdapterError(f"{directory}: neither {SAFETENSORS_FILE} nor {BIN_FILE} found")
    try:
        # Nothing allowed beyond torch's own list: tensors and plain containers are all a state dict holds.
        state = load_weights_only(binary)
    except WeightsOnlyError as err:
        raise AdapterError(f"{binary}: not a weights-only state dict ({err})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise AdapterError(f"{binary}: not a state dict of tensors (found {type(state).__name__})")
    return binary, dict(state)


def our_name(key: str, prefix: str, adapter: str) -> str | None:
    """Our LanguageAdapter's name for one of the library's keys, or None if it is not one."""
    for old, new in LEGACY_NAMES.items():
        key = key.replace(old, new)
    key = key.removeprefix(prefix + ".")
    name = re.escape(adapter)
    layer = re.fullmatch(rf"encoder\.layer\.(\d+)\.output\.adapters\.{name}\.(adapter_down\.0|adapter_up)\."
                         rf"(weight|bias)", key)
    if layer:
        return f"layers.{int(layer[1])}.{'down' if layer[2] == 'adapter_down.0' else 'up'}.{layer[3]}"
    coupling = re.fullmatch(rf"invertible_adapters\.{name}\.([FG]\.[02]\.(?:weight|bias))", key)
    return f"invertible.{coupling[1]}" if coupling else None


def to_language_adapter(directory: str | Path, reduction_factor: int = 2,
                        base_model: str | None = None) -> tuple[LanguageAdapter, dict[str, Any]]:
    """Read a released adapter directory into our LanguageAdapter; also return its provenance.

    ``base_model``: when given, an adapter trained for another model (config ``model_name``)
    is refused (an mBERT adapter loads into XLM-R's shapes without complaint otherwise).
    """
    directory = Path(directory)
    top = read_config(directory)
    where = directory / CONFIG_FILE
    non_linearity = check_madx_config(top, reduction_factor, where)
    if base_model and top.get("model_name") not in (None, base_model):
        raise AdapterError(f"{where}: model_name is {top['model_name']!r}, this pipeline's model is {base_model!r}")
    if top.get("model_type") not in BASE_PREFIXES:
        raise AdapterError(f"{where}: model_type is {top.get('model_type')!r}, expected one of "
                           f"{', '.join(BASE_PREFIXES)}")
    if not isinstance(top.get("name"), str):
        raise AdapterError(f"{where}: 'name' (the adapter's name in its tensor keys) missing")
    source, state = read_weights(directory)
    prefix = BASE_PREFIXES[top["model_type"]]
    mapped, extra = {}, []
    for key, tensor in state.items():
        ours = our_name(key, prefix, top["name"])
        if ours is None or ours in mapped:
            extra.append(key)
        else:
            mapped[ours] = tensor
    layers = 1 + max((int(n.split(".")[1]) for n in mapped if n.startswith("layers.")), default=-1)
    hidden = top.get("hidden_size") or next((t.shape[0] for n, t in mapped.items() if n.endswith("up.weight")), 0)
    if not layers or not hidden:
        raise AdapterError(f"{source}: no bottleneck adapter tensors for adapter {top['name']!r}")
    try:
        module = LanguageAdapter(int(hidden), layers, reduction_factor, torch.Generator().manual_seed(0),
                                 non_linearity)
    except ValueError as err:
        raise AdapterError(f"{where}: hidden_size {hidden}: {err}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra += sorted(set(mapped) - set(expected))
    if missing or extra:
        what = "missing tensors for " + ", ".join(missing[:3]) if missing else "extra tensors " + ", ".join(extra[:3])
        more = len(missing or extra) - 3
        raise AdapterError(f"{source}: {what}{f' (and {more} more)' if more > 0 else ''}")
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise AdapterError(f"{source}: shape mismatch for {name}: file {tuple(tensor.shape)}, "
                               f"MAD-X {tuple(expected[name].shape)} (hidden {hidden}, rf {reduction_factor})")
    module.load_state_dict(mapped, strict=True)
    provenance = {"method": "madx-published", "imported_from": str(directory), "adapter_name": top["name"],
                  "model_name": top.get("model_name"), "library_version": top.get("version"),
                  "weights_file": source.name, "weights_sha256": sha256_file(source),
                  "trainable_parameters": sum(t.numel() for t in expected.values())}
    return module, provenance


def import_adapter(directory: str | Path, out: str | Path, reduction_factor: int = 2,
                   base_model: str | None = None, **provenance: Any) -> dict[str, Any]:
    """Convert a released adapter directory into our adapter directory ``out``; return its meta."""
    module, record = to_language_adapter(directory, reduction_factor, base_model)
    record.update(provenance)
    save_adapter(module, out, record)
    return {**record, **module.describe()}
