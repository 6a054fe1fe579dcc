"""Which examples share a batch: the training sampler, chosen through TrainingArguments.

With ``group_by_length`` a phase draws its batches from transformers' own
``LengthGroupedSampler`` (``train_sampling_strategy="group_by_length"``): the examples are
shuffled, cut into mega-batches of up to 50 batches, and sorted by length inside each, so a
batch holds examples of similar length and pads little. The budget keeps its meaning: an
epoch is still every example once, in batches of ``batch_size``, so the same number of
optimizer steps and examples per step. The order comes from torch's generator, which the
Trainer seeds from ``seed`` before training: the same seed gives the same batches.
Off (the default), the Trainer's random sampler runs exactly as before.
"""

from __future__ import annotations

from typing import Any


def sampler_arguments(settings: Any) -> dict[str, Any]:
    """TrainingArguments for a run whose settings may ask for length grouping."""
    if getattr(settings, "group_by_length", False):
        return {"train_sampling_strategy": "group_by_length"}
    return {}
