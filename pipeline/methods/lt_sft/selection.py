"""Global top-K selection over many tensors without concatenating them.

LT-SFT keeps the K entries that changed most, with ONE threshold over every maskable
tensor. Concatenating all |Δ| (as torch.topk would need) costs a copy as large as the
model; the reference copies every delta into a Python list, which is far worse. Here the
threshold is found by a two-level radix select on the IEEE-754 bit patterns of the
scores: for non-negative floats the int32 bit pattern orders exactly like the value, so
a 65,536-bin histogram of the top 16 bits, then one of the low 16 bits inside the
boundary bin, gives the exact K-th largest score. Scores are computed chunk by chunk, so
the extra memory is a few chunk-sized buffers, whatever the model size.

Ties at the threshold are broken by position (tensor order, then flat index), so exactly
K entries are selected, deterministically.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch

CHUNK = 1 << 22  # entries scored at a time: 16 MiB of float32
_BINS = 1 << 16
_INF_HIGH_BITS = 0x7F80  # top 16 bits of +inf; anything at or above is inf or NaN

# A scorer returns float32 scores >= 0 for entries [start, end) of one tensor (flattened).
Scorer = Callable[[str, int, int], torch.Tensor]


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Zero-copy numpy view of a CPU tensor (chunks of GPU tensors are copied over)."""
    tensor = tensor.detach().reshape(-1).cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()  # numpy has no bfloat16


def magnitude_scorer(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]
) -> Scorer:
    """Scores |after − before|: how far each entry moved during dense fine-tuning."""

    def score(name: str, start: int, end: int) -> torch.Tensor:
        a = _as_numpy(after[name].reshape(-1)[start:end])
        b = _as_numpy(before[name].reshape(-1)[start:end])
        # numpy, not torch: on small CPUs torch's elementwise kernels cost several times more.
        out = np.subtract(a, b, dtype=np.float32)
        return torch.from_numpy(np.abs(out, out=out))

    return score


def random_scorer(seed: int) -> Scorer:
    """Uniform random scores: top-K of them is a uniformly random K-subset (Rand-SFT)."""

    def score(name: str, start: int, end: int) -> torch.Tensor:
        # One generator per (tensor, chunk) so the scores do not depend on visiting order;
        # zlib.crc32, not hash(): Python salts str hashes per process.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), start])
        return torch.from_numpy(rng.random(end - start, dtype=np.float32))

    return score


def _bit_chunks(
    scorer: Scorer, sizes: Mapping[str, int], exclude: Mapping[str, torch.Tensor]
) -> Iterable[tuple[str, int, np.ndarray]]:
    """Yield (name, start, int32 bit patterns) chunk by chunk; excluded entries get -1."""
    for name, numel in sizes.items():
        excluded = exclude.get(name)
        excluded = excluded.cpu().numpy() if excluded is not None and excluded.numel() else None
        for start in range(0, numel, CHUNK):
            end = min(start + CHUNK, numel)
            scores = np.ascontiguousarray(_as_numpy(scorer(name, start, end)), dtype=np.float32)
            bits = scores.view(np.int32)
            if (bits < 0).any():  # checked here, before -1 marks the excluded entries
                raise ValueError("selection scores must be non-negative")
            if excluded is not None:
                lo, hi = np.searchsorted(excluded, [start, end])
                if hi > lo:
                    bits = bits.copy()  # the scorer may return a view of its caller's tensor
                    bits[excluded[lo:hi] - start] = -1
            yield name, start, bits


def _histogram(values: np.ndarray) -> np.ndarray:
    try:
        return np.bincount(values, minlength=_BINS)
    except ValueError:
        raise ValueError("selection scores must be non-negative") from None


def _boundary_bin(hist: np.ndarray, needed: int) -> tuple[int, int]:
    """The bin holding the ``needed``-th largest value, and how many lie in higher bins."""
    from_top = np.cumsum(hist[::-1])
    position = int(np.searchsorted(from_top, needed))
    boundary = hist.size - 1 - position
    above = int(from_top[position - 1]) if position else 0
    return boundary, above


def select_top_k(
    scorer: Scorer,
    sizes: Mapping[str, int],
    k: int,
    exclude: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Sorted int64 flat indices, per tensor, of the ``k`` highest-scoring entries overall.

    ``sizes`` maps tensor names to their entry counts, in the order used for tie-breaking.
    ``exclude`` holds sorted indices that may not be chosen (earlier LT-SFT iterations).
    """
    exclude = exclude or {}
    available = sum(sizes.values()) - sum(int(e.numel()) for e in exclude.values())
    if k < 0 or k > available:
        raise ValueError(f"cannot select K={k} of {available} selectable entries")
    if k == 0:
        return {}

    # Pass 1: histogram of the top 16 bits of every score.
    high_hist = np.zeros(_BINS, dtype=np.int64)
    for _, _, bits in _bit_chunks(scorer, sizes, exclude):
        if exclude:
            bits = bits[bits >= 0]
        high_hist += _histogram(np.right_shift(bits, 16))
    if int(high_hist[_INF_HIGH_BITS:].sum()):
        raise ValueError("non-finite weight change (inf or NaN): training diverged")
    high_bin, above_high = _boundary_bin(high_hist, k)

    # Pass 2: histogram of the low 16 bits inside the boundary bin.
    low_hist = np.zeros(_BINS, dtype=np.int64)
    for _, _, bits in _bit_chunks(scorer, sizes, exclude):
        inside = bits[np.right_shift(bits, 16) == high_bin]
        low_hist += _histogram(np.bitwise_and(inside, 0xFFFF))
    low_bin, above_low = _boundary_bin(low_hist, k - above_high)
    threshold = (high_bin << 16) | low_bin
    ties_to_take = k - above_high - above_low

    # Pass 3: everything strictly above the threshold, plus the first ties by position.
    # Chunks come in increasing position, so per-tensor concatenation is already sorted.
    picked: dict[str, list[np.ndarray]] = {}
    for name, start, bits in _bit_chunks(scorer, sizes, exclude):
        chosen = bits > threshold
        if ties_to_take:
            ties = np.flatnonzero(bits == threshold)[:ties_to_take]
            ties_to_take -= ties.size
            chosen[ties] = True
        positions = np.flatnonzero(chosen)
        if positions.size:
            positions += start
            picked.setdefault(name, []).append(positions)
    return {
        name: torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))
        for name, parts in picked.items()
    }


def merge_indices(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Union of two disjoint per-tensor index sets, each kept sorted."""
    merged = dict(a)
    for name, idx in b.items():
        merged[name] = torch.sort(torch.cat([merged[name], idx])).values if name in merged else idx
    return merged
