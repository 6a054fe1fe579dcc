"""Tests for `ltsft bench` (benchmarks/bench.py, stages/bench.py) on a tiny model: seconds, no timings asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import bench
from pipeline.methods.lt_sft.selection import magnitude_scorer, select_top_k
from pipeline.core.parameters import maskable_parameter_names, snapshot

TINY_MODEL = dict(
    vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
)
TINY_STEP = dict(
    vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
)
TINY_K = 20_000  # of ~53k maskable entries: large enough that file headers stay small per entry

EXPECTED_KEYS = {
    "k", "maskable_entries", "torch_version", "cpu_count", "wall_seconds",
    "selection_seconds", "selection_extra_peak_mib", "selected_count",
    "naive_selection_seconds", "naive_selection_extra_peak_mib", "selection_speedup_vs_naive",
    "selection_matches_naive", "naive_selected_count", "naive_threshold",
    "save_seconds", "load_apply_seconds", "bytes_per_entry", "file_bytes", "nnz",
    "apply_revert_max_abs_err",
    "dense_step_seconds", "sparse_step_seconds", "sparse_step_over_dense",
    "sparse_step_over_dense_paired", "sparse_step_over_dense_min", "selection_seconds_runs",
}


def _tiny(skip_naive: bool = False) -> dict[str, Any]:
    return bench.run_benchmark(
        TINY_MODEL, k=TINY_K, skip_naive=skip_naive, step_config=TINY_STEP,
        step_kwargs=dict(batch_size=2, seq_len=16, warmup=1, timed=3),
    )


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return _tiny()


def test_all_keys_present_and_json_ready(figures: dict[str, Any]) -> None:
    assert EXPECTED_KEYS <= figures.keys()
    json.dumps(figures)  # plain numbers, strings, booleans and nulls only


def test_selection_is_exactly_k_and_matches_naive(figures: dict[str, Any]) -> None:
    assert figures["k"] == TINY_K
    assert figures["selected_count"] == TINY_K
    assert figures["nnz"] == TINY_K
    assert figures["naive_selected_count"] >= TINY_K
    assert figures["selection_matches_naive"] is True


def test_storage_is_compact_and_exact(figures: dict[str, Any]) -> None:
    assert figures["bytes_per_entry"] < 8
    assert figures["file_bytes"] == pytest.approx(figures["bytes_per_entry"] * figures["nnz"])
    assert figures["apply_revert_max_abs_err"] <= 1e-6


def test_figures_are_sane(figures: dict[str, Any]) -> None:
    for key in ("selection_seconds", "naive_selection_seconds", "save_seconds", "load_apply_seconds",
                "dense_step_seconds", "sparse_step_seconds"):
        assert figures[key] > 0
    assert figures["selection_extra_peak_mib"] is not None and figures["selection_extra_peak_mib"] >= 0


def test_skip_naive_leaves_nulls() -> None:
    model = bench.build_model(TINY_MODEL)
    theta0 = snapshot(model, maskable_parameter_names(model))
    skipped, selected = bench.bench_selection(theta0, bench.perturbed(theta0), TINY_K, skip_naive=True)
    for key in ("naive_selection_seconds", "naive_selection_extra_peak_mib",
                "selection_speedup_vs_naive", "selection_matches_naive"):
        assert skipped[key] is None
    assert skipped["selected_count"] == sum(int(i.numel()) for i in selected.values()) == TINY_K


def test_matching_ignores_ties_at_the_threshold() -> None:
    """Naive keeps all four entries tied at the threshold; ours keeps K = 2: still a match."""
    theta0 = {"a": torch.zeros(5)}
    theta1 = {"a": torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0])}
    masks, threshold = bench.naive_select_top_k(theta0, theta1, 2)
    assert threshold == 2.0 and int(masks["a"].sum()) == 4
    ours = select_top_k(magnitude_scorer(theta0, theta1), {"a": 5}, 2)
    assert bench.compare_selections(theta0, theta1, ours, masks, threshold, 2)["selection_matches_naive"]
    wrong = {"a": torch.tensor([1, 4])}  # misses the 3.0 and picks the 1.0
    assert not bench.compare_selections(theta0, theta1, wrong, masks, threshold, 2)["selection_matches_naive"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_measure_sees_a_large_allocation() -> None:
    with bench.measure() as cost:
        block = torch.ones(16 * 1024 * 1024)  # 64 MiB, touched
        del block
    assert cost.seconds >= 0
    assert cost.extra_peak_mib is not None and cost.extra_peak_mib >= 48


def test_stage_prints_table_and_writes_json(
    figures: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from stages import bench as stage

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(stage, "run_benchmark", lambda **kwargs: calls.append(kwargs) or dict(figures))
    out = tmp_path / "bench.json"
    stage.run(out, k=TINY_K, skip_naive=True)
    assert calls[0]["k"] == TINY_K and calls[0]["skip_naive"] is True
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    printed = capsys.readouterr().out
    assert "bytes per entry" in printed and "sparse / dense step" in printed


def test_paper_rate_runs_the_language_sft_step_on_a_small_config():
    from benchmarks.bench import bench_paper_rate

    config = dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)
    figures = bench_paper_rate(batch_size=2, seq_len=16, timed=2, config=config, device="cpu")
    assert figures["paper_step_seconds"] > 0
    assert abs(figures["paper_steps_per_second"] * figures["paper_step_seconds"] - 1) < 1e-9
