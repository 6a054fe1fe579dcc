"""The registered `bitfit` method: a task component over the encoder's bias terms.

Which biases: every maskable bias of the encoder body (attention query/key/value/output,
the feed-forward layers, the pooler). LayerNorm biases stay frozen, as in every method of
this project, so BitFit differs from the others only in which entries it trains. There is
no language component: it is evaluated like `full-ft` (θ0 + its diff, zero-shot).
"""

from __future__ import annotations

from typing import Any

from pipeline.core.config import DenseSpec
from pipeline.methods import register
from pipeline.core.method import Variant
from pipeline.methods.subset import SubsetDiffMethod


def bias_parameter_names(model: Any) -> list[str]:
    """The maskable parameters that are bias vectors."""
    from pipeline.core.parameters import maskable_parameter_names

    return [name for name in maskable_parameter_names(model) if name.rsplit(".", 1)[-1] == "bias"]


@register
class BitFit(SubsetDiffMethod):
    name = "bitfit"
    family = "bitfit"
    summary = "BitFit: only the encoder's bias terms and the head (no language component)"
    sections = ("bitfit",)
    config_sections = {"bitfit": (DenseSpec, "BitFit: only the encoder's bias terms and the head are trained.")}
    variants = (Variant("bitfit", False),)

    def body(self, model: Any) -> list[str]:
        return bias_parameter_names(model)

    def sparse_k(self, model: Any, body: list[str]) -> int:
        from pipeline.core.parameters import count_parameters_named

        return count_parameters_named(model, body)
