"""Training the MAD-G generator: multilingual masked LM, each batch one language.

For every ``(lang, batch)`` the generator makes ``lang``'s adapter from its typology vector,
the model runs with that adapter (``generator.generated_forward``), and the MLM loss steps the
generator alone. A plain PyTorch loop rather than transformers' Trainer (pipeline/core/
training.py): the adapter changes with every batch's language, which a Trainer's fixed model
cannot express through its public extension points, and the batches come already collated and
language-sampled from an iterator. What it shares with the Trainer path: the optimizer
(SparseAdamW, which clips exactly the trained parameters' gradient norm), the linear decay
schedule to zero, a seeded global RNG (dropout), and the run's runtime (pipeline/core/
runtime.py): ``runtime.precision`` (bf16 / fp16 autocast as the Trainer's, fp16 with a gradient
scaler; the generator's weights and optimizer state stay fp32) and ``runtime.checkpoint_every``
(a killed run resumes bit-identical: pipeline/core/resume.py's LoopCheckpoints). Not data
parallelism: under several processes each trains the whole generator on the same batches.

What trains: the generator only (its language-embedding layer, generator tensors and, in the
layer-shared variant, layer embeddings). Every pretrained weight, the MLM head included,
stays frozen. The authors freeze only the base model (their MLM head trains, and the word
embeddings too unless ``--freeze_embeddings``); we freeze the head because the generator's
adapters are used on the pretrained model (with a task head, or fine-tuned as an ordinary MAD-X
language adapter in `mad-g-ls`, whose MLM training here also keeps the head frozen): a head
co-trained with the generator would let the adapters fit a head that is then thrown away, and
the saved generator would need it stored beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.core.curves import logging_steps
from pipeline.core.errors import LtsftError
from pipeline.core.precision import autocast, grad_scaler
from pipeline.core.runtime import current as current_runtime
from pipeline.core.sparse_adamw import SparseAdamW
from pipeline.methods.mad_g.generator import (
    MadGenerator,
    generated_forward,
    install,
    typology_tensor,
)
from pipeline.methods.madx.adapters import ATTRIBUTE


@dataclass(frozen=True)
class GeneratorTraining:
    """The generator's optimisation: ``steps`` batches (one optimizer step each)."""

    steps: int
    learning_rate: float = 1e-4
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0


def _typology_table(typology: Mapping[str, Any], generator: MadGenerator) -> dict[str, torch.Tensor]:
    device = generator.language.weight.device
    return {lang: typology_tensor(vector, generator, lang).to(device) for lang, vector in typology.items()}


def train_generator(model: nn.Module, generator: MadGenerator, typology: Mapping[str, Any],
                    batches: Iterable[tuple[str, Mapping[str, torch.Tensor]]],
                    settings: GeneratorTraining) -> list[dict[str, Any]]:
    """Train ``generator`` on ``settings.steps`` batches of ``batches`` with ``model`` (an MLM
    model, e.g. ``BertForMaskedLM``) frozen; return the log (one entry every few steps, and a
    summary with the batches seen per language).

    ``typology`` maps each language to its typology vector; a batch of a language it lacks,
    or too few batches, is refused in one line. The model gets the generator's adapter slot
    (:func:`generator.install`) unless it has it. Deterministic for ``settings.seed``: the
    generator's own initialisation is seeded where it is built.
    """
    if settings.steps < 1:
        raise LtsftError(f"generator training: steps must be >= 1, not {settings.steps}")
    if getattr(model, ATTRIBUTE, None) is None:
        install(model, generator)
    table = _typology_table(typology, generator)
    for param in model.parameters():
        param.requires_grad_(False)
    trained = list(generator.parameters())
    for param in trained:
        param.requires_grad_(True)
    optimizer = SparseAdamW(trained, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                            max_grad_norm=settings.max_grad_norm)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / settings.steps)
    device = next(model.parameters()).device
    runtime = current_runtime()
    scaler = grad_scaler(runtime.precision, device.type)
    checkpoints = runtime.loop("mad-g-generator", generator, optimizer, settings.steps)
    every = logging_steps(settings.steps)
    seen: dict[str, int] = {}
    was_training = model.training
    torch.manual_seed(settings.seed)  # dropout, as the Trainer seeds it
    step, log = checkpoints.resume(schedule, scaler)
    batches = iter(batches)
    for lang, _ in itertools.islice(batches, step):  # a resumed run re-draws what it trained (same masks)
        seen[lang] = seen.get(lang, 0) + 1
    checkpoints.restore_rng()
    model.train()
    progress = tqdm(total=settings.steps, initial=step, desc="mad-g generator", unit="step")
    try:
        for lang, batch in batches:
            if step == settings.steps:
                break
            if lang not in table:
                raise LtsftError(f"generator training: a batch of language {lang!r}, which has no typology vector")
            inputs = {key: value.to(device) for key, value in batch.items()}
            with autocast(runtime.precision, device.type):
                loss = generated_forward(model, generator, table[lang], **inputs).loss
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # unscales before SparseAdamW clips; skips the step on inf / NaN
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            seen[lang] = seen.get(lang, 0) + 1
            progress.update()
            if step % every == 0 or step == settings.steps:
                log.append({"step": step, "language": lang, "loss": float(loss.detach()),
                            "grad_norm": float(optimizer.grad_norm), "learning_rate": schedule.get_last_lr()[0],
                            "phase": "mad-g-generator"})
                progress.set_postfix(loss=f"{log[-1]['loss']:.3f}", language=lang)
            checkpoints.save(step, schedule, scaler, log)
        if step < settings.steps:
            raise LtsftError(f"generator training: the batches ran out after {step} of {settings.steps} steps")
    finally:
        progress.close()
        model.train(was_training)
    log.append({"phase": "mad-g-generator", "steps": settings.steps, "batches_per_language": dict(sorted(seen.items()))})
    return log
