"""Multilingual MLM batches for MAD-G's generator: each batch holds ONE language's text.

The generator makes a different adapter for every language, so a batch must come from a
single language (its adapter is generated once per batch). Which language: drawn with
probability proportional to size^s, as in the authors' ``MultilingualDataset``
(github adapter-hub/CPGAdapters, src/transformers/data/datasets/language_modeling.py):
s = 1 samples by size, s = 0 uniformly, in between favours small languages over their
share of the text. The paper's s is NOT confirmed: the authors' command line passes 1.0,
their dataset class defaults to 0.7; we default to 0.7 and make it a parameter.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pipeline.core.errors import LtsftError

DEFAULT_TEMPERATURE_S = 0.7  # unconfirmed: 1.0 on the authors' command line, 0.7 in their dataset class
MIN_LINE_TOKENS = 10


def drop_short_lines(lines: Iterable[str], min_tokens: int = MIN_LINE_TOKENS) -> list[str]:
    """``lines`` without those of fewer than ``min_tokens`` whitespace-separated tokens, stripped.

    The authors' rule (their TextDataset skips ``len(line.strip().split()) < 10``). It counts
    words between spaces, not sub-words: a script written without spaces (Japanese, Chinese,
    Thai) has one "token" per line and loses everything, so such a language gives no text.
    """
    return [line.strip() for line in lines if len(line.split()) >= min_tokens]


def _check_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    if not sizes:
        raise LtsftError("language batch sampler: no languages to sample from")
    checked = {}
    for lang in sorted(sizes):
        size = sizes[lang]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise LtsftError(f"language {lang!r}: size must be a positive number of examples, got {size!r}")
        checked[lang] = size
    return checked


class LanguageBatchSampler:
    """An endless, seeded stream of language codes, one per batch, P(lang) ∝ size^s.

    Iterating starts the stream afresh from ``seed``: the same sizes, s and seed give the
    same languages in the same order, whatever the order of ``sizes``' keys.
    """

    def __init__(self, sizes: Mapping[str, int], temperature_s: float = DEFAULT_TEMPERATURE_S, *, seed: int) -> None:
        self.sizes = _check_sizes(sizes)
        if isinstance(temperature_s, bool) or not isinstance(temperature_s, (int, float)) \
                or not math.isfinite(temperature_s) or temperature_s < 0:
            raise LtsftError(f"temperature_s: must be a number >= 0 (0 uniform, 1 by size), got {temperature_s!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise LtsftError(f"seed: must be an integer, got {seed!r}")
        self.temperature_s = float(temperature_s)
        self.seed = seed
        self.languages: tuple[str, ...] = tuple(self.sizes)
        weights = [float(self.sizes[lang]) ** self.temperature_s for lang in self.languages]
        total = math.fsum(weights)
        self.probabilities: dict[str, float] = {lang: w / total for lang, w in zip(self.languages, weights)}
        self._cum_weights = [math.fsum(weights[:i + 1]) for i in range(len(weights))]

    def __iter__(self) -> Iterator[str]:
        rng = random.Random(self.seed)
        while True:
            yield rng.choices(self.languages, cum_weights=self._cum_weights)[0]


def multilingual_batches(
    datasets: Mapping[str, Sequence[Any]], collator: Callable[[list[Any]], dict[str, Any]],
    batch_size: int, sampler: LanguageBatchSampler,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Endless ``(lang, batch)``: ``lang`` from ``sampler``, ``batch`` the collated next batch of
    that language's examples (take as many as the budget allows, e.g. ``itertools.islice``).

    ``datasets`` are map-style (``len`` and indexing, e.g. ``MaskedLM.featurize``'s list or a
    torch Dataset); ``collator`` turns a list of examples into tensors (``MaskedLM.collator``,
    which masks; give it a seed for reproducible masks). Each language goes through its
    examples in a fresh shuffle per pass, seeded by the sampler's seed and the language alone
    (so adding a language changes no other language's order), in full batches of
    ``batch_size``; a pass's remainder is skipped, as the authors' code does, and the next
    shuffle gives it its turn. A language with fewer examples than ``batch_size`` gives all of
    them in every batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise LtsftError(f"batch_size: must be a positive integer, got {batch_size!r}")
    missing = [lang for lang in sampler.languages if lang not in datasets]
    if missing:
        raise LtsftError(f"language {missing[0]!r}: sampled but no dataset given for it")
    for lang in sampler.languages:
        if len(datasets[lang]) == 0:
            raise LtsftError(f"language {lang!r}: empty dataset (no lines left after filtering?)")
    streams = {lang: _batches(datasets[lang], batch_size, random.Random(f"{sampler.seed}:{lang}"))
               for lang in sampler.languages}
    for lang in sampler:
        yield lang, collator(next(streams[lang]))


def _batches(dataset: Sequence[Any], batch_size: int, rng: random.Random) -> Iterator[list[Any]]:
    """Endless lists of examples: reshuffled passes over ``dataset`` in full batches."""
    size = min(batch_size, len(dataset))
    while True:
        order = list(range(len(dataset)))
        rng.shuffle(order)
        for start in range(0, len(order) - size + 1, size):
            yield [dataset[i] for i in order[start:start + size]]


def language_datasets(
    texts: Mapping[str, Iterable[str]], featurize: Callable[[list[str]], list[Any]],
    min_tokens: int = MIN_LINE_TOKENS,
) -> dict[str, list[Any]]:
    """Each language's lines filtered by ``drop_short_lines`` then featurized (e.g.
    ``lambda lines: MaskedLM().featurize(lines, tokenizer, max_length)``); a language left
    with no line is named in one line rather than silently never sampled."""
    out = {}
    for lang in sorted(texts):
        kept = drop_short_lines(texts[lang], min_tokens)
        if not kept:
            raise LtsftError(f"language {lang!r}: no line of {min_tokens} or more whitespace-separated tokens")
        out[lang] = featurize(kept)
    return out


def sizes_of(datasets: Mapping[str, Sequence[Any]]) -> dict[str, int]:
    """The number of examples per language: the sizes the authors sample by."""
    return {lang: len(dataset) for lang, dataset in datasets.items()}
