"""The MAD-G contextual parameter generator: typology vector → language adapter.

As in the authors' code (github adapter-hub/CPGAdapters, ``src/transformers/cpg.py``):

- **Language embedding** ``e = W_t · t + b_t``: one linear layer from the 289-dim 0/1 URIEL
  vector ``t`` (``syntax_knn+phonology_knn+inventory_knn``) to 32 dims, no activation;
  initialised as ``nn.Linear`` initialises itself (the authors' ``UrielMlpProperty.layer_1``).
- **Generation**: every tensor ``w`` of the adapter (each down/up weight and bias) has its own
  generator tensor ``P_w`` of shape ``(*w.shape, c)`` and ``w = P_w · e`` (a matmul over the
  last axis; no bias); ``P_w`` normal with std ``1/c``, ``c`` the context width
  (``CpgModule.init_params``: std ``1 / context_dim``).
- **Layer-shared variant** (``layer_dim > 0``; the authors' ``sharing-uriel-cpg``): ONE
  ``P_w`` per tensor of a single layer's bottleneck, shared by all layers, reading the context
  ``[e; l_i]`` (``c = 32 + 32``: the language embedding, then layer ``i``'s learned embedding
  ``l_i`` (normal, std 1/32), in that order because the authors' ``Environment`` sorts its
  properties by name). Which variant the paper used is not confirmed.

The generated adapter has exactly the structure of this project's MAD-X language adapter
(``pipeline/methods/madx/adapters.py``: one bottleneck per layer after the feed-forward block,
ReLU, reduction factor 16 by default as in the authors' configs) WITHOUT the invertible
adapter: the authors' MAD-G configs comment it out (no ``invertible_adapter`` in
``UrielCpgConfig``), so their generated adapters leave the embeddings and the MLM decoder
untouched, and so do ours.

Parameters, with ``A = L·(2·d·(d/rf) + d/rf + d)`` the entries of one generated adapter
(``d`` hidden size, ``L`` layers) and ``T·D + D`` those of the language embedding (``T``
typology dims, ``D`` = 32)::

    default        D·A           + T·D + D
    layer-shared   (D + D_l)·A/L + T·D + D + L·D_l

On mBERT (d 768, L 12, rf 16, T 289): A = 894,528; default 28,634,176; layer-shared
4,780,480 (4,770,816 + 9,280 + the 384 entries of the 12 layer embeddings, which the authors
train too: ``train_adapter`` unfreezes every parameter of the CPG environment).

How the generated tensors enter a model: :func:`install` gives the model an ordinary MAD-X
language adapter (no invertible part) whose tensors are placeholders, and
:func:`generated_forward` runs the model with those tensors replaced by the generated ones
(``torch.func.functional_call``), so gradients reach the generator through the very MAD-X code
that evaluation uses. :func:`generate_adapter` ("decontextualise" in the authors' code) turns
one language's generated tensors into that ordinary adapter, saved in the existing adapter
format (``pipeline/formats/adapter.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import LtsftError
from pipeline.methods.madx.adapters import ATTRIBUTE, LanguageAdapter, MadX, add_madx

TYPOLOGY_DIM = 289  # 103 syntax + 28 phonology + 158 inventory (lang2vec's knn sets)
LANGUAGE_DIM = 32
REDUCTION_FACTOR = 16
KIND = "mad-g-generator"


def _key(name: str) -> str:
    """A generated tensor's name as a ParameterDict key (which may not contain dots)."""
    return name.replace(".", "-")


class MadGenerator(nn.Module):
    """Typology vector → the tensors of one MAD-X language adapter (see the module docstring).

    ``layer_dim = 0`` is the default variant (a generator tensor per tensor of every layer);
    ``layer_dim > 0`` the layer-shared one. With ``seed`` the initialisation comes from a
    private generator: the global RNG is neither read nor advanced.
    """

    def __init__(self, hidden_size: int, num_layers: int, reduction_factor: int = REDUCTION_FACTOR,
                 typology_dim: int = TYPOLOGY_DIM, language_dim: int = LANGUAGE_DIM, layer_dim: int = 0,
                 seed: int | None = None) -> None:
        super().__init__()
        for name, value, least in (("num_layers", num_layers, 1), ("typology_dim", typology_dim, 1),
                                   ("language_dim", language_dim, 1), ("layer_dim", layer_dim, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"MadGenerator: {name} must be an integer >= {least}, not {value!r}")
        self.hidden_size, self.num_layers, self.reduction_factor = hidden_size, num_layers, reduction_factor
        self.typology_dim, self.language_dim, self.layer_dim = typology_dim, language_dim, layer_dim
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        # Built on the meta device first (as MAD-X's layers are), so nn.Linear's own init does
        # not draw from the global RNG; then placed on the current default device and drawn here.
        self.language = nn.Linear(typology_dim, language_dim, device="meta").to_empty(device=torch.empty(0).device)
        self._init_like_linear(self.language, rng)
        # What is generated: the names and shapes of an adapter's tensors, read off the MAD-X
        # module itself (so a change there is followed here), for one layer when layers share.
        template = self.empty_adapter()
        self.adapter_description = template.describe()
        shapes = {name: tuple(t.shape) for name, t in
                  (template.layers[0] if layer_dim else template).state_dict().items()}
        self.generated_names = list(shapes)
        context = language_dim + layer_dim
        self.layer_embeddings = nn.Parameter(torch.empty(num_layers, layer_dim)) if layer_dim else None
        if self.layer_embeddings is not None:
            nn.init.normal_(self.layer_embeddings, std=1.0 / layer_dim, generator=rng)
        self.weights = nn.ParameterDict()
        for name, shape in shapes.items():
            tensor = nn.Parameter(torch.empty(*shape, context))
            nn.init.normal_(tensor, std=1.0 / context, generator=rng)
            self.weights[_key(name)] = tensor

    @staticmethod
    def _init_like_linear(layer: nn.Linear, rng: torch.Generator | None) -> None:
        """``nn.Linear.reset_parameters``, drawn from ``rng`` (the authors' embedding layer is a
        default-initialised ``nn.Linear``)."""
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=rng)
        bound = 1 / math.sqrt(layer.in_features)
        nn.init.uniform_(layer.bias, -bound, bound, generator=rng)

    @classmethod
    def for_model(cls, model_or_config: Any, **settings: Any) -> MadGenerator:
        """A generator for a model (or its config): hidden size and layer count read off it."""
        config = getattr(model_or_config, "config", model_or_config)
        return cls(int(config.hidden_size), int(config.num_hidden_layers), **settings)

    def describe(self) -> dict[str, Any]:
        """The architecture fields its file stores (pipeline/formats/mad_g_generator.py)."""
        return {"kind": KIND, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "reduction_factor": self.reduction_factor, "typology_dim": self.typology_dim,
                "language_dim": self.language_dim, "layer_dim": self.layer_dim}

    @classmethod
    def from_description(cls, fields: Mapping[str, Any]) -> MadGenerator:
        """An (uninitialised-in-meaning) generator of the described architecture, to load into."""
        names = ("hidden_size", "num_layers", "reduction_factor", "typology_dim", "language_dim", "layer_dim")
        return cls(**{name: fields[name] for name in names}, seed=0)

    def empty_adapter(self) -> LanguageAdapter:
        """A MAD-X language adapter (no invertible part) of the generated shape; its values are
        placeholders from a fixed private seed (the global RNG is untouched)."""
        return LanguageAdapter(self.hidden_size, self.num_layers, self.reduction_factor,
                               generator=torch.Generator().manual_seed(0), invertible=False)

    def language_embedding(self, typology: torch.Tensor) -> torch.Tensor:
        return self.language(typology.to(self.language.weight))

    def forward(self, typology: torch.Tensor) -> dict[str, torch.Tensor]:
        """The adapter's tensors, named as in its ``state_dict()``, for one typology vector."""
        embedding = self.language_embedding(typology)
        if self.layer_embeddings is None:
            return {name: self.weights[_key(name)] @ embedding for name in self.generated_names}
        generated = {}
        for index in range(self.num_layers):
            context = torch.cat([embedding, self.layer_embeddings[index]])
            for name in self.generated_names:
                generated[f"layers.{index}.{name}"] = self.weights[_key(name)] @ context
        return generated


def typology_tensor(vector: Any, generator: MadGenerator, language: str = "") -> torch.Tensor:
    """A typology vector (numpy or torch) as a 1-D float tensor of the generator's width, or
    LtsftError in one line naming the language."""
    tensor = torch.as_tensor(np.asarray(vector, dtype=np.float32) if not isinstance(vector, torch.Tensor) else vector)
    if tuple(tensor.shape) != (generator.typology_dim,):
        what = f"typology vector of {language!r}" if language else "typology vector"
        raise LtsftError(f"{what} has shape {tuple(tensor.shape)}, the generator reads ({generator.typology_dim},)")
    return tensor.to(torch.float32)


def install(model: nn.Module, generator: MadGenerator, task_rf: int | None = None, seed: int = 0) -> MadX:
    """Give ``model`` the MAD-X language adapter slot the generator fills (and, with ``task_rf``,
    a task adapter stacked on it, initialised from ``seed`` as ``add_madx`` does). The slot's
    placeholder values are never used by :func:`generated_forward`; load a generated adapter
    (:func:`save_generated_adapter`'s directory) into ``madx.language`` for plain forwards."""
    return add_madx(model, language_rf=generator.reduction_factor, task_rf=task_rf, seed=seed,
                    language_invertible=False)


def _check_slot(model: nn.Module, generator: MadGenerator) -> None:
    madx = getattr(model, ATTRIBUTE, None)
    language = getattr(madx, "language", None)
    expected = generator.adapter_description
    if language is None or language.describe() != expected:
        found = language.describe() if language is not None else None
        raise LtsftError(f"the model's MAD-X language adapter is {found}, the generator makes {expected} "
                         "(call mad_g.generator.install first)")


def generated_forward(model: nn.Module, generator: MadGenerator, typology: torch.Tensor, **batch: Any) -> Any:
    """``model(**batch)`` with its MAD-X language adapter's tensors generated from ``typology``:
    differentiable in the generator's parameters; the model's own tensors are not touched."""
    _check_slot(model, generator)
    prefix = f"{ATTRIBUTE}.language."
    tensors = {prefix + name: tensor for name, tensor in generator(typology).items()}
    return torch.func.functional_call(model, tensors, args=(), kwargs=batch, strict=False)


@torch.no_grad()
def generate_adapter(generator: MadGenerator, typology: torch.Tensor) -> LanguageAdapter:
    """Decontextualise: one language's generated tensors as an ordinary MAD-X language adapter
    (what `mad-g` uses at test time and `mad-g-ls` fine-tunes further)."""
    adapter = generator.empty_adapter().to(generator.language.weight)
    adapter.load_state_dict(generator(typology), strict=True)
    return adapter


def save_generated_adapter(generator: MadGenerator, typology: torch.Tensor, path: str | Path,
                           meta: Mapping[str, Any]) -> None:
    """Write one language's generated adapter in the MAD-X adapter format, atomically."""
    from pipeline.formats.adapter import save_adapter

    save_adapter(generate_adapter(generator, typology), path, {"generated_by": "mad-g", **meta})


def load_generator(path: str | Path, model: nn.Module, base_model: str | None = None) -> MadGenerator:
    """A generator saved by ``pipeline.formats.mad_g_generator.save_generator``, on ``model``'s
    device; refused (GeneratorError, one line) if damaged or trained on another base model."""
    from pipeline.formats.mad_g_generator import (
        GeneratorError,
        load_generator_into,
        read_generator_meta,
    )

    meta = read_generator_meta(path)
    try:
        generator = MadGenerator.from_description(meta)
    except (KeyError, TypeError, ValueError) as err:
        raise GeneratorError(f"{Path(path)}: cannot build the described generator ({err})") from None
    generator.to(next(model.parameters()).device)
    load_generator_into(path, generator, model, base_model)
    return generator
