"""Running one training phase in transformers' Trainer: the mechanism every method shares.

LT-SFT's two phases, the head-only baseline and (later) full fine-tuning and adapters all
train through ``run_trainer``: a plain Trainer whose only customisation is the optimizer
passed in ``optimizers=``, so ``accelerate launch`` / ``torchrun`` work unchanged.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, Trainer, TrainingArguments

from pipeline.core import curves
from pipeline.core.best_checkpoint import BestOnDev, DevCheck
from pipeline.core import distributed
from pipeline.core.loss_scaling import global_item_mean
from pipeline.core.sampling import sampler_arguments
from pipeline.core.errors import LtsftError
from pipeline.core.runtime import current as current_runtime
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.core.parameters import maskable_parameter_names, snapshot

from pipeline.core.budget import PhaseBudget  # noqa: F401  (re-exported: it lives in a torch-free module)


class RunSettings(Protocol):
    """What a training run needs besides its budget (LotteryConfig is one)."""

    batch_size: int  # per micro-batch
    learning_rate: float
    seed: int
    progress: bool
    gradient_accumulation_steps: int  # micro-batches per optimizer step (read with a default of 1)


def run_trainer(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    train_features: Sequence[dict],
    collator: Callable,
    budget: PhaseBudget,
    config: RunSettings,
    description: str,
    dev: DevCheck | None = None,
) -> list[dict[str, Any]]:
    """One training phase in a plain Trainer; returns its log history.

    With ``budget.eval_every``, ``dev`` scores the model every that many steps (the scores
    join the history); with ``budget.select_best`` the phase ends on the best of them."""
    callbacks = []
    if budget.eval_every:
        if dev is None:
            raise LtsftError(f"{description}: eval_every is set but this run has no dev set to score")
        callbacks.append(BestOnDev(model, dev, budget.eval_every, budget.select_best, description))
    accumulation = getattr(config, "gradient_accumulation_steps", 1)
    # Budgets count optimizer steps; an epoch is examples / (batch_size x accumulation) of them.
    steps = budget.resolve(len(train_features), config.batch_size * accumulation)
    runtime = current_runtime()  # precision and checkpoints (pipeline/core/runtime.py)
    phase = runtime.phase(description, model, optimizer, callbacks)
    if phase.finished is not None:  # a resumed run: this phase finished before it was killed
        return phase.finished
    with tempfile.TemporaryDirectory(prefix="ltsft-trainer-") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir,
            run_name=description,
            # The global batch, split over data-parallel processes; precision's flags merged in
            # (both may ask for use_cpu: bf16 autocast and gloo DDP on a CPU).
            **(distributed.trainer_arguments(config.batch_size, description) | runtime.trainer_arguments()),
            gradient_accumulation_steps=accumulation,
            learning_rate=config.learning_rate,
            # Epoch budgets are turned into steps here so that min/max clamps apply.
            max_steps=steps,
            lr_scheduler_type="linear",
            max_grad_norm=0.0,  # our optimizers clip (SparseAdamW: over the trainable entries only)
            seed=config.seed,
            data_seed=config.seed,
            save_strategy="no",
            report_to="none",
            logging_strategy="steps",
            logging_steps=curves.logging_steps(steps),
            disable_tqdm=not config.progress,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            remove_unused_columns=False,
            **sampler_arguments(config),  # group_by_length: batches of similar length
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=list(train_features), data_collator=phase.collator(collator),
            optimizers=(optimizer, None),
            callbacks=[*callbacks, curves.grad_norm_callback(optimizer), *phase.callbacks()],
        )
        with global_item_mean(model, distributed.world_size(), accumulation):
            phase.train(trainer)
        history = [dict(entry, phase=description) for entry in trainer.state.log_history]
        for best in callbacks:
            history += [*best.history, best.summary()]
        return phase.finish(history)


def train_parameters(
    model: PreTrainedModel,
    names: Sequence[str],
    train_features: Sequence[dict],
    collator: Callable,
    budget: PhaseBudget,
    config: RunSettings,
    description: str,
    max_grad_norm: float = 1.0,
    weight_decay: float = 0.0,
    head: Sequence[str] = (),
    head_learning_rate: float | None = None,
    dev: DevCheck | None = None,
) -> list[dict[str, Any]]:
    """Train exactly the named parameters, densely; every other parameter is frozen.

    The mechanism of every dense method: full fine-tuning, a head on a frozen encoder,
    adapters on a frozen model. Clipping covers exactly the trained parameters. The
    ``head`` among ``names`` may get its own ``head_learning_rate``.
    """
    from pipeline.core.sparse_adamw import SparseAdamW  # sparse_adamw is independent of training

    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"model has no parameter {missing[0]!r} to train")
    chosen = set(names)
    for name, param in params.items():
        param.requires_grad_(name in chosen)
    optimizer = SparseAdamW(param_groups(params, names, head, config.learning_rate, head_learning_rate),
                            lr=config.learning_rate, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    return run_trainer(model, optimizer, train_features, collator, budget, config, description, dev)


def param_groups(
    params: dict[str, torch.nn.Parameter], names: Sequence[str], head: Sequence[str],
    learning_rate: float, head_learning_rate: float | None,
) -> list[dict[str, Any]]:
    """Optimizer groups: ``names`` at ``learning_rate``, the ``head`` among them at
    ``head_learning_rate`` (a randomly initialised head learns far faster than a pretrained
    body can move; short budgets need it). One group when no head rate is given."""
    head_set = set(head) if head_learning_rate is not None else set()
    body = [params[n] for n in names if n not in head_set]
    groups = [{"params": body, "lr": learning_rate}] if body else []
    chosen_head = [params[n] for n in names if n in head_set]
    if chosen_head:
        groups.append({"params": chosen_head, "lr": head_learning_rate})
    return groups


def train_as_diff(
    model: PreTrainedModel,
    train_features: Sequence[dict],
    collator: Callable,
    head: Sequence[str],
    budget: PhaseBudget,
    settings: RunSettings,
    body: Sequence[str] | None = None,
    max_grad_norm: float = 1.0,
    description: str = "dense",
    diff_meta: dict[str, Any] | None = None,
    head_learning_rate: float | None = None,
    dev: DevCheck | None = None,
) -> tuple[SparseDiff, list[dict[str, Any]]]:
    """Train ``body`` (maskable parameters; None: all of them, [] for none) and ``head``
    densely from the model's current state θ_start; return φ = θ − θ_start as a diff, and
    the run's log history.

    The mechanism of full fine-tuning, dense-composed, head-only and BitFit: the change is
    stored like an LT-SFT diff (only the entries that moved; the head whole), so evaluation
    composes every method with the same code. LayerNorms stay frozen, as in LT-SFT's own
    phase 1, so these methods differ from LT-SFT only in which entries they train.
    """
    maskable = maskable_parameter_names(model)
    start = snapshot(model, maskable)
    trained = [*(maskable if body is None else body), *head]
    log = train_parameters(model, trained, train_features, collator, budget, settings, description, max_grad_norm,
                           head=head, head_learning_rate=head_learning_rate, dev=dev)
    diff = SparseDiff.from_states(start, snapshot(model, [*maskable, *head]), maskable, head, **(diff_meta or {}))
    return diff, log
