"""Length-grouped batches (pipeline/core/sampling.py): off by default, the budget's meaning kept."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from pipeline.core.budget import PhaseBudget
from pipeline.core.config import ConfigError, RunSpec, parse_params
from pipeline.core.sampling import sampler_arguments
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.core.training import run_trainer

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def test_off_by_default_and_named_when_on() -> None:
    assert sampler_arguments(RunSpec(8, 1e-3, 0)) == {}
    assert sampler_arguments(object()) == {}  # settings that know nothing of it
    assert sampler_arguments(RunSpec(8, 1e-3, 0, group_by_length=True)) == {
        "train_sampling_strategy": "group_by_length"}


def test_params_sections_carry_it_to_every_run() -> None:
    tree = yaml.safe_load((PRESETS / "smoke.yaml").read_text())
    params = parse_params(tree)
    assert params.task_sft.lottery(10, 0).group_by_length is False
    assert params.full_ft.run(0).group_by_length is False
    tree["task_sft"]["group_by_length"] = True
    tree["full_ft"]["group_by_length"] = True
    params = parse_params(tree)
    assert params.task_sft.lottery(10, 0).group_by_length is True
    assert params.full_ft.run(0).group_by_length is True
    tree["lang_sft"]["group_by_length"] = "yes"
    with pytest.raises(ConfigError, match="lang_sft.group_by_length"):
        parse_params(tree)


class _Tagger(torch.nn.Module):
    """Enough of a model for the Trainer: an embedding and a per-token loss."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(500, 4)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask, labels):
        logits = self.out(self.embed(input_ids))
        return {"loss": torch.nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1),
                                                          ignore_index=-100)}


def _features(count: int = 40) -> list[dict[str, Any]]:
    rng = random.Random(0)
    out = []
    for i in range(count):
        n = rng.randint(2, 30)
        out.append({"input_ids": [i] + [450] * (n - 1), "attention_mask": [1] * n, "labels": [1] * n})
    return out


def _train(group_by_length: bool, seed: int = 3) -> list[list[int]]:
    """The example ids of each batch one run_trainer phase trained on (two epochs)."""
    from transformers import DataCollatorForTokenClassification

    from benchmarks.throughput import synthetic_tokenizer

    seen: list[list[int]] = []
    pad = DataCollatorForTokenClassification(synthetic_tokenizer(500))

    def collator(features):
        seen.append([f["input_ids"][0] for f in features])
        return pad(features)

    model = _Tagger()
    settings = RunSpec(batch_size=4, learning_rate=1e-3, seed=seed, progress=False, group_by_length=group_by_length)
    run_trainer(model, SparseAdamW(model.parameters()), _features(), collator, PhaseBudget(epochs=2), settings,
                "sampling-test")
    return seen


def test_grouping_keeps_steps_and_examples_and_is_deterministic() -> None:
    lengths = {f["input_ids"][0]: len(f["input_ids"]) for f in _features()}
    plain, grouped = _train(False), _train(True)
    assert len(grouped) == len(plain) == 20  # 40 examples, batch 4, two epochs: 20 optimizer steps
    assert all(len(batch) == 4 for batch in grouped)
    for epoch in (grouped[:10], grouped[10:]):  # every example exactly once per epoch
        assert sorted(i for batch in epoch for i in batch) == list(range(40))
    assert grouped == _train(True)  # same seed, same batches
    assert grouped != _train(True, seed=4)

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.75 * padded(plain)  # 40 examples: mega-batches of only 2 batches
