"""Which parameters of a model a method may change, and exact copies of them.

A model's *maskable* parameters are the encoder body's without its LayerNorms (frozen in
every reference run); heads are never maskable. ``snapshot`` / ``restore`` copy parameter
values out and back bit-exactly: evaluation and the sweep restore a composed model between
targets instead of reverting a diff, which would accumulate rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def layer_norm_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of every LayerNorm parameter: frozen in every reference run, never maskable."""
    return {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for param_name, _ in module.named_parameters(recurse=False)
    }


def maskable_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the encoder body's maskable parameters.

    The encoder body is ``model.base_model`` (embeddings, transformer layers, pooler);
    heads are never maskable, and LayerNorm parameters are excluded (frozen).
    """
    body = getattr(model, "base_model", model)
    prefix = model.base_model_prefix if body is not model else ""
    frozen = layer_norm_parameter_names(body)
    return [
        f"{prefix}.{name}" if prefix else name
        for name, _ in body.named_parameters()
        if name not in frozen
    ]


def snapshot(model: torch.nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of the named parameters (all parameters when ``names`` is None), in host
    memory: the Trainer moves the model to its device after the first snapshot is taken, and
    states taken before and after must compare on one device (a GPU holds only the model)."""
    params = dict(model.named_parameters())
    chosen = params if names is None else {n: params[n] for n in names}
    return {n: p.detach().clone() if p.device.type == "cpu" else p.detach().cpu() for n, p in chosen.items()}


@torch.no_grad()
def restore(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Copy ``state`` (from :func:`snapshot`) back into ``model``'s parameters, bit-exactly."""
    params = dict(model.named_parameters())
    for name, value in state.items():
        params[name].copy_(value)
    return model


def count_parameters(module: torch.nn.Module) -> int:
    """Number of distinct parameter entries of ``module`` (shared tensors counted once)."""
    return sum(param.numel() for param in module.parameters())


def count_parameters_named(model: torch.nn.Module, names: Iterable[str]) -> int:
    """Entries of the named parameters of ``model``."""
    params = dict(model.named_parameters())
    return sum(params[name].numel() for name in names)
