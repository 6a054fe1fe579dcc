"""LT-SFT training (pipeline/methods/lt_sft/lottery.py) on a tiny BertForTokenClassification."""

from __future__ import annotations

import copy

import pytest
import torch

import pipeline.methods.lt_sft.lottery as lottery
import pipeline.core.training as training
from pipeline.methods.lt_sft.lottery import LotteryConfig, PhaseBudget, run_trainer, train_lt_sft
from pipeline.methods.lt_sft.selection import magnitude_scorer, select_top_k
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.core.parameters import layer_norm_parameter_names, maskable_parameter_names, snapshot
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.tasks.pos import PosTagging

K = 500
HEAD = {"classifier.weight", "classifier.bias"}


def make_config(**overrides) -> LotteryConfig:
    settings = dict(
        k=K, phase1=PhaseBudget(steps=3), phase2=PhaseBudget(steps=3), learning_rate=1e-2, batch_size=4,
        weight_decay=0.1, l1_lambda=0.1, max_grad_norm=1.0, seed=7, progress=False,
    )
    settings.update(overrides)
    return LotteryConfig(**settings)


@pytest.fixture(scope="module")
def features(tiny_config) -> list[dict]:
    """Random token/label data of varying lengths (the collator pads)."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(16):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        ids = torch.randint(5, tiny_config.vocab_size, (length,), generator=generator).tolist()
        labels = torch.randint(0, tiny_config.num_labels, (length,), generator=generator).tolist()
        labels[0] = labels[-1] = -100  # [CLS] / [SEP]-like positions carry no label
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return out


@pytest.fixture(scope="module")
def collator(tiny_tokenizer):
    return PosTagging().collator(tiny_tokenizer)


@pytest.fixture(scope="module")
def tagger0(tiny_config):
    """θ0 (with a seeded head): every run starts from a deep copy of it."""
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    return BertForTokenClassification(tiny_config)


def run(tagger0, features, collator, **overrides):
    model = copy.deepcopy(tagger0)
    result = train_lt_sft(model, features, collator, make_config(**overrides))
    return model, result


@pytest.fixture(scope="module")
def magnitude_run(tagger0, features, collator):
    return run(tagger0, features, collator)


def changed_entries(model, theta0: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    out = {}
    for name, before in theta0.items():
        changed = torch.nonzero(params[name].detach().reshape(-1) != before.reshape(-1), as_tuple=True)[0]
        if changed.numel():
            out[name] = changed
    return out


def assert_diffs_identical(a: SparseDiff, b: SparseDiff) -> None:
    assert a.shapes == b.shapes and a.k == b.k
    assert sorted(a.indices) == sorted(b.indices) and sorted(a.dense) == sorted(b.dense)
    for name in a.indices:
        assert torch.equal(a.indices[name], b.indices[name]), name
        assert torch.equal(a.values[name].view(torch.int32), b.values[name].view(torch.int32)), name
    for name in a.dense:
        assert torch.equal(a.dense[name].view(torch.int32), b.dense[name].view(torch.int32)), name


# --------------------------------------------------------------------------- the main run
def test_diff_has_at_most_k_entries(magnitude_run):
    model, result = magnitude_run
    assert 0 < result.diff.nnz <= K
    assert result.diff.k == K
    assert set(result.diff.shapes) == set(maskable_parameter_names(model))
    phases = {entry["phase"] for entry in result.log}
    assert phases == {"iter1-phase1", "iter1-phase2"}


def test_unselected_entries_are_bit_exactly_theta0(tagger0, magnitude_run):
    model, result = magnitude_run
    maskable = maskable_parameter_names(tagger0)
    theta0 = snapshot(tagger0, maskable)
    # Phase 1 (weight decay 0.1, dense) moved (nearly) everything: masking is what keeps θ0.
    assert result.phase1_diff is not None and result.phase1_diff.nnz > 10 * K
    # Recompute the selection: the K entries that moved most in phase 1.
    phase1_delta = {n: torch.zeros(theta0[n].numel()) for n in maskable}
    for name, idx in result.phase1_diff.indices.items():
        phase1_delta[name][idx] = result.phase1_diff.values[name]
    zeros = {n: torch.zeros_like(t) for n, t in phase1_delta.items()}
    selected = select_top_k(magnitude_scorer(zeros, phase1_delta), {n: t.numel() for n, t in zeros.items()}, K)
    changed = changed_entries(model, theta0)
    assert sum(int(i.numel()) for i in changed.values()) <= K
    for name, idx in changed.items():
        assert name in selected and bool(torch.isin(idx, selected[name]).all()), name
    # Checked directly too: everything outside the selection equals θ0 bit for bit.
    params = dict(model.named_parameters())
    for name in maskable:
        outside = torch.ones(theta0[name].numel(), dtype=torch.bool)
        if name in selected:
            outside[selected[name]] = False
        assert torch.equal(params[name].detach().reshape(-1)[outside], theta0[name].reshape(-1)[outside]), name


def test_layer_norms_frozen_and_unchanged(tagger0, magnitude_run):
    model, _ = magnitude_run
    names = layer_norm_parameter_names(model)
    assert names
    before, after = snapshot(tagger0, names), dict(model.named_parameters())
    for name in names:
        assert not after[name].requires_grad
        assert torch.equal(after[name].detach(), before[name]), name


def test_head_is_stored_dense(tagger0, magnitude_run):
    model, result = magnitude_run
    assert set(result.diff.dense) == HEAD
    params, initial = dict(model.named_parameters()), dict(tagger0.named_parameters())
    for name in HEAD:
        assert torch.equal(result.diff.dense[name], params[name].detach())
        assert not torch.equal(result.diff.dense[name], initial[name].detach())  # it was trained


def test_model_equals_theta0_plus_diff(tagger0, magnitude_run, tmp_path):
    model, result = magnitude_run
    for diff in (result.diff, SparseDiff.load(result.diff.save(tmp_path / "diff"))):
        fresh = copy.deepcopy(tagger0)
        diff.apply(fresh, with_dense=True)
        trained = dict(model.named_parameters())
        for name, p in fresh.named_parameters():
            torch.testing.assert_close(p.detach(), trained[name].detach(), rtol=0, atol=1e-6, msg=name)
        for name in HEAD:
            assert torch.equal(dict(fresh.named_parameters())[name].detach(), trained[name].detach())


# --------------------------------------------------------------------------- variants
def test_random_selection_at_most_k(tagger0, features, collator):
    model, result = run(tagger0, features, collator, selection="random", phase1=PhaseBudget(steps=1),
                        phase2=PhaseBudget(steps=1))
    assert 0 < result.diff.nnz <= K
    theta0 = snapshot(tagger0, maskable_parameter_names(tagger0))
    assert sum(int(i.numel()) for i in changed_entries(model, theta0).values()) <= K


def test_two_iterations_at_most_k(tagger0, features, collator):
    model, result = run(tagger0, features, collator, n_iterations=2, phase1=PhaseBudget(steps=1),
                        phase2=PhaseBudget(steps=1))
    assert 0 < result.diff.nnz <= K
    theta0 = snapshot(tagger0, maskable_parameter_names(tagger0))
    assert sum(int(i.numel()) for i in changed_entries(model, theta0).values()) <= K
    assert {entry["phase"] for entry in result.log} == {
        "iter1-phase1", "iter1-phase2", "iter2-phase1", "iter2-phase2"}


def test_same_seed_gives_bit_identical_diffs(tagger0, features, collator, magnitude_run):
    _, first = magnitude_run
    _, second = run(tagger0, features, collator)
    assert_diffs_identical(first.diff, second.diff)


@pytest.mark.parametrize("k", [0, -5])
def test_k_not_positive_raises(tagger0, features, collator, k):
    with pytest.raises(ValueError, match="K must be"):
        run(tagger0, features, collator, k=k)


def test_k_above_maskable_raises(tagger0, features, collator):
    total = sum(p.numel() for n, p in tagger0.named_parameters() if n in set(maskable_parameter_names(tagger0)))
    with pytest.raises(ValueError, match="K must be"):
        run(tagger0, features, collator, k=total + 1)


def test_bad_iteration_count_raises(tagger0, features, collator):
    with pytest.raises(ValueError, match="n_iterations"):
        run(tagger0, features, collator, n_iterations=0)


# --------------------------------------------------------------------------- budgets, Trainer
@pytest.mark.parametrize(
    "kwargs", [{}, {"steps": 3, "epochs": 1.0}, {"steps": 0}, {"steps": -1}, {"epochs": 0.0}, {"epochs": -2.0}]
)
def test_phase_budget_validation(kwargs):
    with pytest.raises(ValueError, match="phase budget"):
        PhaseBudget(**kwargs)


def test_phase_budget_valid():
    assert PhaseBudget(steps=1).steps == 1 and PhaseBudget(steps=1).epochs is None
    assert PhaseBudget(epochs=0.5).epochs == 0.5 and PhaseBudget(epochs=0.5).steps is None


def test_epoch_budgets_resolve_to_clamped_steps():
    assert PhaseBudget(epochs=3).resolve(examples=100, batch_size=8) == 39  # 13 batches per epoch
    assert PhaseBudget(epochs=0.5).resolve(examples=100, batch_size=8) == 7
    clamped = PhaseBudget(epochs=100, min_steps=10_000, max_steps=100_000)  # the reference's language SFTs
    assert clamped.resolve(examples=80, batch_size=8) == 10_000
    assert clamped.resolve(examples=80_000, batch_size=8) == 100_000
    assert clamped.resolve(examples=4_000, batch_size=8) == 50_000
    assert PhaseBudget(steps=5).resolve(examples=10**6, batch_size=1) == 5
    with pytest.raises(ValueError):
        PhaseBudget(steps=5, max_steps=3)
    with pytest.raises(ValueError):
        PhaseBudget(epochs=1, min_steps=10, max_steps=3)


@pytest.mark.parametrize("budget", [PhaseBudget(steps=7), PhaseBudget(epochs=2.0)])
def test_run_trainer_leaves_clipping_to_our_optimizer(monkeypatch, tagger0, budget):
    captured = {}

    class FakeTrainer:
        def __init__(self, model, args, train_dataset, data_collator, optimizers, callbacks=()):
            captured.update(model=model, args=args, optimizers=optimizers, data=train_dataset)
            self.state = type("State", (), {"log_history": [{"loss": 1.0}]})()

        def train(self):
            captured["trained"] = True

    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    model = copy.deepcopy(tagger0)
    optimizer = SparseAdamW(model.parameters(), lr=1e-3, max_grad_norm=1.0)
    config = make_config(max_grad_norm=1.0, learning_rate=3e-4, batch_size=2)
    log = run_trainer(model, optimizer, [{"input_ids": [1]}], lambda x: x, budget, config, "iter1-phase1")
    args = captured["args"]
    assert args.max_grad_norm == 0.0  # the Trainer must not clip: SparseAdamW does
    assert captured["optimizers"][0] is optimizer and captured["optimizers"][1] is None
    assert captured["trained"] and captured["model"] is model
    assert args.learning_rate == 3e-4 and args.per_device_train_batch_size == 2 and args.seed == config.seed
    if budget.steps is not None:
        assert args.max_steps == 7
    else:
        assert args.max_steps == 2  # epochs become steps: one batch per epoch, two epochs
    assert log == [{"loss": 1.0, "phase": "iter1-phase1"}]


def test_train_lt_sft_with_epoch_budget_hands_clipping_to_sparse_adamw(monkeypatch, tagger0, features, collator):
    """Every phase's optimizer is a SparseAdamW that clips (the Trainer does not); epochs work."""
    seen = []
    real_run_trainer = lottery.run_trainer

    def spy(model, optimizer, train_features, collate, budget, config, description, dev=None):
        seen.append((type(optimizer), optimizer.max_grad_norm, budget, description))
        return real_run_trainer(model, optimizer, train_features, collate, budget, config, description, dev)

    monkeypatch.setattr(lottery, "run_trainer", spy)
    budget = PhaseBudget(epochs=0.25)  # 16 examples, batches of 4: one step
    _, result = run(tagger0, features, collator, k=50, phase1=budget, phase2=budget, max_grad_norm=0.5)
    assert 0 < result.diff.nnz <= 50
    assert seen == [(SparseAdamW, 0.5, budget, "iter1-phase1"), (SparseAdamW, 0.5, budget, "iter1-phase2")]
    assert {entry["phase"] for entry in result.log} == {"iter1-phase1", "iter1-phase2"}


def test_given_phase1_state_reproduces_the_full_run(tagger0, features, collator):
    """The sparsity sweep reuses the main run's phase 1: selecting from the saved phase-1
    state and training phase 2 must give exactly the diff of a run that trains phase 1."""
    config = make_config(weight_decay=0.0)
    full_model = copy.deepcopy(tagger0)
    full = train_lt_sft(full_model, features, collator, config)
    phase1_model = copy.deepcopy(tagger0)
    full.phase1_diff.apply(phase1_model, with_dense=True)
    phase1 = snapshot(phase1_model)
    reused = train_lt_sft(copy.deepcopy(tagger0), features, collator, config, phase1_state=phase1)
    assert reused.phase1_diff is None
    assert set(reused.diff.indices) == set(full.diff.indices)
    for name in full.diff.indices:
        assert torch.equal(reused.diff.indices[name], full.diff.indices[name]), name
        assert torch.allclose(reused.diff.values[name], full.diff.values[name], atol=1e-6), name
