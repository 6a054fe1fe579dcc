"""MAD-X adapters (Pfeiffer et al., 2020) in plain PyTorch, for the paper's adapter baselines.

Structure (each formula is what the code below computes):

- **Bottleneck** ``A(a) = W_up · relu(W_down · a + b_down) + b_up`` with ``W_down: d → d/rf`` and
  ``W_up: d/rf → d``; weights ~ N(0, 0.02), biases 0. Parameters: ``2·d·(d/rf) + d/rf + d``.
- **Language adapter**: one bottleneck (rf = 2) per transformer layer, placed after the
  feed-forward block and reusing that block's pretrained (frozen) LayerNorm ``LN``. With
  ``h = dropout(dense(intermediate))`` the FFN output and ``x`` the attention output (the
  block's ``input_tensor``)::

      a = LN(h + x);  out = h + L(a);  y = LN(out + x)

- **Task adapter**: the same bottleneck (rf = 16), stacked on the language adapter in every
  layer; it reads ``LN(out_lang + x)`` and adds to ``out_lang``::

      out_task = out_lang + T(LN(out_lang + x));  y = LN(out_task + x)

  With the language adapter inactive ("madx-task-only") it is ``out = h + T(LN(h + x))``;
  with neither active the block is exactly the original ``LN(h + x)``. In general every
  active adapter, language first, does ``out ← out + A(LN(out + x))`` starting from ``out = h``.
- **Invertible adapter** (NICE additive coupling; part of the language adapter) on the
  embedding output: split channels into halves ``x1, x2``; ``y1 = x1 + F(x2)``,
  ``y2 = x2 + G(y1)``, where F and G are bottlenecks ``half → half/2 → half`` (same init).
  Parameters: ``2·(2·h·(h/2) + h/2 + h)`` with ``h = d/2``. Its exact inverse
  ``x2 = y2 − G(y1); x1 = y1 − F(x2)`` is applied to the hidden states entering the MLM output
  embedding (decoder), so the language adapter is trained in the same space it reads from;
  task models have no output embedding and get no inverse.

For a 768-wide 12-layer encoder this gives 7,091,712 (language) + 296,064 (invertible) and
894,528 (task, rf 16) parameters.

The non-linearity is ReLU. A language adapter may name another one (``non_linearity``: the
`adapters` library's ``gelu`` or ``gelu_new``), because the released AdapterHub language
adapters that ``madx-published`` imports were trained with GELU; it applies to the
bottlenecks and to F and G alike, as in that library. Everything trained here uses ReLU.

How it is installed (:func:`add_madx`), chosen so that pretrained parameter names and the
state_dict stay exactly those of the unadapted model:

- all adapters live in ONE top-level submodule ``model.madx`` (names ``madx.language.…``,
  ``madx.task.…``), never under ``base_model`` or the transformer layers;
- each ``encoder.layer[i].output`` (``BertOutput`` / ``XLMRobertaOutput``, called by
  transformers 5 as ``output(intermediate_output, attention_output)``) gets an
  instance-level ``forward`` override, the module itself is neither replaced nor wrapped;
- a forward hook on ``base_model.embeddings`` and a forward pre-hook on
  ``model.get_output_embeddings()`` apply the invertible adapter and its inverse.

The overrides and hooks reach the adapters only through ``model.madx`` references that
``copy.deepcopy`` remaps, so a deep copy of an adapted model is self-contained.

On disk an adapter is a checked directory (``pipeline/formats/adapter.py``): the module's
``describe()`` fields, its parameter count and the tensors' checksum; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


INIT_STD = 0.02
ATTRIBUTE = "madx"
# Parameter-free non-linearities an adapter may use: ReLU (MAD-X, everything trained here) and
# the GELUs of the released AdapterHub language adapters (transformers' own functions, as the
# `adapters` library uses them: "gelu_new" is the tanh approximation).
NON_LINEARITIES = ("relu", "gelu", "gelu_new")


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


def _divide(numerator: int, denominator: int, what: str) -> int:
    """Exact integer division: a silently rounded width would change the parameter count."""
    if denominator <= 0 or numerator % denominator:
        raise ValueError(f"{what}: {numerator} is not divisible by {denominator}")
    return numerator // denominator


def _linear(in_features: int, out_features: int, generator: torch.Generator | None) -> nn.Linear:
    """An ``nn.Linear`` with the MAD-X initialisation: weights ~ N(0, 0.02), biases 0.

    Built on the meta device first, so ``nn.Linear``'s own (discarded) Kaiming init neither
    costs time nor draws from the global RNG: with a ``generator`` the global RNG is untouched.
    """
    layer = nn.Linear(in_features, out_features, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        layer.weight.normal_(0.0, INIT_STD, generator=generator)
        layer.bias.zero_()
    return layer


def activation(name: str) -> nn.Module:
    """The module computing the non-linearity ``name`` (one of ``NON_LINEARITIES``)."""
    if name == "relu":
        return nn.ReLU()
    if name not in NON_LINEARITIES:
        raise ValueError(f"non-linearity {name!r} is not one of {', '.join(NON_LINEARITIES)}")
    # What the `adapters` library calls for these names.
    from transformers.activations import get_activation

    return get_activation(name)


class _Described(nn.Module):
    """An adapter module that can say what it is: the architecture fields of its file
    (``pipeline/formats/adapter.py`` stores them and refuses a load into another shape)."""

    kind = ""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "hidden_size": self.hidden_size,
                "num_layers": getattr(self, "num_layers", 1),
                "reduction_factor": getattr(self, "reduction_factor", 2),
                "non_linearity": getattr(self, "non_linearity", "relu")}


class BottleneckAdapter(_Described):
    """``a ↦ W_up · relu(W_down · a)`` (with biases): the residual is added by the caller,
    because MAD-X adds it to the FFN output ``h``, not to the adapter's input ``a``."""

    kind = "bottleneck"

    def __init__(self, hidden_size: int, reduction_factor: int,
                 generator: torch.Generator | None = None, non_linearity: str = "relu") -> None:
        super().__init__()
        bottleneck = _divide(hidden_size, reduction_factor, "bottleneck width")
        self.hidden_size = hidden_size
        self.reduction_factor = reduction_factor
        self.non_linearity = non_linearity
        self.down = _linear(hidden_size, bottleneck, generator)
        self.activation = activation(non_linearity)  # parameter-free: not in the state_dict
        self.up = _linear(bottleneck, hidden_size, generator)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.up(self.activation(self.down(a)))


def _coupling_mlp(half: int, generator: torch.Generator | None, non_linearity: str = "relu") -> nn.Sequential:
    """F or G of the NICE coupling: ``half → half/2 → half`` (reduction factor 2), indexed as
    the `adapters` library's (``0`` and ``2`` are the linear layers)."""
    inner = _divide(half, 2, "invertible adapter inner width")
    return nn.Sequential(_linear(half, inner, generator), activation(non_linearity), _linear(inner, half, generator))


class InvertibleAdapter(_Described):
    """NICE additive coupling ``y1 = x1 + F(x2); y2 = x2 + G(y1)``: exactly invertible, so
    the MLM head can map hidden states back into the space the word embeddings live in."""

    kind = "invertible"

    def __init__(self, hidden_size: int, generator: torch.Generator | None = None,
                 non_linearity: str = "relu") -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.non_linearity = non_linearity
        self.half = _divide(hidden_size, 2, "invertible adapter half width")
        self.F = _coupling_mlp(self.half, generator, non_linearity)
        self.G = _coupling_mlp(self.half, generator, non_linearity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : self.half], x[..., self.half :]
        y1 = x1 + self.F(x2)
        y2 = x2 + self.G(y1)
        return torch.cat([y1, y2], dim=-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[..., : self.half], y[..., self.half :]
        x2 = y2 - self.G(y1)
        x1 = y1 - self.F(x2)
        return torch.cat([x1, x2], dim=-1)


class _LayerAdapters(_Described):
    """One bottleneck per transformer layer: what language and task adapters share."""

    def __init__(self, hidden_size: int, num_layers: int, reduction_factor: int,
                 generator: torch.Generator | None = None, non_linearity: str = "relu") -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.reduction_factor = reduction_factor
        self.non_linearity = non_linearity
        self.layers = nn.ModuleList(
            BottleneckAdapter(hidden_size, reduction_factor, generator, non_linearity) for _ in range(num_layers)
        )


class LanguageAdapter(_LayerAdapters):
    """Per-layer bottlenecks (rf 2 by default) plus the invertible embedding adapter.

    ``invertible=False`` leaves the invertible adapter out: MAD-G generates only the
    bottlenecks (``pipeline/methods/mad_g``), and its adapters are ordinary language adapters
    otherwise. Such an adapter says so in its description (``invertible: false``); one with
    the invertible adapter describes itself exactly as before, so its files do not change.
    """

    kind = "language"

    def __init__(self, hidden_size: int, num_layers: int, reduction_factor: int = 2,
                 generator: torch.Generator | None = None, non_linearity: str = "relu",
                 invertible: bool = True) -> None:
        super().__init__(hidden_size, num_layers, reduction_factor, generator, non_linearity)
        self.invertible = InvertibleAdapter(hidden_size, generator, non_linearity) if invertible else None

    def describe(self) -> dict[str, Any]:
        fields = super().describe()
        if self.invertible is None:
            fields["invertible"] = False
        return fields

    def use_non_linearity(self, name: str) -> None:
        """Switch every bottleneck and F and G to ``name`` (no weight changes: the functions are
        parameter-free), e.g. before loading a released adapter file that names GELU."""
        if name == self.non_linearity:
            return
        for module in (*self.layers, *([self.invertible] if self.invertible is not None else [])):
            module.non_linearity = name
        for bottleneck in self.layers:
            bottleneck.activation = activation(name)
        if self.invertible is not None:
            for mlp in (self.invertible.F, self.invertible.G):
                mlp[1] = activation(name)
        self.non_linearity = name


class TaskAdapter(_LayerAdapters):
    """Per-layer bottlenecks (rf 16 by default), stacked on the language adapter."""

    kind = "task"

    def __init__(self, hidden_size: int, num_layers: int, reduction_factor: int = 16,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(hidden_size, num_layers, reduction_factor, generator)


class MadX(nn.Module):
    """The adapters of one model, and which of them take part in the computation.

    ``language_active`` / ``task_active`` (see :func:`set_active`) switch an adapter off
    without deleting its weights: for madx-task-only evaluation and for checking that the
    model with no adapter active is exactly the pretrained one.
    """

    def __init__(self, language: LanguageAdapter | None, task: TaskAdapter | None) -> None:
        super().__init__()
        self.language = language
        self.task = task
        self.language_active = language is not None
        self.task_active = task is not None

    def _use_language(self) -> bool:
        return self.language is not None and self.language_active

    def _use_task(self) -> bool:
        return self.task is not None and self.task_active

    def _use_invertible(self) -> bool:
        return self._use_language() and self.language.invertible is not None

    def block_output(self, index: int, output_module: nn.Module,
                     hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """The adapted ``BertOutput.forward``: ``out ← out + A(LN(out + x))`` per active adapter.

        With no adapter active this is literally the original ``LN(dropout(dense(h)) + x)``.
        """
        norm = output_module.LayerNorm
        out = output_module.dropout(output_module.dense(hidden_states))
        for adapter in self._active_bottlenecks(index):
            out = out + adapter(norm(out + input_tensor))
        return norm(out + input_tensor)

    def _active_bottlenecks(self, index: int) -> list[BottleneckAdapter]:
        """Language first, then task: the task adapter reads the language-adapted stream."""
        active = []
        if self._use_language():
            active.append(self.language.layers[index])
        if self._use_task():
            active.append(self.task.layers[index])
        return active

    def after_embeddings(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Forward hook on the embeddings: apply the invertible adapter (language only)."""
        if not self._use_invertible():
            return None
        if isinstance(output, tuple):
            return (self.language.invertible(output[0]), *output[1:])
        return self.language.invertible(output)

    def before_decoder(self, module: nn.Module, args: tuple) -> tuple | None:
        """Forward pre-hook on the MLM output embedding: undo the invertible adapter."""
        if not self._use_invertible() or not args:
            return None
        return (self.language.invertible.inverse(args[0]), *args[1:])


class _AdaptedOutputForward:
    """Instance-level ``forward`` of one layer's output module.

    A callable object (not a closure) so that ``copy.deepcopy`` of the model remaps its
    references to the copied ``madx`` and output module instead of sharing the originals.
    It is a plain attribute, never a submodule, so the adapter weights appear once, under
    ``madx.``.
    """

    def __init__(self, madx: MadX, index: int, module: nn.Module) -> None:
        self.madx = madx
        self.index = index
        self.module = module

    def __call__(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.madx.block_output(self.index, self.module, hidden_states, input_tensor)


# ---------------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------------


def _output_modules(model: nn.Module) -> list[nn.Module]:
    """Each transformer layer's FFN output module (``dense``/``dropout``/``LayerNorm``)."""
    base = getattr(model, "base_model", model)
    try:
        layers = list(base.encoder.layer)
    except AttributeError as err:
        raise TypeError(f"add_madx: {type(model).__name__} has no base_model.encoder.layer") from err
    outputs = [getattr(layer, "output", None) for layer in layers]
    for index, output in enumerate(outputs):
        if not all(hasattr(output, name) for name in ("dense", "dropout", "LayerNorm")):
            raise TypeError(f"add_madx: encoder.layer[{index}].output lacks dense/dropout/LayerNorm")
    return outputs


def _already_adapted(model: nn.Module, outputs: list[nn.Module]) -> bool:
    """True if MAD-X is installed; a foreign ``forward`` override (e.g. accelerate's
    device-placement hooks) is refused rather than silently clobbered."""
    overrides = [vars(out).get("forward") for out in outputs]
    if any(o is not None and not isinstance(o, _AdaptedOutputForward) for o in overrides):
        raise TypeError("add_madx: a layer output's forward is already overridden by something else")
    return ATTRIBUTE in model._modules or any(o is not None for o in overrides)


def add_madx(model: nn.Module, language_rf: int | None = 2, task_rf: int | None = 16,
             seed: int | None = None, language_invertible: bool = True) -> MadX:
    """Create MAD-X adapters for ``model`` and put them into its forward computation.

    The adapters become the single submodule ``model.madx``, on the model's device and
    dtype; either reduction factor may be ``None`` to omit that adapter, and
    ``language_invertible=False`` omits the language adapter's invertible part (MAD-G). With ``seed`` the
    initialisation comes from a private generator, so it neither depends on nor advances
    the global RNG. Adapting a model twice raises ``ValueError``.
    """
    outputs = _output_modules(model)
    if _already_adapted(model, outputs):
        raise ValueError(f"add_madx: {type(model).__name__} already has MAD-X adapters installed")
    hidden_size = int(model.config.hidden_size)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    language = (LanguageAdapter(hidden_size, len(outputs), language_rf, generator, invertible=language_invertible)
                if language_rf is not None else None)
    task = TaskAdapter(hidden_size, len(outputs), task_rf, generator) if task_rf is not None else None
    madx = MadX(language, task)
    reference = next(model.parameters())
    madx.to(device=reference.device, dtype=reference.dtype)
    madx.train(model.training)
    model.add_module(ATTRIBUTE, madx)
    _install(model, madx, outputs)
    return madx


def _install(model: nn.Module, madx: MadX, outputs: list[nn.Module]) -> None:
    """Override each output module's forward and register the invertible-adapter hooks."""
    for index, output in enumerate(outputs):
        # Plain instance attribute: nn.Module.__call__ looks up self.forward on the instance.
        object.__setattr__(output, "forward", _AdaptedOutputForward(madx, index, output))
    if madx.language is None or madx.language.invertible is None:
        return
    base = getattr(model, "base_model", model)
    base.embeddings.register_forward_hook(madx.after_embeddings)
    get_decoder = getattr(model, "get_output_embeddings", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is not None:
        decoder.register_forward_pre_hook(madx.before_decoder)


def set_active(madx: MadX, language: bool = True, task: bool = True) -> None:
    """Switch adapters in or out of the computation without touching their weights.

    Asking for an adapter the model does not have is a no-op for that adapter.
    """
    madx.language_active = bool(language)
    madx.task_active = bool(task)


def freeze_all_except(model: nn.Module, trainable_prefixes: Sequence[str]) -> list[str]:
    """Train only parameters whose name starts with one of ``trainable_prefixes``.

    Returns the trainable names, so a caller can check that it trains what it meant to
    (e.g. ``["madx."]`` for the adapters alone, or ``["madx.task.", "classifier."]``).
    """
    prefixes = tuple(trainable_prefixes)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
        if param.requires_grad:
            trainable.append(name)
    return trainable
