"""Dev evaluation during a phase and best-state selection (pipeline/core/best_checkpoint.py),
through the real Trainer path (run_trainer, train_lt_sft) on a tiny tagger."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.core.best_checkpoint import DevCheck
from pipeline.core.config import ConfigError, _budget
from pipeline.core.errors import LtsftError
from pipeline.core.parameters import maskable_parameter_names, snapshot
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.methods.lt_sft.lottery import (
    LotteryConfig,
    PhaseBudget,
    run_trainer,
    train_lt_sft,
)
from pipeline.tasks.pos import PosTagging

STEPS = 6


class ScriptedDev:
    """A dev 'metric' that follows a script (one value per evaluation) and records the model's
    state at each evaluation, so a test knows which state the selection must end on."""

    def __init__(self, values: list[float]):
        self.values, self.states, self.calls = list(values), [], 0

    def __call__(self, model) -> dict[str, float]:
        assert not model.training  # scored without dropout
        self.states.append(snapshot(model))
        value = self.values[self.calls]
        self.calls += 1
        # Consume the global RNG as real evaluation does (DataLoader seeds): must not leak.
        torch.rand(3)
        return {"accuracy": value}


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


def config(**overrides) -> LotteryConfig:
    settings = {"k": 400, "phase1": PhaseBudget(steps=STEPS), "phase2": PhaseBudget(steps=STEPS), "learning_rate": 1e-2,
                "batch_size": 4, "seed": 3, "progress": False}
    return LotteryConfig(**(settings | overrides))


def train_dense(model, features, collator, budget, dev=None):
    optimizer = SparseAdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, max_grad_norm=1.0)
    return run_trainer(model, optimizer, features, collator, budget, config(), "phase", dev)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_scoring_without_selection_leaves_training_bit_identical(make_tagger, features, collator):
    plain = make_tagger(seed=0)
    train_dense(plain, features, collator, PhaseBudget(steps=STEPS))
    scored = make_tagger(seed=0)
    dev = ScriptedDev([0.5] * 10)
    log = train_dense(scored, features, collator, PhaseBudget(steps=STEPS, eval_every=2),
                      DevCheck(dev, "accuracy"))
    assert dev.calls == 3  # steps 2, 4, 6 (the last step is a multiple: scored once)
    assert same(snapshot(plain), snapshot(scored))
    assert [entry["step"] for entry in log if "eval_accuracy" in entry] == [2, 4, 6]
    assert log[-1]["best_step"] == 2 and log[-1]["select_best"] is False  # ties keep the earliest


@pytest.mark.parametrize("higher, values, best", [
    (True, [0.2, 0.9, 0.4], 1),    # accuracy: the step-4 state is best
    (False, [3.0, 2.5, 1.0], 2),   # a loss: the last step's state is best (nothing to restore)
    (False, [3.0, 2.0, 2.0], 1),   # equal scores: the earlier state wins
])
def test_select_best_ends_the_phase_on_the_best_scored_state(make_tagger, features, collator, higher, values, best):
    model = make_tagger(seed=0)
    dev = ScriptedDev(values)
    log = train_dense(model, features, collator, PhaseBudget(steps=5, eval_every=2, select_best=True),
                      DevCheck(dev, "accuracy", higher_is_better=higher))
    steps = [entry["step"] for entry in log if "eval_accuracy" in entry]
    assert steps == [2, 4, 5]  # every 2 steps, and the phase's last step
    assert log[-1]["best_step"] == steps[best]
    assert same(snapshot(model), dev.states[best])
    if best != 2:
        assert not same(snapshot(model), dev.states[2])  # it did go back


def test_lt_sft_selects_from_phase1_best_and_keeps_unselected_entries_at_theta0(make_tagger, features, collator):
    """Phase 1's best state is what selection measures; phase 2's best is the diff; every
    unselected entry is still bit-exactly θ0."""
    model = make_tagger(seed=0)
    theta0 = snapshot(model)
    dev = ScriptedDev([0.9, 0.1, 0.2,    # phase 1 (steps 2, 4, 6): the step-2 state is best
                       0.1, 0.8, 0.3])   # phase 2: the step-4 state is best
    budget = PhaseBudget(steps=STEPS, eval_every=2, select_best=True)
    result = train_lt_sft(model, features, collator, config(phase1=budget, phase2=budget),
                          dev=DevCheck(dev, "accuracy"))
    maskable = maskable_parameter_names(model)
    final = snapshot(model)
    assert same(final, dev.states[4])

    # The dense phase-1 diff is the best phase-1 state's change, not the last one's.
    phase1 = make_tagger(seed=0)
    result.phase1_diff.apply(phase1)
    reached = snapshot(phase1, maskable)
    assert all(torch.allclose(reached[n], dev.states[0][n], atol=1e-6) for n in maskable)
    assert not all(torch.allclose(reached[n], dev.states[2][n], atol=1e-6) for n in maskable)

    for name in maskable:
        unselected = torch.ones(final[name].numel(), dtype=torch.bool)
        unselected[result.diff.indices.get(name, torch.empty(0, dtype=torch.int64))] = False
        assert torch.equal(final[name].flatten()[unselected], theta0[name].flatten()[unselected])
    assert 0 < result.diff.nnz <= 400


def test_eval_every_without_a_dev_set_is_refused_in_one_line(make_tagger, features, collator):
    with pytest.raises(LtsftError, match="phase: eval_every is set but this run has no dev set"):
        train_dense(make_tagger(seed=0), features, collator, PhaseBudget(steps=2, eval_every=1))


def test_budget_keys_in_params():
    budget = _budget({"epochs": 3, "eval_every": 250, "select_best": True}, "task_sft.phase1")
    assert budget == PhaseBudget(epochs=3, eval_every=250, select_best=True)
    assert _budget({"steps": 5}, "x") == PhaseBudget(steps=5)
    with pytest.raises(ConfigError, match=r"^task_sft.phase1.select_best: needs task_sft.phase1.eval_every > 0"):
        _budget({"epochs": 3, "select_best": True}, "task_sft.phase1")
    with pytest.raises(ConfigError, match=r"^p.select_best: must be true or false \(got 'yes'\)"):
        _budget({"steps": 3, "eval_every": 1, "select_best": "yes"}, "p")
    with pytest.raises(ConfigError, match=r"^p.eval_every: must be an integer >= 0"):
        _budget({"steps": 3, "eval_every": -1}, "p")
    with pytest.raises(ConfigError, match=r"^p.evaluate_every: unknown key \(known: epochs, eval_every"):
        _budget({"steps": 3, "evaluate_every": 1}, "p")
    with pytest.raises(ValueError, match="select_best needs eval_every"):
        PhaseBudget(steps=1, select_best=True)
    assert copy.copy(budget).select_best
