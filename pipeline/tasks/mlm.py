"""Masked language modelling: the task that trains language diffs.

Training masks dynamically (fresh masks each epoch, from the Trainer's seeded RNG);
evaluation masks once with a fixed seed so that losses are comparable between runs.
The output embedding matrix is untied and frozen (see ``untie_output_embeddings``); the
MLM head's transform layer and output bias are trained densely and stored as the diff's
dense tensors, which are never composed into task models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, PreTrainedModel, PreTrainedTokenizerFast
from transformers.modeling_outputs import MaskedLMOutput

from pipeline.formats.text import read_lines
from pipeline.core.models import untie_output_embeddings
from pipeline.tasks.base import Features, Task, eval_batches

MASK_PROBABILITY = 0.15
EVAL_MASK_SEED = 0


IGNORE = -100


def score_masked_positions_only(model: PreTrainedModel) -> PreTrainedModel:
    """Make ``model`` (a BERT or XLM-R masked LM) compute logits only where the loss looks.

    Why: the MLM decoder over the vocabulary costs as much per token as several
    transformer layers (demo: 9.3M multiply-adds per token against 14.2M for all 8
    layers), and the loss ignores the ~85% of positions that are not masked. The loss is
    unchanged (mean cross-entropy over masked positions); ``logits`` then holds only the
    masked rows. The override is per instance, so parameter names and saving are untouched.
    """
    head = model.cls if hasattr(model, "cls") else model.lm_head
    body = model.base_model

    def forward(input_ids=None, attention_mask=None, labels=None, **kwargs):
        kwargs.pop("num_items_in_batch", None)  # the mean below is what the stock forward returns too
        kwargs.pop("return_dict", None)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs).last_hidden_state
        if labels is None:
            return MaskedLMOutput(logits=head(hidden))
        scored = labels != IGNORE
        logits = head(hidden[scored])
        loss = torch.nn.functional.cross_entropy(logits, labels[scored]) if logits.shape[0] else logits.sum()
        return MaskedLMOutput(loss=loss, logits=logits)

    model.forward = forward
    return model


class MaskedLM(Task):
    name = "mlm"
    title = "Masked language modelling"
    metric = "loss"
    higher_is_better = False
    data_format = "txt"

    def read(self, path: str | Path) -> list[str]:
        return read_lines(path)

    def build_model(self, base: str | Path, seed: int) -> PreTrainedModel:
        torch.manual_seed(seed)
        model = AutoModelForMaskedLM.from_pretrained(str(base))
        untie_output_embeddings(model)
        return score_masked_positions_only(model)

    def featurize(self, examples: Sequence[str], tokenizer: PreTrainedTokenizerFast, max_length: int) -> list[Features]:
        encoded = tokenizer(list(examples), truncation=True, max_length=max_length, return_special_tokens_mask=True)
        return [
            {key: encoded[key][i] for key in ("input_ids", "attention_mask", "special_tokens_mask")}
            for i in range(len(examples))
        ]

    def collator(self, tokenizer: PreTrainedTokenizerFast, seed: int | None = None) -> DataCollatorForLanguageModeling:
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASK_PROBABILITY, seed=seed)

    @torch.no_grad()
    def evaluate(
        self, model: PreTrainedModel, examples: Sequence[str], tokenizer: PreTrainedTokenizerFast,
        max_length: int, batch_size: int,
    ) -> dict[str, float]:
        """Mean cross-entropy over masked positions, masks fixed by EVAL_MASK_SEED."""
        features = self.featurize(examples, tokenizer, max_length)
        total_loss, total_masked = 0.0, 0
        for batch in eval_batches(model, features, self.collator(tokenizer, seed=EVAL_MASK_SEED), batch_size):
            masked = int((batch["labels"] != IGNORE).sum())
            if not masked:
                continue
            loss = model(**batch).loss
            total_loss += float(loss) * masked
            total_masked += masked
        loss = total_loss / total_masked if total_masked else float("nan")
        return {"loss": loss, "perplexity": math.exp(loss) if total_masked else float("nan"),
                "masked_tokens": float(total_masked)}


def warm_up_head(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, train_text: Sequence[str],
                 dev_text: Sequence[str], spec, seed: int,
                 eval_batch_size: int) -> tuple[dict[str, float | int | str], list[dict[str, Any]]]:
    """Train only the MLM head (``cls.*``) of an encoder that has none worth the name (e5),
    the encoder frozen; ``spec`` (a WarmupSpec, or any DenseSpec: tied) says whether the
    decoder stays the frozen input embeddings (``decoder: tied``) or trains as an untied copy.
    Returns the dev loss before and after, and the warm-up's log history (its training curve,
    with the dev loss at step 0 and, given ``phase.eval_every``, every that many steps)."""
    from pipeline.core.best_checkpoint import DevCheck
    from pipeline.core.training import train_parameters
    from pipeline.tasks import get_task

    mlm = get_task("mlm")
    decoder = getattr(spec, "decoder", "tied")
    if decoder == "untied":
        untie_output_embeddings(model)  # a copy of the input embeddings, listed under cls.* below
    # Tied, the decoder matrix is the word-embedding parameter (named bert.embeddings.*): not
    # among cls.*, so it stays frozen; untied, it is cls.predictions.decoder.weight and trains.
    head = [name for name, _ in model.named_parameters() if name.startswith("cls.")]
    score_masked_positions_only(model)
    before = mlm.evaluate(model, dev_text, tokenizer, spec.max_length, eval_batch_size)
    features = mlm.featurize(train_text, tokenizer, spec.max_length)
    dev = DevCheck(lambda m: mlm.evaluate(m, dev_text, tokenizer, spec.max_length, eval_batch_size), "loss", False)
    log = train_parameters(model, head, features, mlm.collator(tokenizer), spec.phase, spec.run(seed),
                           "mlm-head-warmup", max_grad_norm=spec.max_grad_norm, dev=dev)
    # The dev curve's last point is scored on the final state (BestOnDev scores the last step):
    # no second pass over the dev set for the same number.
    scored = [entry for entry in log if "eval_loss" in entry and "step" in entry]
    last = scored[-1] if scored and not spec.phase.select_best else None
    after = last["eval_loss"] if last is not None and last["step"] == spec.phase.steps else \
        mlm.evaluate(model, dev_text, tokenizer, spec.max_length, eval_batch_size)["loss"]
    for param in model.parameters():
        param.requires_grad_(True)
    start = {"step": 0, "eval_loss": before["loss"], "phase": "mlm-head-warmup"}  # where the dev curve starts
    return {"dev_loss_before": before["loss"], "dev_loss_after": after, "steps": spec.phase.steps,
            "train_lines": len(train_text), "decoder": decoder}, [start, *log]
