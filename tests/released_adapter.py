"""A released MAD-X language adapter as the `adapters` library saves one, written here from
given weights: ``adapter_config.json`` and ``pytorch_adapter.bin`` or ``adapter.safetensors``.

The key table below is the library's (src/adapters: BottleneckLayer ``adapters`` under each
layer's ``output``, ``Adapter.adapter_down = Sequential(Linear, activation)``,
``adapter_up = Linear``, ``invertible_adapters`` with NICE ``F``/``G`` =
``Sequential(Linear, activation, Linear)``), written out independently of the importer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# The full config the library writes for a MAD-X language adapter (SeqBnInvConfig with
# reduction factor 2: BnConfig.to_dict()), which tests change field by field.
MADX_CONFIG = {
    "mh_adapter": False, "output_adapter": True, "reduction_factor": 2, "non_linearity": "relu",
    "original_ln_before": True, "original_ln_after": True, "ln_before": False, "ln_after": False,
    "init_weights": "bert", "init_weights_seed": None, "is_parallel": False, "scaling": 1.0, "use_gating": False,
    "residual_before_ln": True, "adapter_residual_before_ln": False, "inv_adapter": "nice",
    "inv_adapter_reduction_factor": 2, "cross_adapter": False, "leave_out": [], "dropout": 0.0, "phm_layer": False,
    "phm_dim": 4, "factorized_phm_W": True, "shared_W_phm": False, "shared_phm_rule": True,
    "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001, "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": True, "stochastic_depth": 0.0,
}


def released_tensors(weights: dict[str, torch.Tensor], name: str = "en", prefix: str = "bert.",
                     legacy: bool = False) -> dict[str, torch.Tensor]:
    """Weights given per library role — ``down.{i}``, ``up.{i}``, ``F.0`` … (``.weight``/``.bias``)
    — under the library's state-dict keys (``legacy``: adapter-transformers 1.x names)."""
    layers, invertible = ("layer_text_lang_adapters", "invertible_lang_adapters") if legacy else (
        "adapters", "invertible_adapters")
    keys = {}
    for role, tensor in weights.items():
        part, rest = role.split(".", 1)
        if part in ("down", "up"):
            index, kind = rest.split(".")
            module = "adapter_down.0" if part == "down" else "adapter_up"
            keys[f"{prefix}encoder.layer.{index}.output.{layers}.{name}.{module}.{kind}"] = tensor.clone()
        else:  # F.0.weight, G.2.bias, ...
            keys[f"{prefix}{invertible}.{name}.{role}"] = tensor.clone()
    return keys


def random_roles(hidden: int, layers: int, seed: int = 0, std: float = 0.3) -> dict[str, torch.Tensor]:
    """Random weights for every role of a rf-2 language adapter with its NICE block."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    half = hidden // 2
    roles = {}
    for i in range(layers):
        roles |= {f"down.{i}.weight": rand(hidden // 2, hidden), f"down.{i}.bias": rand(hidden // 2),
                  f"up.{i}.weight": rand(hidden, hidden // 2), f"up.{i}.bias": rand(hidden)}
    for mlp in "FG":
        roles |= {f"{mlp}.0.weight": rand(half // 2, half), f"{mlp}.0.bias": rand(half // 2),
                  f"{mlp}.2.weight": rand(half, half // 2), f"{mlp}.2.bias": rand(half)}
    return roles


def write_released(directory: Path, tensors: dict[str, torch.Tensor], config: dict | None = None,
                   fmt: str = "bin", name: str = "en", model_type: str = "bert", hidden_size: int | None = None,
                   model_name: str = "tiny-bert", version: str | None = "adapters.1.2.0", **top: object) -> Path:
    """An adapter directory as ``model.save_adapter`` writes it (``version=None``: a 1.x file)."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {"config": MADX_CONFIG if config is None else config, "model_type": model_type, "name": name,
              "model_name": model_name, "model_class": "BertForMaskedLM", **top}
    if hidden_size is not None:
        record["hidden_size"] = hidden_size
    if version is not None:
        record["version"] = version
    (directory / "adapter_config.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    if fmt == "bin":
        torch.save(tensors, directory / "pytorch_adapter.bin")
    else:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "adapter.safetensors"))
    return directory
