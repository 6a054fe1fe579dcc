"""How much of each batch is padding, with random batches and with length-grouped ones.

The batches are the Trainer's own: ``Trainer.get_train_dataloader()`` with the sampler that
``group_by_length`` selects (pipeline/core/sampling.py) and the task's collator, drawn after
``set_seed(seed)`` as ``Trainer.train`` does, for as many optimizer steps as the budget runs.
The share is padding tokens over all tokens of those batches: what the model computes on
without need (attention masks the padding out of the result, not out of the cost).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import Trainer, TrainingArguments, set_seed

from pipeline.core.sampling import sampler_arguments


def padding_share(features: Sequence[dict], collator: Callable, batch_size: int, steps: int, seed: int,
                  group_by_length: bool) -> dict[str, float]:
    """Padding share and tokens of the first ``steps`` batches a training phase would draw."""
    with tempfile.TemporaryDirectory(prefix="ltsft-padding-") as out_dir:
        args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=batch_size, seed=seed,
                                 data_seed=seed, report_to="none", remove_unused_columns=False, use_cpu=True,
                                 dataloader_num_workers=0,
                                 **sampler_arguments(_Settings(group_by_length)))
        # The smallest module a Trainer accepts: the batches are all that is looked at.
        trainer = Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=list(features), data_collator=collator)
        set_seed(seed)
        loader = trainer.get_train_dataloader()
        real = total = 0
        batches = itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)
        for batch in batches:
            mask = batch["attention_mask"]
            real += int(mask.sum())
            total += mask.numel()
    return {"padding_share": 1 - real / total, "tokens": float(total)}


class _Settings:
    def __init__(self, group_by_length: bool) -> None:
        self.group_by_length = group_by_length


def demo_padding(params: Any) -> dict[str, Any]:
    """Padding shares of the current params' training data, random against grouped batches:
    every task's source-language training split with its task_sft budget, and the masked-LM
    text of the POS source language with its lang_sft budget (phase 1's steps)."""
    from pipeline.core.models import load_tokenizer
    from pipeline.tasks import get_task, task_for
    from stages import layout

    tokenizer = load_tokenizer(layout.BASE_MODEL)
    jobs: list[tuple[str, Any, Any, Any]] = []
    for name in ("pos", "ner"):
        if name in params.tasks:
            spec, task_params = params.task(name), params.for_task(name)
            task = task_for(spec)
            examples = task.read(layout.task_split(name, spec.source, "train", task.data_format))
            jobs.append((name, task, examples, task_params.task_sft))
    lang = params.task("pos").source if "pos" in params.tasks else next(iter(params.languages))
    mlm = get_task("mlm")
    jobs.append((f"mlm-{lang}", mlm, mlm.read(layout.text_split(lang, "train")), params.lang_sft))
    figures: dict[str, Any] = {}
    for label, task, examples, spec in jobs:
        features = task.featurize(examples, tokenizer, spec.max_length)
        steps = spec.phase1.resolve(len(features), spec.batch_size)
        for grouped in (False, True):
            share = padding_share(features, task.collator(tokenizer), spec.batch_size, steps, params.seed, grouped)
            figures[f"{label}_padding_share_{'grouped' if grouped else 'random'}"] = share["padding_share"]
        figures[f"{label}_padding_setup"] = (f"{len(features)} examples, batch {spec.batch_size}, {steps} steps, "
                                             f"max_length {spec.max_length}")
    return figures
