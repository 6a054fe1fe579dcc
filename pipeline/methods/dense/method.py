"""The registered dense methods.

- `full-ft`: every maskable parameter and the head, from θ0; no language component.
- `dense-composed`: the same over the source language's DENSE language diff (LT-SFT's
  phase 1), on LT-SFT's task phase-1 budget; composed with the target's dense language
  diff at test time: what LT-SFT would be without sparsity (the interference ablation).
- `head-only`: only the head, on the frozen θ0: the floor every method must beat.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.config import DenseSpec
from pipeline.methods import register
from pipeline.core.method import Variant
from pipeline.methods.subset import SubsetDiffMethod


@register
class FullFineTuning(SubsetDiffMethod):
    name = "full-ft"
    family = "dense"
    summary = "full fine-tuning of θ0 on the source language (no language component)"
    sections = ("full_ft",)
    config_sections = {"full_ft": (DenseSpec, "Full fine-tuning: every weight but LayerNorms, and the head, dense, from θ0.")}
    variants = (Variant("full-ft", False),)


@register
class DenseComposed(SubsetDiffMethod):
    name = "dense-composed"
    family = "dense"
    summary = "dense language and task diffs composed (LT-SFT without sparsity: the interference ablation)"
    sections = ("task_sft",)
    language_sections = ("lang_sft",)
    interference = "dense"
    language_from = "lt-sft"  # LT-SFT's language stage keeps its dense phase 1 for this method
    variants = (Variant("dense-composed-task-only", False), Variant("dense-composed", True))

    def spec(self, params: Any) -> Any:
        from pipeline.core.config import DenseSpec

        sft = params.task_sft  # the same budget and settings as LT-SFT's dense phase 1
        return DenseSpec(phase=sft.phase1, batch_size=sft.batch_size, learning_rate=sft.learning_rate,
                         max_grad_norm=sft.max_grad_norm, max_length=sft.max_length,
                         head_learning_rate=sft.head_learning_rate,
                         gradient_accumulation_steps=sft.gradient_accumulation_steps)


@register
class HeadOnly(SubsetDiffMethod):
    name = "head-only"
    family = "dense"
    summary = "only the task head, on the frozen θ0 (the floor)"
    sections = ("head_only",)
    config_sections = {"head_only": (DenseSpec, "The floor: a task head trained on the frozen pretrained encoder.")}
    trains_body = False
    variants = (Variant("head-only", False),)
