"""Dense training paths: full fine-tuning / head-only as diffs, Rand-SFT skipping phase 1,
and the MLM forward that scores masked positions only."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DataCollatorForLanguageModeling

from pipeline.core.training import train_as_diff as train_dense
from pipeline.methods.lt_sft.lottery import LotteryConfig, PhaseBudget, train_lt_sft
from pipeline.core.parameters import layer_norm_parameter_names, maskable_parameter_names, snapshot
from pipeline.tasks.mlm import score_masked_positions_only
from pipeline.tasks.pos import PosTagging
from pipeline.core.config import RunSpec

HEAD = ["classifier.weight", "classifier.bias"]


@pytest.fixture(scope="module")
def features(tiny_config) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(12):
        length = int(torch.randint(4, 10, (1,), generator=generator))
        ids = torch.randint(5, tiny_config.vocab_size, (length,), generator=generator).tolist()
        labels = torch.randint(0, tiny_config.num_labels, (length,), generator=generator).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return out


@pytest.fixture(scope="module")
def collator(tiny_tokenizer):
    return PosTagging().collator(tiny_tokenizer)


SETTINGS = RunSpec(batch_size=4, learning_rate=1e-2, seed=3, progress=False)


def test_full_fine_tuning_diff_moves_every_body_tensor_but_layer_norms(make_tagger, features, collator):
    model = make_tagger(seed=0)
    theta0 = snapshot(model)
    diff, _ = train_dense(model, features, collator, HEAD, PhaseBudget(steps=3), SETTINGS)
    maskable = maskable_parameter_names(model)
    assert set(diff.dense) == set(HEAD)
    assert diff.nnz > 0.5 * diff.maskable_numel  # dense: most entries moved
    moved = {name for name in maskable if name in diff.indices}
    assert {n for n in maskable if "encoder.layer" in n} <= moved
    after = snapshot(model)
    for name in layer_norm_parameter_names(model):
        assert torch.equal(after[name], theta0[name]), name
    # The diff reproduces the trained model from θ0 exactly.
    fresh = make_tagger(seed=0)
    diff.apply(fresh, with_dense=True)
    for name, value in fresh.named_parameters():
        assert torch.allclose(value, after[name], atol=1e-6), name


def test_head_only_leaves_the_encoder_bit_identical(make_tagger, features, collator):
    model = make_tagger(seed=0)
    theta0 = snapshot(model)
    diff, _ = train_dense(model, features, collator, HEAD, PhaseBudget(steps=3), SETTINGS, body=[])
    assert diff.nnz == 0 and set(diff.dense) == set(HEAD)
    after = snapshot(model)
    assert all(torch.equal(after[n], theta0[n]) for n in theta0 if n not in HEAD)
    assert not torch.equal(after["classifier.weight"], theta0["classifier.weight"])


def test_rand_sft_skips_phase_one(make_tagger, features, collator, monkeypatch):
    import pipeline.methods.lt_sft.lottery as lottery

    phases = []
    real = lottery.run_trainer
    monkeypatch.setattr(lottery, "run_trainer", lambda *a, **k: phases.append(a[6]) or real(*a, **k))
    config = LotteryConfig(k=300, phase1=PhaseBudget(steps=2), phase2=PhaseBudget(steps=2), learning_rate=1e-2,
                           batch_size=4, selection="random", seed=5, progress=False)
    result = train_lt_sft(make_tagger(seed=0), features, collator, config)
    assert phases == ["iter1-phase2"] and result.phase1_diff is None
    assert 0 < result.diff.nnz <= 300


def test_masked_positions_only_gives_the_stock_loss_and_gradients(make_mlm, tiny_tokenizer):
    stock = make_mlm(seed=0).train()
    fast = score_masked_positions_only(copy.deepcopy(stock))
    texts = ["the cat sat on the mat", "a dog ran", "birds sing in the morning light today"]
    encoded = [tiny_tokenizer(t) for t in texts]
    collate = DataCollatorForLanguageModeling(tiny_tokenizer, mlm_probability=0.5, seed=0)
    batch = collate([{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]} for e in encoded])
    torch.manual_seed(0)
    stock_loss = stock(**batch).loss
    torch.manual_seed(0)  # same dropout masks
    out = fast(**batch)
    assert torch.allclose(out.loss, stock_loss, atol=1e-6)
    assert out.logits.shape[0] == int((batch["labels"] != -100).sum())
    stock_loss.backward(), out.loss.backward()
    stock_grads = dict(stock.named_parameters())
    for name, param in fast.named_parameters():
        assert torch.allclose(param.grad, stock_grads[name].grad, atol=1e-5), name
