"""Global top-K selection (pipeline/methods/lt_sft/selection.py) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.methods.lt_sft.selection as selection
from pipeline.methods.lt_sft.selection import magnitude_scorer, merge_indices, random_scorer, select_top_k


# --------------------------------------------------------------------------- helpers
def dict_scorer(scores: dict[str, torch.Tensor]):
    """Scores straight from a dict of tensors (returns views, as a cheap scorer would)."""
    return lambda name, start, end: scores[name].reshape(-1)[start:end]


def sizes_of(scores: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: t.numel() for n, t in scores.items()}


def flat_positions(selected: dict[str, torch.Tensor], sizes: dict[str, int]) -> list[int]:
    """Selected entries as positions in the concatenation of the tensors (in ``sizes`` order)."""
    offsets, offset = {}, 0
    for name, numel in sizes.items():
        offsets[name] = offset
        offset += numel
    return sorted(int(i) + offsets[name] for name, idx in selected.items() for i in idx)


def brute_force(scores: dict[str, torch.Tensor], k: int, exclude=None) -> list[int]:
    """Top-K positions of the concatenation; ties broken by position (earliest first)."""
    flat = torch.cat([t.reshape(-1).double() for t in scores.values()])
    for pos in flat_positions(exclude or {}, sizes_of(scores)):
        flat[pos] = -1.0
    # Stable sort of -score: equal scores keep position order.
    order = np.argsort(-flat.numpy(), kind="stable")
    return sorted(order[:k].tolist())


def check_well_formed(selected: dict[str, torch.Tensor], sizes: dict[str, int], k: int) -> None:
    assert sum(int(i.numel()) for i in selected.values()) == k
    for name, idx in selected.items():
        assert name in sizes and idx.dtype == torch.int64 and idx.numel() > 0
        assert bool((idx[1:] > idx[:-1]).all()), "indices must be sorted and distinct"
        assert 0 <= int(idx[0]) and int(idx[-1]) < sizes[name]


@st.composite
def score_dicts(draw, max_tensors: int = 4, max_numel: int = 40, distinct: bool = True):
    n_tensors = draw(st.integers(1, max_tensors))
    numels = [draw(st.integers(1, max_numel)) for _ in range(n_tensors)]
    total = sum(numels)
    if distinct:
        values = draw(st.lists(st.floats(0.0, 2.0**127, width=32), min_size=total, max_size=total, unique=True))
    else:
        values = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]), min_size=total, max_size=total))
    flat = torch.tensor(values, dtype=torch.float32)
    scores, offset = {}, 0
    for i, numel in enumerate(numels):
        scores[f"layer{i}.weight"] = flat[offset:offset + numel].clone()
        offset += numel
    return scores


# --------------------------------------------------------------------------- exact top-K
@settings(max_examples=100, deadline=None)
@given(data=st.data(), scores=score_dicts())
def test_matches_torch_topk_without_ties(data, scores):
    sizes = sizes_of(scores)
    total = sum(sizes.values())
    k = data.draw(st.integers(0, total))
    selected = select_top_k(dict_scorer(scores), sizes, k)
    check_well_formed(selected, sizes, k)
    flat = torch.cat([t.reshape(-1) for t in scores.values()])
    expected = sorted(torch.topk(flat, k).indices.tolist()) if k else []
    assert flat_positions(selected, sizes) == expected


@settings(max_examples=100, deadline=None)
@given(data=st.data(), scores=score_dicts(distinct=False))
def test_ties_broken_by_position(data, scores):
    sizes = sizes_of(scores)
    k = data.draw(st.integers(0, sum(sizes.values())))
    selected = select_top_k(dict_scorer(scores), sizes, k)
    check_well_formed(selected, sizes, k)  # never more than K, whatever the ties
    assert flat_positions(selected, sizes) == brute_force(scores, k)


def test_all_equal_scores_take_the_first_k_by_tensor_then_index():
    scores = {"b": torch.ones(5), "a": torch.ones(3), "c": torch.ones(4)}
    selected = select_top_k(dict_scorer(scores), sizes_of(scores), 7)
    # "b" comes first in the sizes order, whatever the names sort as.
    assert {n: i.tolist() for n, i in selected.items()} == {"b": [0, 1, 2, 3, 4], "a": [0, 1]}


def test_ties_straddling_the_threshold():
    scores = {"x": torch.tensor([1.0, 5.0, 3.0, 3.0]), "y": torch.tensor([3.0, 9.0, 3.0])}
    selected = select_top_k(dict_scorer(scores), sizes_of(scores), 4)
    assert {n: i.tolist() for n, i in selected.items()} == {"x": [1, 2, 3], "y": [1]}


def test_zeros_and_subnormals_are_ordered():
    tiny = torch.tensor([0.0, 1e-45, 1e-40, 1e-38, 0.0, 3e-45])
    selected = select_top_k(dict_scorer({"t": tiny}), {"t": 6}, 3)
    assert selected["t"].tolist() == [2, 3, 5]


# --------------------------------------------------------------------------- exclusions
@settings(max_examples=60, deadline=None)
@given(data=st.data(), scores=score_dicts(distinct=False))
def test_exclusions_respected(data, scores):
    sizes = sizes_of(scores)
    exclude = {}
    for name, numel in sizes.items():
        chosen = data.draw(st.lists(st.integers(0, numel - 1), unique=True, max_size=numel))
        if chosen:
            exclude[name] = torch.tensor(sorted(chosen), dtype=torch.int64)
    available = sum(sizes.values()) - sum(int(e.numel()) for e in exclude.values())
    k = data.draw(st.integers(0, available))
    originals = {n: t.clone() for n, t in scores.items()}
    selected = select_top_k(dict_scorer(scores), sizes, k, exclude=exclude)
    check_well_formed(selected, sizes, k)
    for name, idx in selected.items():
        if name in exclude:
            assert not bool(torch.isin(idx, exclude[name]).any())
    assert flat_positions(selected, sizes) == brute_force(originals, k, exclude)
    # The caller's scores are not written to (excluded entries are marked on a copy).
    for name in scores:
        assert torch.equal(scores[name], originals[name])
    with pytest.raises(ValueError):
        select_top_k(dict_scorer(scores), sizes, available + 1, exclude=exclude)


def test_iterative_selection_with_merge_reaches_k():
    generator = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(30, generator=generator), "b": torch.rand(50, generator=generator)}
    sizes = sizes_of(scores)
    selected: dict[str, torch.Tensor] = {}
    for _ in range(4):
        new = select_top_k(dict_scorer(scores), sizes, 20, exclude=selected)
        selected = merge_indices(selected, new)
    check_well_formed(selected, sizes, 80)
    assert flat_positions(selected, sizes) == list(range(80))


# --------------------------------------------------------------------------- edge cases
def test_k_zero_and_k_total():
    scores = {"a": torch.rand(10), "b": torch.rand(3, 4)}
    sizes = sizes_of(scores)
    assert select_top_k(dict_scorer(scores), sizes, 0) == {}
    everything = select_top_k(dict_scorer(scores), sizes, 22)
    assert {n: i.tolist() for n, i in everything.items()} == {"a": list(range(10)), "b": list(range(12))}


@pytest.mark.parametrize("k", [23, 1000, -1])
def test_k_out_of_range_raises(k):
    scores = {"a": torch.rand(10), "b": torch.rand(3, 4)}
    with pytest.raises(ValueError, match="cannot select"):
        select_top_k(dict_scorer(scores), sizes_of(scores), k)


@pytest.mark.parametrize("bad", [float("nan"), -float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("with_exclusion", [False, True])
def test_non_finite_deltas_raise(bad, with_exclusion):
    before = {"a": torch.zeros(8), "b": torch.zeros(5)}
    after = {"a": torch.linspace(0, 1, 8), "b": torch.ones(5)}
    after["b"][3] = bad
    exclude = {"a": torch.tensor([0, 1])} if with_exclusion else None
    with pytest.raises(ValueError, match="non-finite"):
        select_top_k(magnitude_scorer(before, after), sizes_of(before), 2, exclude=exclude)


@pytest.mark.parametrize("negative", [-2.0, -0.0])
@pytest.mark.parametrize("exclude", [None, {"a": torch.tensor([0])}, {"b": torch.tensor([1])}])
def test_negative_scores_raise(negative, exclude):
    """A scorer's contract is scores >= 0; a breach is refused whether or not entries are excluded."""
    scores = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([2.0, 0.5, negative])}
    with pytest.raises(ValueError, match="non-negative"):
        select_top_k(dict_scorer(scores), sizes_of(scores), 3, exclude=exclude)


def test_magnitude_scorer_scores_absolute_change():
    before = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    after = {"w": torch.tensor([[1.5, 0.0], [3.0, 4.25]])}
    score = magnitude_scorer(before, after)
    assert score("w", 0, 4).tolist() == [0.5, 2.0, 0.0, 0.25]
    assert score("w", 1, 3).tolist() == [2.0, 0.0]
    assert select_top_k(score, {"w": 4}, 3)["w"].tolist() == [0, 1, 3]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_magnitude_scorer_any_float_dtype(dtype):
    before = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype)}
    after = {"w": torch.nn.Parameter(torch.tensor([[1.5, 0.0], [3.0, 4.25]], dtype=dtype))}
    score = magnitude_scorer(before, after)
    assert score("w", 0, 4).tolist() == [0.5, 2.0, 0.0, 0.25]
    assert select_top_k(score, {"w": 4}, 2)["w"].tolist() == [0, 1]


# --------------------------------------------------------------------------- random scorer
def test_random_scorer_deterministic_and_order_independent():
    sizes = {"a": 50, "b": 70, "c": 30}
    first = random_scorer(7)
    # Same (seed, name, range): same scores, whichever tensor is scored first.
    forward = {n: first(n, 0, s) for n, s in sizes.items()}
    again = random_scorer(7)
    backward = {n: again(n, 0, sizes[n]) for n in reversed(sizes)}
    for name in sizes:
        assert torch.equal(forward[name], backward[name])
        assert bool(((forward[name] >= 0) & (forward[name] < 1)).all())
    assert not torch.equal(random_scorer(8)("a", 0, 50), forward["a"])
    assert not torch.equal(first("b", 0, 50), forward["a"])

    picked = select_top_k(random_scorer(7), sizes, 40)
    reordered = select_top_k(random_scorer(7), dict(reversed(list(sizes.items()))), 40)
    assert {n: i.tolist() for n, i in picked.items()} == {n: i.tolist() for n, i in reordered.items()}
    assert {n: i.tolist() for n, i in select_top_k(random_scorer(7), sizes, 40).items()} == {
        n: i.tolist() for n, i in picked.items()
    }
    assert sum(i.numel() for i in picked.values()) == 40


# --------------------------------------------------------------------------- chunking
@settings(max_examples=40, deadline=None)
@given(data=st.data(), scores=score_dicts(max_numel=40, distinct=False))
def test_across_chunk_boundaries(data, scores):
    sizes = sizes_of(scores)
    exclude = {}
    for name, numel in sizes.items():
        chosen = data.draw(st.lists(st.integers(0, numel - 1), unique=True, max_size=numel // 2))
        if chosen:
            exclude[name] = torch.tensor(sorted(chosen), dtype=torch.int64)
    available = sum(sizes.values()) - sum(int(e.numel()) for e in exclude.values())
    k = data.draw(st.integers(0, available))
    expected = brute_force(scores, k, exclude)
    original_chunk = selection.CHUNK
    try:
        selection.CHUNK = 7
        selected = select_top_k(dict_scorer(scores), sizes, k, exclude=exclude)
    finally:
        selection.CHUNK = original_chunk
    check_well_formed(selected, sizes, k)
    assert flat_positions(selected, sizes) == expected


def test_chunked_selection_equals_unchunked(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    before = {"a": torch.randn(10, 9, generator=generator), "b": torch.randn(31, generator=generator)}
    after = {n: t + torch.randn(t.shape, generator=generator) for n, t in before.items()}
    sizes = sizes_of(before)
    unchunked = select_top_k(magnitude_scorer(before, after), sizes, 33)
    monkeypatch.setattr(selection, "CHUNK", 7)
    chunked = select_top_k(magnitude_scorer(before, after), sizes, 33)
    assert {n: i.tolist() for n, i in chunked.items()} == {n: i.tolist() for n, i in unchunked.items()}
    # The random scorer is seeded per chunk, so it stays deterministic for a given CHUNK.
    assert {n: i.tolist() for n, i in select_top_k(random_scorer(1), sizes, 33).items()} == {
        n: i.tolist() for n, i in select_top_k(random_scorer(1), sizes, 33).items()
    }
