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
    stage.run(out, k=TINY_K, skip_naive=True, throughput=False)
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


# --------------------------------------------------------------------------- throughput
TINY_THROUGHPUT = dict(TINY_STEP, vocab_size=300)


@pytest.fixture(scope="module")
def throughput() -> dict[str, Any]:
    from benchmarks.throughput import bench_throughput

    figures: dict[str, Any] = {}
    for kind in ("tagging", "mlm"):
        figures.update(bench_throughput(kind, TINY_THROUGHPUT, batch_size=2, seq_len=12, warmup=1, timed=2,
                                        rounds=2, device="cpu"))
    return figures


def test_throughput_keys_and_ratios(throughput: dict[str, Any]) -> None:
    json.dumps(throughput)
    for prefix in ("", "mlm_"):
        plain = throughput[f"{prefix}plain_tokens_per_second"]
        assert plain > 0
        for phase in ("phase1", "phase2"):
            ratio = throughput[f"{prefix}{phase}_throughput_over_plain"]
            # The ratio is the two sides' tokens/s (same tokens per step), not a constant.
            assert ratio == pytest.approx(throughput[f"{prefix}{phase}_tokens_per_second"] / plain)
            assert len(throughput[f"{prefix}{phase}_throughput_over_plain_rounds"]) == 2
    assert "BertForMaskedLM" in throughput["mlm_throughput_setup"]
    assert "L1 0.1" in throughput["mlm_throughput_setup"]  # language diffs' paper setting


def test_step_clock_times_each_optimizer_separately() -> None:
    """The clock keys marks by optimizer instance (one per phase) and ignores the rest."""
    from benchmarks.throughput import StepClock

    param = torch.nn.Parameter(torch.ones(3))
    first, second = torch.optim.SGD([param], lr=0.1), torch.optim.SGD([param], lr=0.1)
    ignored = torch.optim.Adam([param])
    clock = StepClock(lambda opt: isinstance(opt, torch.optim.SGD), "cpu")
    param.grad = torch.ones(3)
    with clock.running():
        for opt in (first, first, ignored, second, first):
            opt.step()
    first.step()  # after the hook is removed
    assert [len(clock.marks[key]) for key in clock.order] == [3, 1]
    assert clock.order == [id(first), id(second)]


def test_lt_sft_side_runs_both_phases_through_train_lt_sft(monkeypatch: pytest.MonkeyPatch) -> None:
    """The LT-SFT side is the real code path: train_lt_sft, two SparseAdamW phases."""
    from benchmarks import throughput as tp

    calls: list[Any] = []
    real = tp.train_lt_sft
    monkeypatch.setattr(tp, "train_lt_sft", lambda *a, **kw: calls.append(a[3]) or real(*a, **kw))
    _, ours = tp.build_models("tagging", TINY_THROUGHPUT, 0)
    features = tp.synthetic_features("tagging", 8, 10, TINY_THROUGHPUT["vocab_size"], 0)
    from transformers import DataCollatorForTokenClassification

    collator = DataCollatorForTokenClassification(tp.synthetic_tokenizer(TINY_THROUGHPUT["vocab_size"]))
    marks = tp.run_lt_sft(ours, features, collator, 4, 2, 0.1, 0.0, 0, "cpu", False)
    assert len(calls) == 1 and calls[0].phase1.steps == calls[0].phase2.steps == 4
    assert [len(m) for m in marks] == [4, 4]


def test_stage_runs_throughput_and_refuses_an_unknown_geometry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from pipeline.core.errors import LtsftError
    from stages import bench as stage

    monkeypatch.setitem(stage.GEOMETRIES, "tiny", (TINY_THROUGHPUT, 10))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(stage, "bench_throughput",
                        lambda kind, config, **kw: calls.append(dict(kw, kind=kind, config=config))
                        or {f"{'mlm_' if kind == 'mlm' else ''}phase1_throughput_over_plain": 1.0})
    out = tmp_path / "bench.json"
    figures = stage.run(out, k=1, skip_naive=True, only_throughput=True, geometry="tiny")
    assert [c["kind"] for c in calls] == ["tagging", "mlm"] and calls[0]["seq_len"] == 10
    assert json.loads(out.read_text()) == figures and "maskable_entries" not in figures
    assert "LT-SFT phase 1 / plain" in capsys.readouterr().out
    with pytest.raises(LtsftError, match="--geometry"):
        stage.run(None, k=1, skip_naive=True, only_throughput=True, geometry="huge")


def test_padding_share_falls_with_length_grouping() -> None:
    """The Trainer's own batches: grouped ones pad less, and each setting is deterministic."""
    import random

    from transformers import DataCollatorForTokenClassification

    from benchmarks.padding import padding_share
    from benchmarks.throughput import synthetic_tokenizer

    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(200)]
    features = [{"input_ids": [7] * n, "attention_mask": [1] * n, "labels": [1] * n} for n in lengths]
    collator = DataCollatorForTokenClassification(synthetic_tokenizer(100))
    random_batches = padding_share(features, collator, 8, 30, 0, group_by_length=False)
    grouped = padding_share(features, collator, 8, 30, 0, group_by_length=True)
    assert grouped["padding_share"] < random_batches["padding_share"] / 2
    assert padding_share(features, collator, 8, 30, 0, group_by_length=True) == grouped
    assert 0 < grouped["padding_share"] < 1
