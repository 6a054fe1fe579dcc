"""Measurements behind `ltsft bench`: is LT-SFT's machinery cheap at mBERT scale?

Four claims of this reproduction are about cost, not accuracy, and each is checked here on
a randomly initialised model of the real size (weights do not matter for cost):
1. the global top-K selection (pipeline/methods/lt_sft/selection.py) is fast and needs little memory,
   unlike the reference's copy of every |Δ| into a Python list (``naive_select_top_k``);
2. both select the same entries (up to how ties at the threshold are broken);
3. a diff of K entries costs < 8 bytes per entry on disk, loads and applies quickly, and
   apply + revert gives θ0 back;
4. a phase-2 step (SparseAdamW over ~8% of the entries) is no slower than a dense step.
Every function takes the model configuration and K as arguments so the tests can run
them on a tiny model in seconds.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from pipeline.methods.lt_sft.lottery import freeze_layer_norms
from pipeline.methods.lt_sft.selection import magnitude_scorer, select_top_k
from pipeline.formats.sparse_diff import SparseDiff
from pipeline.core.parameters import maskable_parameter_names, restore, snapshot
from pipeline.core.sparse_adamw import SparseAdamW

PAPER_K = 14_155_776  # the paper's task K: ~8% of mBERT's maskable entries

# mBERT (bert-base-multilingual-cased) dimensions.
MBERT_CONFIG: dict[str, Any] = dict(
    vocab_size=119547, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
)
# A small BERT for the training-step comparison: big enough that the step is dominated by
# real work rather than Python overhead, small enough to time 20+ steps in seconds.
MBERT_CONFIG_MLM: dict[str, Any] = dict(
    vocab_size=119_547, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512,
)
STEP_CONFIG: dict[str, Any] = dict(
    vocab_size=30000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=1024, max_position_embeddings=512, type_vocab_size=2,
)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MIB = 1024.0  # /proc reports KiB


# --------------------------------------------------------------------------- measuring
@dataclass
class Measurement:
    """Wall time and extra peak resident memory of one block; filled in when it exits."""

    seconds: float = 0.0
    extra_peak_mib: float | None = None
    method: str = ""  # "clear_refs" (kernel peak counter), "sampler" or "unavailable"


def _status_kib(field: str) -> int | None:
    """One ``/proc/self/status`` field in KiB (None where /proc is missing: not Linux)."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so VmHWM afterwards is this block's peak."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the OS, so that the baseline RSS
    does not include memory the block could reuse without it showing as growth."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RssSampler:
    """Fallback when clear_refs is not writable: poll VmRSS from a thread every ~5 ms.

    It can miss short peaks, and a C call that holds the GIL starves it, hence only a fallback.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_kib = _status_kib("VmRSS") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS") or 0)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _status_kib("VmRSS") or 0)


@contextlib.contextmanager
def measure() -> Iterator[Measurement]:
    """Time a block and measure how far its resident memory rose above the start.

    ``with measure() as m: ...`` then read ``m.seconds`` and ``m.extra_peak_mib``.
    """
    _release_free_memory()
    result = Measurement()
    before = _status_kib("VmRSS")
    use_hwm = before is not None and _reset_peak_rss()
    sampler = _RssSampler() if before is not None and not use_hwm else None
    with sampler or contextlib.nullcontext():
        start = time.perf_counter()
        try:
            yield result
        finally:
            result.seconds = time.perf_counter() - start
    if use_hwm:
        peak, result.method = _status_kib("VmHWM"), "clear_refs"
    elif sampler is not None:
        peak, result.method = sampler.peak_kib, "sampler"
    else:
        peak, result.method = None, "unavailable"
    if peak is not None and before is not None:
        result.extra_peak_mib = max(0, peak - before) / _MIB


# --------------------------------------------------------------------------- states
def build_model(config: Mapping[str, Any], seed: int = 0) -> BertModel:
    """A randomly initialised BertModel (with pooler, like mBERT's checkpoint)."""
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**config), add_pooling_layer=True)
    return model.eval()


def perturbed(
    theta0: Mapping[str, torch.Tensor], std: float = 1e-3, seed: int = 1
) -> dict[str, torch.Tensor]:
    """θ1 = θ0 + N(0, std²): a stand-in for a fine-tuned state, the same on every run."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + std * torch.randn(value.shape, generator=generator, dtype=value.dtype)
        for name, value in theta0.items()
    }


# --------------------------------------------------------------------------- selection
def naive_select_top_k(
    theta0: Mapping[str, torch.Tensor], theta1: Mapping[str, torch.Tensor], k: int
) -> tuple[dict[str, torch.Tensor], float]:
    """The reference implementation's selection, kept verbatim as the baseline.

    Every |Δ| goes into one Python list (a 24-byte float object plus an 8-byte pointer per
    entry), numpy partitions a float64 copy of it, and each tensor is masked with
    ``|Δ| >= threshold`` (so ties at the threshold may select more than K).
    Returns the boolean masks and the threshold.
    """
    diffs: list[float] = []
    for name in theta0:
        diffs.extend(torch.abs(theta1[name] - theta0[name]).view(-1).tolist())
    threshold = float(np.partition(diffs, len(diffs) - k)[len(diffs) - k])
    del diffs
    masks = {name: torch.abs(theta1[name] - theta0[name]) >= threshold for name in theta0}
    return masks, threshold


def compare_selections(
    theta0: Mapping[str, torch.Tensor],
    theta1: Mapping[str, torch.Tensor],
    ours: Mapping[str, torch.Tensor],
    naive_masks: Mapping[str, torch.Tensor],
    threshold: float,
    k: int,
) -> dict[str, Any]:
    """Whether our K indices are the naive selection up to tie-breaking.

    They are when ours has exactly K entries, all >= the naive threshold, including every
    entry strictly above it; the naive set then differs only by extra ties at the threshold.
    """
    ours_count = sum(int(idx.numel()) for idx in ours.values())
    naive_count = sum(int(mask.sum()) for mask in naive_masks.values())
    strictly_above = ours_above = 0
    all_at_least = True
    for name in naive_masks:
        delta = torch.abs(theta1[name] - theta0[name]).view(-1)
        strictly_above += int((delta > threshold).sum())
        idx = ours.get(name)
        if idx is not None and idx.numel():
            picked = delta[idx]
            all_at_least = all_at_least and bool((picked >= threshold).all())
            ours_above += int((picked > threshold).sum())
    matches = (
        ours_count == k and all_at_least and ours_above == strictly_above
        and strictly_above <= k <= naive_count
    )
    return {
        "selection_matches_naive": matches,
        "naive_selected_count": naive_count,
        "naive_threshold": threshold,
    }


def measure_repeated(
    action: Callable[[], Any], repeats: int, setup: Callable[[], None] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Run ``action`` ``repeats`` times under ``measure()`` (``setup`` before each, outside
    the measurement); the last result, and the median time, every time, the largest peak.

    On a shared or busy machine (here: another job on the same 2 cores made every
    operation 3-6x slower for seconds at a time) a single time can be several times the
    real cost; the median of a few is far less likely to be.
    """
    costs, result = [], None
    for _ in range(max(1, repeats)):
        result = None  # free the previous result before measuring the next run
        if setup is not None:
            setup()
        with measure() as cost:
            result = action()
        costs.append(cost)
    peaks = [c.extra_peak_mib for c in costs if c.extra_peak_mib is not None]
    return result, {
        "seconds": statistics.median(c.seconds for c in costs),
        "runs": [c.seconds for c in costs],
        "extra_peak_mib": max(peaks) if peaks else None,
        "method": costs[-1].method,
    }


def bench_selection(
    theta0: Mapping[str, torch.Tensor],
    theta1: Mapping[str, torch.Tensor],
    k: int,
    skip_naive: bool = False,
    repeats: int = 3,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Time and peak memory of our top-K (median of ``repeats``) and, unless skipped, of the
    naive one (once: it takes a minute and ~10 GB); returns the figures and our selection
    (per-tensor sorted flat indices)."""
    sizes = {name: value.numel() for name, value in theta0.items()}
    selected, ours = measure_repeated(
        lambda: select_top_k(magnitude_scorer(theta0, theta1), sizes, k), repeats
    )
    figures: dict[str, Any] = {
        "selection_seconds": ours["seconds"],
        "selection_seconds_runs": ours["runs"],
        "selection_extra_peak_mib": ours["extra_peak_mib"],
        "selected_count": sum(int(idx.numel()) for idx in selected.values()),
        "memory_method": ours["method"],
        "naive_selection_seconds": None,
        "naive_selection_extra_peak_mib": None,
        "selection_speedup_vs_naive": None,
        "selection_matches_naive": None,
        "naive_selected_count": None,
        "naive_threshold": None,
    }
    if skip_naive:
        return figures, selected
    with measure() as naive_cost:
        masks, threshold = naive_select_top_k(theta0, theta1, k)
    figures.update(
        naive_selection_seconds=naive_cost.seconds,
        naive_selection_extra_peak_mib=naive_cost.extra_peak_mib,
        selection_speedup_vs_naive=naive_cost.seconds / max(ours["seconds"], 1e-9),
        **compare_selections(theta0, theta1, selected, masks, threshold, k),
    )
    return figures, selected


# --------------------------------------------------------------------------- storage
def bench_storage(
    model: torch.nn.Module,
    theta0: Mapping[str, torch.Tensor],
    theta1: Mapping[str, torch.Tensor],
    selected: Mapping[str, torch.Tensor],
    repeats: int = 3,
) -> dict[str, Any]:
    """Save, load + apply (medians of ``repeats``), and apply/revert exactness of the diff
    of the selected entries. ``model`` must hold θ0; it is not modified (copies are)."""
    values = {name: (theta1[name] - theta0[name]).view(-1)[idx] for name, idx in selected.items()}
    diff = SparseDiff.from_masks(theta0, selected, values, k=sum(int(i.numel()) for i in selected.values()))
    with tempfile.TemporaryDirectory(prefix="ltsft-bench-") as tmp:
        path = Path(tmp) / "diff"
        _, save = measure_repeated(lambda: diff.save(path), repeats)
        file_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        fresh = copy.deepcopy(model)

        def reset() -> None:  # each repeat applies to θ0, as the first does
            restore(fresh, theta0)

        def load_apply() -> SparseDiff:
            loaded = SparseDiff.load(path)
            loaded.apply(fresh)
            return loaded

        loaded, load = measure_repeated(load_apply, repeats, setup=reset)
    loaded.revert(fresh)
    fresh_params = dict(fresh.named_parameters())
    error = max(
        (float((fresh_params[name].detach() - value).abs().max()) for name, value in theta0.items()),
        default=0.0,
    )
    return {
        "save_seconds": save["seconds"],
        "save_extra_peak_mib": save["extra_peak_mib"],
        "load_apply_seconds": load["seconds"],
        "load_apply_extra_peak_mib": load["extra_peak_mib"],
        "nnz": diff.nnz,
        "file_bytes": file_bytes,
        "bytes_per_entry": file_bytes / diff.nnz if diff.nnz else None,
        "apply_revert_max_abs_err": error,
    }


# --------------------------------------------------------------------------- training steps
def random_indices(numel: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted flat indices of a uniformly random ``density`` fraction of ``numel`` entries."""
    count = max(1, round(density * numel))
    return torch.sort(torch.randperm(numel, generator=generator)[:count]).values


def _step_model(config: Mapping[str, Any], seed: int) -> BertForMaskedLM:
    """A small MLM model with LayerNorms frozen, as in every LT-SFT phase."""
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(**config))
    freeze_layer_norms(model)
    return model.train()


@dataclass
class _Arm:
    """One way of training: a model, its optimizer and how to clip before stepping."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    clip: list[torch.nn.Parameter]  # parameters to clip with clip_grad_norm_ (dense arms)
    max_grad_norm: float
    steps: list[float]
    optimizer_steps: list[float]

    def step(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Forward, backward, (clip), optimizer step, zero_grad; records the times."""
        start = time.perf_counter()
        self.model(**batch).loss.backward()
        middle = time.perf_counter()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.clip, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        self.steps.append(end - start)
        self.optimizer_steps.append(end - middle)


def _dense_arm(model: torch.nn.Module, lr: float, max_grad_norm: float, fused: bool | None) -> _Arm:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)
    return _Arm(model, optimizer, params, max_grad_norm, [], [])


def _sparse_arm(model: torch.nn.Module, lr: float, max_grad_norm: float, density: float, seed: int) -> _Arm:
    """LT-SFT phase 2 as pipeline/methods/lt_sft/lottery.py builds it: the maskable tensors restricted to
    ~``density`` of their entries, the head dense; SparseAdamW clips by itself."""
    params = dict(model.named_parameters())
    maskable = maskable_parameter_names(model)
    maskable_set = set(maskable)
    dense = [n for n, p in params.items() if p.requires_grad and n not in maskable_set]
    generator = torch.Generator().manual_seed(seed)
    indices = {params[n]: random_indices(params[n].numel(), density, generator) for n in maskable}
    optimizer = SparseAdamW(
        [params[n] for n in [*maskable, *dense]], lr=lr, weight_decay=0.0,
        max_grad_norm=max_grad_norm, trainable_indices=indices,
    )
    return _Arm(model, optimizer, [], max_grad_norm, [], [])


def bench_steps(
    config: Mapping[str, Any] | None = None,
    density: float = 0.08,
    batch_size: int = 8,
    seq_len: int = 64,
    warmup: int = 3,
    timed: int = 20,
    lr: float = 5e-5,
    max_grad_norm: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Median step time of dense fine-tuning vs LT-SFT phase 2 on the same small MLM model.

    Both arms clip the gradient norm as real runs do (the Trainer's default for dense
    fine-tuning, SparseAdamW's own clipping in phase 2). A third arm uses fused AdamW,
    the Trainer's default optimizer. Arms take turns, in rotating order, on the same
    batch, so drifts in machine speed hit them alike. Besides the ratio of medians, the
    median of per-round ratios (``_paired``) and the ratio of fastest steps (``_min``) are
    reported: when other jobs share the cores for seconds at a time they are steadier.
    """
    config = dict(STEP_CONFIG if config is None else config)
    base = _step_model(config, seed)
    arms = {
        "dense": _dense_arm(copy.deepcopy(base), lr, max_grad_norm, fused=None),
        "dense_fused": _dense_arm(copy.deepcopy(base), lr, max_grad_norm, fused=True),
        "sparse": _sparse_arm(base, lr, max_grad_norm, density, seed),
    }
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, config["vocab_size"], (batch_size, seq_len), generator=generator)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}
    order = list(arms.values())
    for i in range(warmup + timed):
        for arm in order[i % len(order):] + order[: i % len(order)]:
            arm.step(batch)
    steps = {name: arm.steps[warmup:] for name, arm in arms.items()}
    median = {name: statistics.median(times) for name, times in steps.items()}
    fastest = {name: min(times) for name, times in steps.items()}
    median_opt = {name: statistics.median(arm.optimizer_steps[warmup:]) for name, arm in arms.items()}
    # The headline baseline is the dense step a Trainer user gets by default: fused AdamW.
    paired = statistics.median(s / d for s, d in zip(steps["sparse"], steps["dense_fused"]))
    return {
        "step_setup": (
            f"BertForMaskedLM hidden={config['hidden_size']} layers={config['num_hidden_layers']} "
            f"vocab={config['vocab_size']}, batch {batch_size}x{seq_len}, median of {timed} "
            f"after {warmup} warm-up, grad clipping {max_grad_norm}, sparse density {density:.4f}"
        ),
        "dense_step_seconds": median["dense_fused"],
        "sparse_step_seconds": median["sparse"],
        "sparse_step_over_dense": median["sparse"] / median["dense_fused"],
        "sparse_step_over_dense_paired": paired,
        "sparse_step_over_dense_min": fastest["sparse"] / fastest["dense_fused"],
        "dense_step_seconds_min": fastest["dense_fused"],
        "sparse_step_seconds_min": fastest["sparse"],
        "dense_unfused_step_seconds": median["dense"],
        "sparse_step_over_dense_unfused": median["sparse"] / median["dense"],
        "dense_optimizer_seconds": median_opt["dense_fused"],
        "dense_unfused_optimizer_seconds": median_opt["dense"],
        "sparse_optimizer_seconds": median_opt["sparse"],
    }


# --------------------------------------------------------------------------- paper-scale rate
def bench_paper_rate(
    batch_size: int = 8, seq_len: int = 256, warmup: int = 1, timed: int = 3, seed: int = 0,
    device: str | None = None, config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Steps per second of a language-SFT phase-1 step at the paper's scale: mBERT's
    geometry (random weights), batch 8 × 256, 15% of positions masked, LayerNorms frozen,
    the MLM loss on masked positions only and our dense-phase optimizer — the code path
    of `train-lang`. For planning a `paper` run (README); on a GPU when one is present."""
    from pipeline.tasks.mlm import score_masked_positions_only

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = dict(MBERT_CONFIG_MLM if config is None else config)
    model = _step_model(config, seed).to(device)
    score_masked_positions_only(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SparseAdamW(trainable, lr=5e-5, max_grad_norm=1.0)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, config["vocab_size"], (batch_size, seq_len), generator=generator)
    labels = torch.full_like(input_ids, -100)
    masked = torch.rand(input_ids.shape, generator=generator) < 0.15
    labels[masked] = input_ids[masked]
    batch = {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
             "labels": labels.to(device)}
    times = []
    for i in range(warmup + timed):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"paper_step_setup": f"mBERT geometry MLM, batch {batch_size}x{seq_len}, {device}, median of {timed}",
            "paper_step_seconds": step, "paper_steps_per_second": 1.0 / step}


# --------------------------------------------------------------------------- everything
def run_benchmark(
    model_config: Mapping[str, Any] | None = None,
    k: int = PAPER_K,
    skip_naive: bool = False,
    step_config: Mapping[str, Any] | None = None,
    step_density: float | None = None,
    step_kwargs: Mapping[str, Any] | None = None,
    noise_std: float = 1e-3,
    repeats: int = 3,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """All figures of `ltsft bench` as one flat dict (JSON-ready).

    ``step_density`` defaults to K over the big model's maskable entries, the paper's
    density; ``repeats`` is how often the cheap operations are timed (median reported).
    """
    start = time.perf_counter()
    progress("building the model")
    model = build_model(MBERT_CONFIG if model_config is None else model_config)
    theta0 = snapshot(model, maskable_parameter_names(model))
    maskable_entries = sum(value.numel() for value in theta0.values())
    if not 0 < k <= maskable_entries:
        raise ValueError(f"K must be in 1..{maskable_entries} (the maskable entries), got {k}")
    theta1 = perturbed(theta0, noise_std)
    figures: dict[str, Any] = {
        "k": k,
        "maskable_entries": maskable_entries,
        "torch_version": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    progress("selection (ours)" if skip_naive else "selection (ours, then the naive reference: several GB)")
    selection, selected = bench_selection(theta0, theta1, k, skip_naive, repeats)
    figures.update(selection)
    progress("diff save / load + apply")
    figures.update(bench_storage(model, theta0, theta1, selected, repeats))
    del model, theta0, theta1, selected
    progress("training steps (dense vs sparse)")
    density = k / maskable_entries if step_density is None else step_density
    figures.update(bench_steps(step_config, density=density, **dict(step_kwargs or {})))
    figures["wall_seconds"] = time.perf_counter() - start
    return figures
