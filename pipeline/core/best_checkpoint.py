"""Evaluate on the dev set during a phase and end the phase on its best state.

The reference runs every phase with ``--evaluation_strategy steps --load_best_model_at_end``:
it scores the source language's dev set every N steps (tasks: accuracy / LAS / F1; language
SFTs: the masked-LM loss on held-out text) and ends the phase on the best checkpoint. So
phase 1's BEST state is what LT-SFT's selection measures, and phase 2's best is the diff.

We do the same through a public extension point, a ``TrainerCallback``, with our own task
metrics (the same code as every other dev score: MST/greedy parsing, seqeval spans), and
keep the best state in memory instead of writing whole checkpoints to disk: only the
trainable tensors are copied, which for phase 2 of LT-SFT still keeps every unselected
entry at θ0. Evaluation runs with the global RNG saved and restored, so scoring every N
steps without ``select_best`` leaves training bit-identical to not scoring at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback

from pipeline.core.parameters import restore


@dataclass(frozen=True)
class DevCheck:
    """How to score a model on the dev set: ``score(model)`` returns metrics containing
    ``metric``; ``higher_is_better`` says which way is better (a loss: False)."""

    score: Callable[[PreTrainedModel], dict[str, float]]
    metric: str
    higher_is_better: bool = True


class BestOnDev(TrainerCallback):
    """Scores the model every ``every`` optimizer steps and at the phase's last step; with
    ``select_best``, puts the best-scoring state back when training ends (the first of equal
    scores wins: the earlier, less trained state, as the Trainer's own selection does)."""

    def __init__(self, model: PreTrainedModel, check: DevCheck, every: int, select_best: bool, description: str):
        self.model, self.check, self.every, self.select_best = model, check, every, select_best
        self.description = description
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._evaluate(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.select_best and self.best_state is not None and self.best_step != state.global_step:
            restore(self.model, self.best_state)

    def _evaluate(self, step: int) -> None:
        if self.history and self.history[-1]["step"] == step:
            return  # the last step was also a multiple of `every`
        was_training = self.model.training
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        self.model.eval()  # no dropout (task scorers do this too; a custom one may not)
        with torch.random.fork_rng(devices=devices):
            value = float(self.check.score(self.model)[self.check.metric])
        self.model.train(was_training)
        self.history.append({"step": step, f"eval_{self.check.metric}": value, "phase": self.description})
        if self._better(value):
            self.best_value, self.best_step = value, step
            if self.select_best:
                self.best_state = {name: param.detach().to("cpu", copy=True)
                                   for name, param in self.model.named_parameters() if param.requires_grad}

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.check.higher_is_better else value < self.best_value

    def summary(self) -> dict[str, Any]:
        """What the phase's log records about the selection."""
        return {"phase": self.description, "eval_metric": self.check.metric, "best_step": self.best_step,
                f"best_eval_{self.check.metric}": self.best_value, "select_best": self.select_best}

    # A resumable checkpoint (pipeline/core/resume.py) carries the selection so far: the best
    # score and step, the scores' history and, with select_best, the best state's tensors.
    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {name: value.contiguous() for name, value in (self.best_state or {}).items()}
        return tensors, {"best_value": self.best_value, "best_step": self.best_step, "history": self.history,
                         "has_state": self.best_state is not None}

    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.best_value, self.best_step = meta["best_value"], meta["best_step"]
        self.history = [dict(entry) for entry in meta["history"]]
        self.best_state = dict(tensors) if meta["has_state"] else None
