"""The generator stage's work, once per run: train MAD-G's generator on many languages' text,
save it, and generate the language adapter of every language the run uses.

Steps, each refused in one line before any training if its input is wrong: the typology
vector of every language (training and generated; ``mad_g.typology`` maps a code URIEL does
not list onto one it does), the training text (lines under ``min_line_tokens`` dropped), then
:func:`training.train_generator` with batches sampled ∝ size^s, then one adapter per generated
language. Each generated adapter records its masked-LM dev loss on θ0 alone ("before") and with
the adapter ("after") where the language has held-out text: how much a typology vector alone
says about a language the generator never read.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import LtsftError
from pipeline.core.method import TrainContext
from pipeline.core.runs import RunResult, Trained, run_component
from pipeline.methods.mad_g.generator import (
    MadGenerator,
    generate_adapter,
    typology_tensor,
)
from pipeline.methods.mad_g.method import GENERATOR
from pipeline.methods.mad_g.sampling import (
    LanguageBatchSampler,
    language_datasets,
    multilingual_batches,
    sizes_of,
)
from pipeline.methods.mad_g.training import GeneratorTraining, train_generator
from pipeline.methods.madx.method import TrainedAdapter

SECTIONS = ("mad_g",)


def typology_code(params: Any, lang: str) -> str:
    """The code whose URIEL vector stands for ``lang`` (``mad_g.typology``, else ``lang`` itself)."""
    return params.mad_g.typology.get(lang, lang)


def typology_vectors(params: Any, languages: Sequence[str]) -> dict[str, Any]:
    """Every language's typology vector, or one line naming the first that URIEL lacks."""
    from pipeline.typology import uriel_vector

    vectors = {}
    for lang in languages:
        code = typology_code(params, lang)
        try:
            vectors[lang] = uriel_vector(code)
        except LtsftError as err:
            if code != lang:
                raise LtsftError(f"mad_g.typology.{lang}: {err}") from None
            raise LtsftError(f"mad_g: {err} (map it onto a relative's code under mad_g.typology: {{{lang}: ...}})") from None
    return vectors


def _steps(params: Any) -> int:
    phase = params.mad_g.generator.phase
    if phase.steps is None or phase.eval_every or phase.select_best:
        raise LtsftError("mad_g.generator.phase: only {steps: N} is supported (no epochs, eval_every or select_best)")
    return int(phase.steps)


def unknown_share(features: Sequence[Mapping[str, Any]], unk_id: int | None) -> float:
    """The share of a language's tokens (special tokens aside) that are the unknown token."""
    tokens = [token for example in features for token, special in zip(example["input_ids"], example["special_tokens_mask"])
              if not special]
    return sum(token == unk_id for token in tokens) / len(tokens) if tokens else 1.0


def _unreadable(datasets: Mapping[str, Sequence[Any]], unk_id: int | None, limit: float | None) -> set[str]:
    if limit is None:
        return set()
    return {lang for lang, features in datasets.items() if unknown_share(features, unk_id) > limit}


def check_settings(params: Any, languages: Sequence[str]) -> None:
    """Refuse, in one line, a budget the generator cannot train on or a language without typology."""
    _steps(params)
    typology_vectors(params, languages)


class TrainedGenerator:
    """The generator as the run choreography saves it (with the model it was trained on)."""

    def __init__(self, module: MadGenerator, model: Any, base_model: str) -> None:
        self.module, self.model, self.base_model, self.provenance = module, model, base_model, {}

    def save(self, path: Path) -> None:
        from pipeline.formats.mad_g_generator import save_generator

        save_generator(self.module, path, self.model, self.base_model, self.provenance)


def build_generator(ctx: TrainContext, texts: Mapping[str, Sequence[str]], generate: Sequence[str],
                    dev_texts: Mapping[str, Sequence[str]] | None = None) -> RunResult:
    """Train the generator on ``texts`` (language -> lines) with ``ctx.model`` (θ0 with its MLM
    head) frozen, save it where ``ctx.paths`` puts mad-g's generator, and write the generated
    adapter of every language in ``generate`` as mad-g's language component.

    ``ctx.train`` is not read (the text comes per language); ``dev_texts`` (language -> held-out
    lines) gives each generated adapter its dev loss before / after."""
    from pipeline.core.parameters import count_parameters

    params, settings, steps = ctx.params, ctx.params.mad_g, _steps(ctx.params)
    vectors = typology_vectors(params, [*texts, *generate])
    spec = settings.generator
    datasets = language_datasets(
        {lang: list(lines)[:settings.max_lines] if settings.max_lines else lines for lang, lines in texts.items()},
        lambda lines: ctx.task.featurize(lines, ctx.tokenizer, spec.max_length), settings.min_line_tokens)
    unreadable = _unreadable(datasets, ctx.tokenizer.unk_token_id, settings.max_unknown_share)
    if len(unreadable) == len(datasets):
        raise LtsftError(f"mad_g.max_unknown_share: every training language is more than {settings.max_unknown_share} "
                         "unknown tokens under this tokenizer")
    datasets = {lang: features for lang, features in datasets.items() if lang not in unreadable}
    ctx.facts["left_out_unknown_tokens"] = len(unreadable)
    module = MadGenerator.for_model(ctx.model, reduction_factor=settings.reduction_factor,
                                    language_dim=settings.language_dim, layer_dim=settings.layer_dim, seed=params.seed)
    module.to(next(ctx.model.parameters()).device)
    sampler = LanguageBatchSampler(sizes_of(datasets), settings.temperature_s, seed=params.seed)
    ctx.facts.update({"train_languages": len(datasets), "train_lines": sum(sizes_of(datasets).values())})
    ctx.train = [line for lines in texts.values() for line in lines]  # what run_component counts
    ctx.dev = []  # the generator has no dev score of its own: each generated adapter gets one below

    def train(record: dict[str, Any]) -> Trained:
        batches = multilingual_batches(datasets, ctx.task.collator(ctx.tokenizer, seed=params.seed), spec.batch_size,
                                       sampler)
        log = train_generator(ctx.model, module, {lang: vectors[lang] for lang in datasets},
                              itertools.islice(batches, steps),
                              GeneratorTraining(steps, spec.learning_rate, spec.max_grad_norm, seed=params.seed))
        record["batches_per_language"] = log[-1]["batches_per_language"]
        extras = []
        for lang in generate:
            adapter = generate_adapter(module, typology_tensor(vectors[lang], module, lang))
            component = TrainedAdapter(adapter)
            component.provenance = {
                "method": "mad-g", "kind": "lang", "lang": lang, "generated_by": "mad-g", "preset": params.preset,
                "seed": params.seed, "typology": typology_code(params, lang), "trainable_parameters": 0,
                "generator_parameters": count_parameters(module),
                "dev_metrics": _dev_loss(ctx, adapter, (dev_texts or {}).get(lang, ()), spec.max_length)}
            extras.append((ctx.component("mad-g", "lang", lang), component, 0.0))
        return Trained(TrainedGenerator(module, ctx.model, params.model.name), count_parameters(module),
                       note=f"generator over {len(datasets)} languages, {len(generate)} adapters generated",
                       extras=extras, log=log)

    return run_component(ctx, "mad-g", SECTIONS, spec.max_length, ctx.paths.component(*GENERATOR), train)


def _dev_loss(ctx: TrainContext, adapter: Any, dev: Sequence[str], max_length: int) -> dict[str, dict[str, float]]:
    """Masked-LM dev loss of θ0 ("before") and θ0 + the generated adapter ("after"); {} without text."""
    if not dev:
        return {}
    from pipeline.methods.madx.adapters import ATTRIBUTE, set_active

    madx = getattr(ctx.model, ATTRIBUTE)
    madx.language.load_state_dict(adapter.state_dict())
    scores = {}
    for label, active in (("before", False), ("after", True)):
        set_active(madx, language=active, task=False)
        scores[label] = ctx.task.evaluate(ctx.model, list(dev), ctx.tokenizer, max_length, ctx.params.eval_batch_size)
    set_active(madx, language=True, task=False)
    return scores
