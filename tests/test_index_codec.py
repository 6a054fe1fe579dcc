"""Tests for the Elias-Fano index codec (pipeline/formats/index_codec.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.index_codec import EncodedIndices, choose_low_bits, decode, encode


def _roundtrip(indices: np.ndarray, universe: int) -> EncodedIndices:
    encoded = encode(indices, universe)
    decoded = decode(encoded)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, indices)
    assert encoded.count == indices.size
    assert encoded.universe == universe
    assert encoded.high.dtype == np.uint8 and encoded.low.dtype == np.uint8
    # Exact size: n*l low bits plus n + (u >> l) + 1 high bits, each rounded up to bytes.
    n, l = encoded.count, encoded.low_bits
    assert encoded.low.size == (n * l + 7) // 8
    assert encoded.high.size == (n + (universe >> l) + 1 + 7) // 8
    if n:
        # u >> l < 2n for l = floor(log2(u/n)), so at most n*(3 + l) + 1 bits
        # (= n*(2 + ceil(log2(u/n))) + 1 unless u/n is a power of two), plus padding.
        assert encoded.nbytes * 8 <= n * (3 + l) + 1 + 2 * 7
    return encoded


@st.composite
def dense_sets(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Index sets over small universes at any density, from empty to full."""
    universe = draw(st.integers(1, 5000))
    density = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
    seed = draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random(universe) < density
    return np.flatnonzero(mask).astype(np.int64), universe


@st.composite
def sparse_sets(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Small non-empty sets in universes up to 2**62 (exercises large low_bits)."""
    universe = draw(st.one_of(st.integers(1, 64), st.integers(1, 2**62)))
    values = draw(st.sets(st.integers(0, universe - 1), min_size=1, max_size=50))
    return np.array(sorted(values), dtype=np.int64), universe


@settings(max_examples=150, deadline=None)
@given(dense_sets())
def test_roundtrip_dense(case: tuple[np.ndarray, int]) -> None:
    _roundtrip(*case)


@settings(max_examples=150, deadline=None)
@given(sparse_sets())
def test_roundtrip_sparse(case: tuple[np.ndarray, int]) -> None:
    _roundtrip(*case)


@pytest.mark.parametrize(
    "indices, universe",
    [
        ([], 0),
        ([], 1),
        ([0], 1),
        ([], 1000),
        (list(range(1000)), 1000),
        ([999], 1000),
        ([0, 2**62 - 1], 2**62),
    ],
)
def test_roundtrip_edge_cases(indices: list[int], universe: int) -> None:
    _roundtrip(np.array(indices, dtype=np.int64), universe)


def test_accepts_other_integer_dtypes() -> None:
    for dtype in (np.int32, np.uint32, np.uint64, np.uint16):
        idx = np.array([1, 5, 9, 200], dtype=dtype)
        np.testing.assert_array_equal(decode(encode(idx, 1000)), idx.astype(np.int64))
    # An empty Python list becomes a float64 array; an empty set is still fine.
    assert decode(encode([], 10)).size == 0


def test_choose_low_bits() -> None:
    assert choose_low_bits(0, 0) == 0
    assert choose_low_bits(0, 177_000_000) == 0
    assert choose_low_bits(1, 1) == 0
    assert choose_low_bits(10, 10) == 0
    assert choose_low_bits(10, 19) == 0
    assert choose_low_bits(10, 20) == 1
    assert choose_low_bits(1, 2**40) == 40
    assert choose_low_bits(1, 2**40 - 1) == 39
    assert choose_low_bits(14_155_776, 177_000_000) == 3
    with pytest.raises(ValueError):
        choose_low_bits(5, 4)
    with pytest.raises(ValueError):
        choose_low_bits(-1, 4)


def test_space_at_lt_sft_density() -> None:
    """At the paper's mask density (14,155,776 of 177M) the code is <= 0.75 bytes/index."""
    universe = 2_000_000
    n = round(universe * 14_155_776 / 177_000_000)
    rng = np.random.default_rng(1234)
    idx = np.sort(rng.choice(universe, size=n, replace=False)).astype(np.int64)
    encoded = _roundtrip(idx, universe)
    assert encoded.nbytes / n <= 0.75


@pytest.mark.parametrize(
    "indices, universe, match",
    [
        ([3, 1, 5], 10, "unsorted"),
        ([1, 3, 3, 5], 10, "duplicate"),
        ([1, 3, 10], 10, "< universe"),
        ([-1, 3], 10, ">= 0"),
        ([0, 1, 2], 2, "cannot fit"),
        ([[1, 2]], 10, "1-D"),
        ([0.0, 1.0], 10, "integer dtype"),
        ([2**63 + 5], 10, "< universe"),
    ],
)
def test_encode_rejects_bad_input(indices: list, universe: int, match: str) -> None:
    arr = np.array(indices, dtype=np.uint64) if indices == [2**63 + 5] else np.array(indices)
    with pytest.raises(ValueError, match=match):
        encode(arr, universe)


def test_encode_rejects_bad_universe() -> None:
    with pytest.raises(ValueError):
        encode(np.array([1]), -1)
    with pytest.raises(ValueError):
        encode(np.array([1]), 2**62 + 1)
    with pytest.raises(ValueError):
        encode(np.array([1]), 10.0)  # type: ignore[arg-type]


def _example() -> EncodedIndices:
    rng = np.random.default_rng(7)
    idx = np.sort(rng.choice(3000, size=250, replace=False)).astype(np.int64)
    return encode(idx, 3000)


def test_decode_detects_every_single_bit_flip_in_high() -> None:
    encoded = _example()
    assert encoded.low_bits > 0
    for bit in range(encoded.high.size * 8):
        high = encoded.high.copy()
        high[bit // 8] ^= np.uint8(1 << (bit % 8))
        with pytest.raises(ValueError):
            decode(dataclasses.replace(encoded, high=high))


@pytest.mark.parametrize("field", ["high", "low"])
def test_decode_detects_truncation_and_extension(field: str) -> None:
    encoded = _example()
    arr = getattr(encoded, field)
    for bad in (arr[:-1], arr[: arr.size // 2], arr[:0], np.append(arr, np.uint8(0))):
        with pytest.raises(ValueError, match="truncated or corrupted"):
            decode(dataclasses.replace(encoded, **{field: bad}))


def test_decode_detects_bad_header_and_types() -> None:
    encoded = _example()
    for changes in (
        {"count": encoded.count + 1},
        {"count": encoded.count - 1},
        {"universe": encoded.universe * 4},
        {"low_bits": encoded.low_bits + 1},
        {"count": -1},
        {"high": encoded.high.astype(np.int64)},
        {"low": encoded.low.tolist()},
    ):
        with pytest.raises(ValueError):
            decode(dataclasses.replace(encoded, **changes))


def test_decode_detects_unsorted_low_parts() -> None:
    # Two indices in the same high bucket: swapping their low parts breaks ordering.
    encoded = encode(np.array([0, 1, 2, 3, 4, 5, 6, 7]), 64)  # l = 3, all in bucket 0
    assert encoded.low_bits == 3
    bits = np.unpackbits(encoded.low, count=8 * 3, bitorder="little").reshape(8, 3)
    bits[[0, 1]] = bits[[1, 0]]
    low = np.packbits(bits.ravel(), bitorder="little")
    with pytest.raises(ValueError, match="strictly increasing"):
        decode(dataclasses.replace(encoded, low=low))
