"""`ltsft bench`: cost figures of LT-SFT's machinery on an mBERT-size model (benchmarks/bench.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchmarks.bench import MBERT_CONFIG, bench_paper_rate, run_benchmark
from benchmarks.throughput import THROUGHPUT_CONFIG, bench_throughput
from pipeline.core.atomic import write_json
from pipeline.core.errors import LtsftError

# (key, label, unit, format) in print order; absent or None values print as "-".
ROWS: list[tuple[str, str, str, str]] = [
    ("maskable_entries", "maskable entries", "", "{:,}"),
    ("k", "K", "", "{:,}"),
    ("selection_seconds", "selection (ours, median)", "s", "{:.2f}"),
    ("selection_extra_peak_mib", "selection (ours) extra peak", "MiB", "{:,.1f}"),
    ("naive_selection_seconds", "selection (naive reference)", "s", "{:.2f}"),
    ("naive_selection_extra_peak_mib", "selection (naive) extra peak", "MiB", "{:,.1f}"),
    ("selection_speedup_vs_naive", "speed-up vs naive", "x", "{:.1f}"),
    ("selection_matches_naive", "same entries as naive", "", "{}"),
    ("selected_count", "selected (ours)", "", "{:,}"),
    ("naive_selected_count", "selected (naive, with ties)", "", "{:,}"),
    ("nnz", "diff entries", "", "{:,}"),
    ("file_bytes", "diff size on disk", "bytes", "{:,}"),
    ("bytes_per_entry", "bytes per entry", "B", "{:.3f}"),
    ("save_seconds", "diff save (median)", "s", "{:.2f}"),
    ("load_apply_seconds", "diff load + apply (median)", "s", "{:.2f}"),
    ("apply_revert_max_abs_err", "apply+revert max |θ-θ0|", "", "{:.2e}"),
    ("dense_step_seconds", "dense step (fused AdamW, Trainer default)", "ms", "{:.1f}"),
    ("sparse_step_seconds", "sparse step (SparseAdamW)", "ms", "{:.1f}"),
    ("sparse_step_over_dense", "sparse / dense step", "x", "{:.3f}"),
    ("sparse_step_over_dense_paired", "sparse / dense, per-round median", "x", "{:.3f}"),
    ("sparse_step_over_dense_min", "sparse / dense, fastest steps", "x", "{:.3f}"),
    ("dense_unfused_step_seconds", "dense step (plain AdamW)", "ms", "{:.1f}"),
    ("sparse_step_over_dense_unfused", "sparse / plain-AdamW dense step", "x", "{:.3f}"),
    ("dense_optimizer_seconds", "  of which optimizer (fused)", "ms", "{:.1f}"),
    ("dense_unfused_optimizer_seconds", "  of which optimizer (plain)", "ms", "{:.1f}"),
    ("sparse_optimizer_seconds", "  of which optimizer (sparse)", "ms", "{:.1f}"),
    ("plain_tokens_per_second", "tagging: plain Trainer tokens/s", "", "{:,.0f}"),
    ("phase1_throughput_over_plain", "tagging: LT-SFT phase 1 / plain", "x", "{:.3f}"),
    ("phase2_throughput_over_plain", "tagging: LT-SFT phase 2 / plain", "x", "{:.3f}"),
    ("mlm_plain_tokens_per_second", "MLM: plain BertForMaskedLM tokens/s", "", "{:,.0f}"),
    ("mlm_phase1_throughput_over_plain", "MLM: LT-SFT phase 1 / plain", "x", "{:.3f}"),
    ("mlm_phase2_throughput_over_plain", "MLM: LT-SFT phase 2 / plain", "x", "{:.3f}"),
    ("torch_version", "torch", "", "{}"),
    ("cpu_count", "CPUs", "", "{}"),
    ("wall_seconds", "total wall time", "s", "{:.1f}"),
]
_MS_KEYS = {key for key, _, unit, _ in ROWS if unit == "ms"}


def _progress(message: str) -> None:
    print(f"[bench] {message} ...", file=sys.stderr, flush=True)


def format_table(figures: dict[str, Any]) -> str:
    """The figures as aligned ``label  value unit`` lines (step times shown in ms)."""
    width = max(len(label) for _, label, _, _ in ROWS)
    lines = []
    for key, label, unit, fmt in ROWS:
        if key not in figures:  # a section that was not run (e.g. --only-throughput)
            continue
        value = figures.get(key)
        if value is None:
            text = "-"
        else:
            text = fmt.format(value * 1000 if key in _MS_KEYS else value)
        lines.append(f"{label:<{width}}  {text:>16} {unit}".rstrip())
    if figures.get("selection_seconds_runs"):
        runs = ", ".join(f"{t:.2f}" for t in figures["selection_seconds_runs"])
        lines.append(f"{'selection (ours) every run':<{width}}  {runs} s")
    for key, label in (("step_setup", "step setup"), ("throughput_setup", "tagging setup"),
                       ("mlm_throughput_setup", "MLM setup")):
        if figures.get(key):
            lines.append(f"{label:<{width}}  {figures[key]}")
    return "\n".join(lines)


# Throughput geometries: "small" (mBERT's vocabulary, a short narrow body: minutes on a CPU)
# and "mbert" (mBERT itself, batch 8 x 256: the paper's language-SFT shape, for GPUs).
GEOMETRIES: dict[str, tuple[dict[str, Any], int]] = {
    "small": (THROUGHPUT_CONFIG, 128),
    "mbert": (MBERT_CONFIG, 256),
}


def run_throughput(geometry: str = "small", bf16: bool = False, rounds: int = 4, timed: int = 8,
                   kinds: tuple[str, ...] = ("tagging", "mlm")) -> dict[str, Any]:
    """Plain Trainer against LT-SFT's phases, tokens/s, for each kind (benchmarks/throughput.py)."""
    if geometry not in GEOMETRIES:
        raise LtsftError(f"--geometry: must be one of {', '.join(GEOMETRIES)} (got {geometry!r})")
    config, seq_len = GEOMETRIES[geometry]
    figures: dict[str, Any] = {}
    for kind in kinds:
        figures.update(bench_throughput(kind, config, seq_len=seq_len, rounds=rounds, timed=timed, bf16=bf16,
                                        progress=_progress))
    return figures


def run(json_out: Path | None, k: int, skip_naive: bool, throughput: bool = True, only_throughput: bool = False,
        geometry: str = "small", bf16: bool = False, rounds: int = 4, timed: int = 8,
        threads: int | None = None) -> dict[str, Any]:
    """Measure everything once, print the table, and write the JSON if asked."""
    if threads is not None:
        # On a machine shared with other jobs, two threads that wait for each other at every
        # parallel region make wall times depend on the scheduler more than on the code.
        import torch

        torch.set_num_threads(threads)
    figures: dict[str, Any] = {}
    if not only_throughput:
        figures.update(run_benchmark(k=k, skip_naive=skip_naive, progress=_progress))
    if throughput or only_throughput:
        figures.update(run_throughput(geometry, bf16, rounds, timed))
        import torch

        figures["throughput_torch_threads"] = torch.get_num_threads()
    print(format_table(figures))
    if json_out is not None:
        write_json(json_out, figures)
    return figures


def run_paper_rate(json_out: Path | None) -> dict[str, Any]:
    _progress("paper-scale language-SFT steps (mBERT geometry, batch 8 x 256)")
    figures = bench_paper_rate()
    print(f"{figures['paper_step_setup']}: {figures['paper_step_seconds']:.2f} s/step "
          f"= {figures['paper_steps_per_second']:.3f} steps/s")
    if json_out is not None:
        write_json(json_out, figures)
    return figures


def run_padding(json_out: Path | None, params: Any) -> dict[str, Any]:
    """Padding shares of the current params' training data, random and length-grouped batches."""
    from benchmarks.padding import demo_padding

    _progress("padding shares: random against length-grouped batches")
    figures = demo_padding(params)
    for key, value in figures.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if json_out is not None:
        write_json(json_out, figures)
    return figures
