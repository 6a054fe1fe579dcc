"""MAD-G's multilingual batches (pipeline/methods/mad_g/sampling.py): one language per batch, P ∝ size^s."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from pipeline.core.errors import LtsftError
from pipeline.methods.mad_g.sampling import (
    DEFAULT_TEMPERATURE_S,
    LanguageBatchSampler,
    drop_short_lines,
    language_datasets,
    multilingual_batches,
    sizes_of,
)
from pipeline.tasks.mlm import MaskedLM

SIZES = {"aa": 1000, "bb": 100, "cc": 10, "dd": 1}


def _draw(sampler: LanguageBatchSampler, n: int) -> list[str]:
    return list(itertools.islice(sampler, n))


@pytest.mark.parametrize("s", [0.0, DEFAULT_TEMPERATURE_S, 1.0])
def test_frequencies_follow_size_to_the_s(s: float) -> None:
    n = 40_000
    counts = Counter(_draw(LanguageBatchSampler(SIZES, s, seed=3), n))
    expected = {lang: size ** s for lang, size in SIZES.items()}
    total = sum(expected.values())
    for lang, weight in expected.items():
        p = weight / total
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(counts[lang] / n - p) < 5 * sd + 1e-9, (lang, counts[lang] / n, p)
    assert LanguageBatchSampler(SIZES, s, seed=0).probabilities == pytest.approx(
        {lang: w / total for lang, w in expected.items()})


def test_deterministic_for_a_seed_whatever_the_key_order() -> None:
    a = _draw(LanguageBatchSampler(SIZES, seed=7), 500)
    assert a == _draw(LanguageBatchSampler(dict(reversed(list(SIZES.items()))), seed=7), 500)
    sampler = LanguageBatchSampler(SIZES, seed=7)
    assert _draw(sampler, 500) == _draw(sampler, 500) == a  # each iteration starts afresh
    assert a != _draw(LanguageBatchSampler(SIZES, seed=8), 500)


@pytest.mark.parametrize("sizes, s, seed, message", [
    ({}, 0.7, 0, "no languages"),
    ({"aa": 0}, 0.7, 0, "language 'aa': size must be a positive"),
    ({"aa": 3, "bb": 2.5}, 0.7, 0, "language 'bb': size"),
    ({"aa": 3}, -1, 0, "temperature_s"),
    ({"aa": 3}, float("nan"), 0, "temperature_s"),
    ({"aa": 3}, 0.7, "1", "seed"),
])
def test_bad_sampler_input_is_one_line(sizes, s, seed, message) -> None:
    with pytest.raises(LtsftError, match=message):
        LanguageBatchSampler(sizes, s, seed=seed)


def test_drop_short_lines() -> None:
    nine = " ".join(["w"] * 9)
    ten = " ".join(["w"] * 10)
    lines = ["", nine, f"  {ten}  \n", "日本語の文は空白がないので一語に数えられます。", f"{nine} x"]
    assert drop_short_lines(lines) == [ten, f"{nine} x"]
    assert drop_short_lines(lines, min_tokens=1) == [nine, ten, "日本語の文は空白がないので一語に数えられます。", f"{nine} x"]


@pytest.fixture
def texts(tiny_tokenizer) -> dict[str, list[str]]:
    """Three 'languages' with disjoint vocabularies (whole-word tokens of the tiny tokenizer), so a
    batch's token ids tell which language it came from; and one with only short lines."""
    words = sorted(w for w in tiny_tokenizer.get_vocab() if w.isalpha() and w.isascii())
    groups = [words[k::3] for k in range(3)]
    assert min(map(len, groups)) >= 3
    return {lang: [" ".join(group[(i * 7 + j * j) % len(group)] for j in range(10 + i % 4)) for i in range(n)]
            for lang, group, n in zip(("aa", "bb", "cc"), groups, (40, 12, 3))} | {"dd": ["too short"]}


def _batches(texts, tokenizer, seed: int, n: int, batch_size: int = 4):
    mlm = MaskedLM()
    data = language_datasets({k: v for k, v in texts.items() if k != "dd"},
                             lambda lines: mlm.featurize(lines, tokenizer, 32))
    sampler = LanguageBatchSampler(sizes_of(data), seed=seed)
    return data, list(itertools.islice(
        multilingual_batches(data, mlm.collator(tokenizer, seed=seed), batch_size, sampler), n))


def test_one_language_per_batch_and_deterministic(texts, tiny_tokenizer) -> None:
    data, batches = _batches(texts, tiny_tokenizer, seed=1, n=60)
    assert sizes_of(data) == {"aa": 40, "bb": 12, "cc": 3}
    special = set(tiny_tokenizer.all_special_ids)
    vocab = {lang: {t for f in feats for t in f["input_ids"]} - special for lang, feats in data.items()}
    assert not (vocab["aa"] & vocab["bb"]) and not (vocab["bb"] & vocab["cc"])
    langs = Counter()
    for lang, batch in batches:
        langs[lang] += 1
        assert set(batch) >= {"input_ids", "attention_mask", "labels"}
        # the unmasked text (labels hold the masked-out originals) is all this language's words
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
        assert set(original[batch["attention_mask"].bool()].tolist()) - special <= vocab[lang], lang
        assert len(batch["input_ids"]) == min(4, len(data[lang]))
    assert set(langs) == {"aa", "bb", "cc"}
    _, again = _batches(texts, tiny_tokenizer, seed=1, n=60)
    assert [lang for lang, _ in again] == [lang for lang, _ in batches]
    assert all(torch.equal(a[k], b[k]) for (_, a), (_, b) in zip(batches, again) for k in a)
    _, other = _batches(texts, tiny_tokenizer, seed=2, n=60)
    assert [lang for lang, _ in other] != [lang for lang, _ in batches]


def test_each_pass_a_fresh_shuffle_in_full_batches() -> None:
    """40 examples in batches of 4: every example once in each 10 consecutive batches of its
    language, in a new order each pass; 10 in batches of 4: two full batches a pass, the
    remainder skipped; 3 (fewer than a batch): all of them every time."""
    data = {"aa": list(range(40)), "bb": list(range(100, 110)), "cc": [7, 8, 9]}
    sampler = LanguageBatchSampler({lang: len(d) for lang, d in data.items()}, seed=5)
    per_lang: dict[str, list[list[int]]] = {lang: [] for lang in data}
    for lang, batch in itertools.islice(multilingual_batches(data, list, 4, sampler), 400):
        per_lang[lang].append(batch)
    aa = per_lang["aa"]
    assert len(aa) >= 20 and all(len(b) == 4 for b in aa)
    first, second = [i for b in aa[:10] for i in b], [i for b in aa[10:20] for i in b]
    assert sorted(first) == sorted(second) == data["aa"] and first != second
    bb = per_lang["bb"]
    assert all(len(b) == 4 and len(set(b)) == 4 for b in bb)
    assert all(len(set(bb[i] + bb[i + 1])) == 8 for i in range(0, len(bb) - 1, 2))
    assert all(sorted(b) == [7, 8, 9] for b in per_lang["cc"])
    # a language's order depends on the seed and the language only, not on the other languages
    alone = LanguageBatchSampler({"aa": 40}, seed=5)
    assert list(itertools.islice(multilingual_batches({"aa": data["aa"]}, list, 4, alone), 20)) == \
        [("aa", b) for b in aa[:20]]


def test_bad_batches_input_is_one_line(texts, tiny_tokenizer) -> None:
    with pytest.raises(LtsftError, match="language 'dd': no line of 10 or more"):
        language_datasets(texts, lambda lines: lines)
    sampler = LanguageBatchSampler({"aa": 2, "bb": 1}, seed=0)
    with pytest.raises(LtsftError, match="language 'bb': sampled but no dataset"):
        next(multilingual_batches({"aa": [1, 2]}, list, 2, sampler))
    with pytest.raises(LtsftError, match="language 'bb': empty dataset"):
        next(multilingual_batches({"aa": [1, 2], "bb": []}, list, 2, sampler))
    with pytest.raises(LtsftError, match="batch_size"):
        next(multilingual_batches({"aa": [1, 2], "bb": [3]}, list, 0, sampler))
