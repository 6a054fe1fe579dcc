"""Gradient accumulation: batch 8 and 4 × 2 train the same LT-SFT diff; budgets count optimizer steps."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.core import training
from pipeline.core.budget import PhaseBudget
from pipeline.core.config import parse_params
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.methods.lt_sft.lottery import LotteryConfig, train_lt_sft
from pipeline.tasks.pos import PosTagging
from tests.test_config import tree as preset_tree


def test_epoch_budgets_count_optimizer_steps():
    budget = PhaseBudget(epochs=2)
    assert budget.resolve(32, 8) == 8
    assert budget.resolve(32, 4 * 2) == 8  # 4 x 2: the same optimizer steps as batch 8
    assert PhaseBudget(epochs=1, min_steps=5).resolve(32, 8) == 5


def test_accumulation_is_read_from_every_training_section():
    tree = preset_tree("smoke")
    for section in ("lang_sft", "task_sft"):
        tree[section]["gradient_accumulation_steps"] = 2
    tree["full_ft"]["gradient_accumulation_steps"] = 3
    tree["madx"]["language"]["gradient_accumulation_steps"] = 4
    params = parse_params(tree)
    assert params.lang_sft.lottery(10, 1).gradient_accumulation_steps == 2
    assert params.full_ft.run(1).gradient_accumulation_steps == 3
    assert params.madx.language.run(1).gradient_accumulation_steps == 4
    assert parse_params(preset_tree("smoke")).task_sft.lottery(10, 1).gradient_accumulation_steps == 1
    paper = parse_params(preset_tree("paper"))
    assert (paper.lang_sft.batch_size, paper.lang_sft.gradient_accumulation_steps) == (4, 2)  # the reference's
    tree["task_sft"]["gradient_accumulation_steps"] = 0
    with pytest.raises(Exception, match=r"^task_sft\.gradient_accumulation_steps: must be an integer >= 1"):
        parse_params(tree)


@pytest.fixture(scope="module")
def setup(tiny_config, tiny_tokenizer):
    from transformers import BertConfig, BertForTokenClassification

    # No dropout: 8 and 4 x 2 draw their dropout masks in different shapes (padding differs).
    config = BertConfig(**{**tiny_config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    torch.manual_seed(0)
    model0 = BertForTokenClassification(config)
    generator = torch.Generator().manual_seed(0)
    features = []
    for _ in range(24):  # 3 optimizer steps an epoch
        length = int(torch.randint(4, 14, (1,), generator=generator))
        ids = torch.randint(5, config.vocab_size, (length,), generator=generator).tolist()
        labels = torch.randint(0, 5, (length,), generator=generator).tolist()
        labels[0] = labels[-1] = -100
        features.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return model0, features, PosTagging().collator(tiny_tokenizer)


def _run(setup, batch_size: int, accumulation: int, monkeypatch=None):
    model0, features, collate = setup
    steps = []
    real_step = SparseAdamW.step

    def counting_step(self, closure=None):
        steps.append(1)
        return real_step(self, closure)

    SparseAdamW.step = counting_step
    try:
        config = LotteryConfig(k=500, phase1=PhaseBudget(epochs=2), phase2=PhaseBudget(epochs=2), learning_rate=1e-2,
                               batch_size=batch_size, gradient_accumulation_steps=accumulation, l1_lambda=0.1,
                               max_grad_norm=1.0, seed=11, progress=False)
        result = train_lt_sft(copy.deepcopy(model0), features, collate, config)
    finally:
        SparseAdamW.step = real_step
    return result.diff, len(steps)


def test_batch_8_and_4_by_2_train_the_same_diff(setup, monkeypatch):
    big, big_steps = _run(setup, 8, 1)
    small, small_steps = _run(setup, 4, 2)
    assert big_steps == small_steps == 2 * 6  # two phases of 2 epochs x 3 optimizer steps; one SparseAdamW step each
    # The same examples in every optimizer step (the sampler's permutation is the data seed's, cut
    # into 8 or into 4 + 4): the same selection, the same values up to float summation order.
    assert big.indices.keys() == small.indices.keys()
    for name in big.indices:
        assert torch.equal(big.indices[name], small.indices[name]), name
        torch.testing.assert_close(big.values[name], small.values[name], rtol=1e-5, atol=1e-6)
    for name in big.dense:
        torch.testing.assert_close(big.dense[name], small.dense[name], rtol=1e-5, atol=1e-6)

    # Without the item-mean loss (pipeline/core/loss_scaling.py) the Trainer would sum two
    # micro-batch means: a different step, and a visibly different diff.
    monkeypatch.setattr(training, "global_item_mean", lambda *args, **kwargs: _null())
    unscaled, _ = _run(setup, 4, 2)
    assert any(not torch.allclose(big.dense[n], unscaled.dense[n], rtol=1e-3, atol=1e-4) for n in big.dense)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
