"""LT-SFT: Lottery-Ticket Sparse Fine-Tuning (Ansell et al., 2022).

Per iteration (``n_iterations``, default 1, each adding K/n new entries):
1. phase 1: fine-tune every maskable parameter (and the head) densely;
2. select the entries that moved most, ONE global threshold over all maskable tensors
   (``selection="random"`` picks a random set of the same size instead: Rand-SFT);
3. reset every parameter, head included, to its value at the start of the iteration;
4. phase 2: fine-tune only the selected entries (and the head densely).
The result is a SparseDiff against θ0 with at most K entries, plus the head whole.

Training runs in transformers' Trainer, extended only through public means: our own
optimizer (``SparseAdamW``, which does the masking, clipping and the L1 term) passed in
``optimizers=``, so ``accelerate launch`` / ``torchrun`` work as for any Trainer run.
LayerNorm parameters are frozen throughout, as in every reference run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from pipeline.methods.lt_sft.selection import magnitude_scorer, merge_indices, random_scorer, select_top_k
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.core.parameters import layer_norm_parameter_names, maskable_parameter_names, restore, snapshot
from pipeline.core.best_checkpoint import DevCheck
from pipeline.core.distributed import shared_from_main
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.core.training import PhaseBudget, param_groups, run_trainer  # noqa: F401  (PhaseBudget re-exported)


@dataclass(frozen=True)
class LotteryConfig:
    k: int
    phase1: PhaseBudget
    phase2: PhaseBudget
    learning_rate: float = 5e-5
    head_learning_rate: float | None = None  # the dense head's own rate (None: learning_rate)
    batch_size: int = 8
    weight_decay: float = 0.0
    l1_lambda: float = 0.0
    max_grad_norm: float = 1.0
    n_iterations: int = 1
    selection: Literal["magnitude", "random"] = "magnitude"
    seed: int = 42
    progress: bool = True
    gradient_accumulation_steps: int = 1  # optimizer step = batch_size x this; budgets count optimizer steps
    group_by_length: bool = False  # batches of similar length (pipeline/core/sampling.py)


@dataclass
class LotteryResult:
    diff: SparseDiff
    # The dense phase-1 change of the last iteration, as a (non-sparse) diff: the
    # full fine-tuning that LT-SFT runs anyway, reused by the dense-composition ablation.
    # None for random selection, which skips phase 1.
    phase1_diff: SparseDiff | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


def freeze_layer_norms(model: torch.nn.Module) -> None:
    params = dict(model.named_parameters())
    for name in layer_norm_parameter_names(model):
        params[name].requires_grad_(False)


def train_lt_sft(
    model: PreTrainedModel,
    train_features: Sequence[dict],
    collator: Callable,
    config: LotteryConfig,
    maskable: Sequence[str] | None = None,
    dense: Sequence[str] | None = None,
    diff_meta: dict[str, Any] | None = None,
    phase1_state: Mapping[str, torch.Tensor] | None = None,
    dev: DevCheck | None = None,
) -> LotteryResult:
    """Run LT-SFT on ``model`` in place and return the sparse diff it learnt.

    ``phase1_state``: the parameters after an earlier run's phase 1 from the same start
    (same data, seed and budget), which is then not trained again: a sparsity sweep
    selects K entries for several K from one phase 1.

    ``maskable``: parameters trained sparsely (default: the encoder body without
    LayerNorms); ``dense``: parameters trained densely and stored whole (default: every
    other trainable parameter, i.e. the head). The model ends in θ0 + φ (+ trained head).

    ``dev``: the dev score of phases with ``eval_every``; a phase with ``select_best`` ends on
    its best state, so selection measures phase 1's best and the diff is phase 2's best.
    """
    freeze_layer_norms(model)
    maskable = list(maskable if maskable is not None else maskable_parameter_names(model))
    params = dict(model.named_parameters())
    if dense is None:
        maskable_set = set(maskable)
        dense = [n for n, p in params.items() if p.requires_grad and n not in maskable_set]
    sizes = {name: params[name].numel() for name in maskable}
    total = sum(sizes.values())
    if not 0 < config.k <= total:
        raise ValueError(f"K must be in 1..{total} (the maskable entries), got {config.k}")
    if config.n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {config.n_iterations}")

    theta0 = snapshot(model, maskable)
    iteration_start = snapshot(model, [*maskable, *dense])
    def trainable() -> list[dict[str, Any]]:
        """Fresh optimizer groups for each phase (an optimizer and its schedule mutate theirs)."""
        return param_groups(params, [*maskable, *dense], dense, config.learning_rate, config.head_learning_rate)

    l1 = dict(l1_lambda=config.l1_lambda, l1_normaliser=total,
              l1_reference={params[n]: theta0[n] for n in maskable})
    selected: dict[str, torch.Tensor] = {}
    log: list[dict[str, Any]] = []
    phase1_diff = None

    for iteration in range(config.n_iterations):
        k_new = config.k // config.n_iterations + (config.k % config.n_iterations if iteration == 0 else 0)
        tag = f"iter{iteration + 1}"

        if phase1_state is not None and config.selection == "magnitude":
            if config.n_iterations != 1:
                raise ValueError("phase1_state needs n_iterations == 1")
            scorer = magnitude_scorer(iteration_start, phase1_state)
        elif config.selection == "random":
            # Rand-SFT: the mask does not depend on phase 1, whose weights would be reset
            # anyway, so phase 1 is skipped (same result, half the cost).
            scorer = random_scorer(config.seed + iteration)
        else:
            # Phase 1: dense fine-tuning of everything trainable.
            optimizer = SparseAdamW(trainable(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                    max_grad_norm=config.max_grad_norm, **l1)
            log += run_trainer(model, optimizer, train_features, collator, config.phase1, config, f"{tag}-phase1",
                               dev)
            phase1 = snapshot(model, [*maskable, *dense])
            if iteration == config.n_iterations - 1:
                phase1_diff = SparseDiff.from_states(theta0, phase1, maskable, dense, **(diff_meta or {}))
            scorer = magnitude_scorer(iteration_start, phase1)
        # Selection: one global threshold over all maskable tensors. Data-parallel, the main
        # process selects and sends its mask: every process then trains exactly the same
        # entries, whatever the last bits of its weights (they are equal under DDP anyway).
        selected = merge_indices(selected, shared_from_main(partial(select_top_k, scorer, sizes, k_new,
                                                                    exclude=selected)))

        # Reset everything (head included) to the iteration's starting point.
        restore(model, iteration_start)

        # Phase 2: only the selected entries move (and the head, densely).
        optimizer = SparseAdamW(
            trainable(), lr=config.learning_rate, weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            trainable_indices={params[n]: idx for n, idx in selected.items()}
            | {params[n]: torch.empty(0, dtype=torch.int64) for n in maskable if n not in selected},
            **l1,
        )
        log += run_trainer(model, optimizer, train_features, collator, config.phase2, config, f"{tag}-phase2", dev)
        iteration_start = snapshot(model, [*maskable, *dense])

    diff = SparseDiff.from_states(theta0, snapshot(model, [*maskable, *dense]), maskable, dense,
                                  k=config.k, **(diff_meta or {}))
    return LotteryResult(diff=diff, phase1_diff=phase1_diff, log=log)
