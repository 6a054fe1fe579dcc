"""Tests for the paper-style report (pipeline/report.py, pipeline/plots.py): tables, metrics,
references, the self-contained HTML and the CSVs behind its figures."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline import plots
from pipeline.plots import task_metrics as known_metrics
from pipeline.report import (METHOD_ORDER, TaskReport, task_title, format_count, headline_metrics,
                             parameter_counts, read_references, reference_comparison, render_report, render_table,
                             task_table)

REPO = Path(__file__).resolve().parents[1]


def row(method: str, lang: str, value: float, task: str = "pos", metric: str = "accuracy",
        params_lang: int = 0, params_task: int = 1000, **extra) -> dict:
    return {"task": task, "method": method, "lang": lang, "metric": metric, "value": value,
            "params_lang": params_lang, "params_task": params_task} | extra


POS = [
    row("head-only", "tr", 0.50, params_task=150_701), row("head-only", "he", 0.40, params_task=150_701),
    row("lt-sft", "tr", 0.80, params_lang=7_667_712, params_task=7_667_712, k=7_667_712),
    row("lt-sft", "he", 0.70, params_lang=7_667_712, params_task=7_667_712, k=7_667_712),
    row("lt-sft-task-only", "tr", 0.75, params_task=7_667_712, k=7_667_712),
    row("lt-sft-task-only", "he", 0.72, params_task=7_667_712, k=7_667_712),
    row("zzz-extra", "tr", 0.10), row("zzz-extra", "he", 0.10),
    row("aaa-extra", "tr", 0.10), row("aaa-extra", "he", 0.10),
    row("madx", "tr", 0.80, params_lang=7_387_776, params_task=894_528),  # ties lt-sft on tr
    row("madx", "he", 0.60, params_lang=7_387_776, params_task=894_528),
    row("dense-composed", "tr", 0.60, params_lang=117_000_000, params_task=117_000_000),
    row("dense-composed", "he", 0.65, params_lang=117_000_000, params_task=117_000_000),
    row("dense-composed-task-only", "tr", 0.70, params_task=117_000_000),
    row("dense-composed-task-only", "he", 0.64, params_task=117_000_000),
    # the sparsity sweep: never in the tables
    row("lt-sft", "tr", 0.99, k=100_000, ablation="sparsity"),
    row("lt-sft", "he", 0.97, k=100_000, ablation="sparsity"),
]


def dp_rows() -> list[dict]:
    out = []
    for method, uas, las in (("lt-sft", 0.8, 0.7), ("madx", 0.78, 0.72)):
        for lang in ("ar", "tr"):
            out += [row(method, lang, uas, task="dp", metric="uas"), row(method, lang, las, task="dp", metric="las")]
    return out


def results_tables(page: str) -> list[str]:
    return re.findall(r"<table class='results'.*?</table>", page, flags=re.S)


def cells(table_html: str, method: str) -> list[str]:
    found = re.search(rf"<tr><td class='method'>{re.escape(method)}</td>(.*?)</tr>", table_html, flags=re.S)
    assert found, method
    return re.findall(r"<td[^>]*>(.*?)</td>", found.group(1))


# --- tables ---------------------------------------------------------------------------------

def test_task_table_layout_order_and_average() -> None:
    table = task_table(POS, "pos", "accuracy")
    assert list(table.columns) == ["he", "tr", "avg"]
    assert list(table.index) == ["lt-sft", "lt-sft-task-only", "madx", "dense-composed", "dense-composed-task-only",
                                 "head-only", "aaa-extra", "zzz-extra"]
    assert table.at["lt-sft", "tr"] == pytest.approx(0.80)  # the ablation's 0.99 is not in the table
    assert table.at["lt-sft", "avg"] == pytest.approx(0.75)
    assert table.at["head-only", "avg"] == pytest.approx(0.45)


def test_task_table_missing_language_gives_no_average() -> None:
    table = task_table(POS + [row("full-ft", "tr", 0.9)], "pos", "accuracy")
    assert pd.isna(table.at["full-ft", "he"]) and pd.isna(table.at["full-ft", "avg"])
    assert table.at["lt-sft", "avg"] == pytest.approx(0.75)


def test_method_order_covers_every_method() -> None:
    # Derived from the registry (pipeline/methods): the paper's order, BitFit after the floor.
    assert METHOD_ORDER == ["lt-sft-published", "lt-sft", "lt-sft-task-only", "rand-sft", "madx", "madx-task-only",
                            "madx-published", "mad-g", "mad-g-task-only", "mad-g-ls", "full-ft", "dense-composed", "dense-composed-task-only", "head-only",
                            "bitfit"]
    # Derived from the tasks: each task owns its report metrics (headline last) and title.
    assert {task: known_metrics(task) for task in ("pos", "dp", "ner", "nli")} == {
        "pos": ("accuracy",), "dp": ("uas", "las"), "ner": ("f1",), "nli": ("accuracy",)}
    assert task_title("dp") == "Dependency parsing (DP)" and task_title("xyz") == "xyz"


def test_parameter_counts_and_formatting() -> None:
    counts = parameter_counts(POS, "pos")
    assert counts.at["lt-sft", "params_lang"] == 7_667_712
    assert counts.at["head-only", "params_lang"] == 0
    assert counts.at["madx", "params_task"] == 894_528
    assert [format_count(v) for v in (7_667_712, 150_701, 0, 894_528, 117_000_000, 512, None)] == \
        ["7.67M", "150.7k", "–", "894.5k", "117M", "512", "n/a"]
    html = render_table(POS, "pos", "accuracy")
    assert "params / language" in html and "params / task" in html
    assert cells(html, "lt-sft")[-2:] == ["7.67M", "7.67M"]
    assert cells(html, "head-only")[-2:] == ["–", "150.7k"]
    assert cells(html, "madx")[-2:] == ["7.39M", "894.5k"]


def test_no_parameter_columns_without_counts() -> None:
    bare = [{k: v for k, v in r.items() if not k.startswith("params")} for r in POS]
    assert "params / language" not in render_table(bare, "pos", "accuracy")


def test_best_per_column_in_bold_with_ties() -> None:
    html = render_table(POS, "pos", "accuracy")
    lt_sft, madx, task_only = cells(html, "lt-sft"), cells(html, "madx"), cells(html, "lt-sft-task-only")
    # columns: he, tr, avg
    assert task_only[0] == "<b>72.0</b>" and lt_sft[0] == "70.0"     # he: 72.0 best
    assert lt_sft[1] == "<b>80.0</b>" and madx[1] == "<b>80.0</b>"   # tr: a tie, both bold
    assert lt_sft[2] == "<b>75.0</b>" and task_only[2] == "73.5"     # avg: lt-sft 75.0 best
    assert sum("<b>" in c for c in cells(html, "head-only")) == 0


def test_nan_is_a_dash_and_never_bold() -> None:
    html = render_table(POS + [row("full-ft", "tr", 0.95)], "pos", "accuracy")
    full = cells(html, "full-ft")
    assert full[:3] == ["–", "<b>95.0</b>", "–"]
    assert cells(html, "lt-sft")[2] == "<b>75.0</b>"  # avg best ignores full-ft's missing avg


def test_dp_gets_one_table_per_metric(tmp_path: Path) -> None:
    page = render_report("t", [TaskReport("dp", dp_rows(), {})], tmp_path)
    tables = results_tables(page)
    assert [re.search(r"data-metric='(\w+)'", t).group(1) for t in tables] == ["uas", "las"]
    assert "<b>80.0</b>" in tables[0] and "<b>72.0</b>" in tables[1]


def test_headline_metrics_keys_and_values() -> None:
    metrics = headline_metrics(POS + dp_rows())
    assert set(metrics) == {"pos", "dp_uas", "dp_las"}
    assert metrics["pos"]["lt-sft"] == {"he": 0.7, "tr": 0.8, "avg": 0.75}
    assert metrics["dp_las"]["madx"]["avg"] == pytest.approx(0.72)
    assert list(metrics["pos"])[:2] == ["lt-sft", "lt-sft-task-only"]
    with_gap = headline_metrics(POS + [row("full-ft", "tr", 0.123456789)])
    assert with_gap["pos"]["full-ft"] == {"tr": 0.123457}  # NaN (he, avg) left out: valid JSON


# --- references -----------------------------------------------------------------------------

def test_reference_file_in_repo_is_header_only() -> None:
    path = REPO / "references" / "paper.csv"
    assert path.read_text().splitlines()[0] == "task,method,lang,metric,value,source"
    assert read_references(path) == []


def test_read_references(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert read_references(empty) == []
    assert read_references(tmp_path / "missing.csv") == []
    path = tmp_path / "refs.csv"
    path.write_text("task,method,lang,metric,value,source\n\n# a note\npos,lt-sft,avg,accuracy,71.5,Table 2\n")
    assert read_references(path) == [{"task": "pos", "method": "lt-sft", "lang": "avg", "metric": "accuracy",
                                      "value": 71.5, "source": "Table 2"}]
    bad = tmp_path / "bad.csv"
    bad.write_text("task,method,value\npos,lt-sft,1\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_references(bad)


def test_no_references_no_paper_column(tmp_path: Path) -> None:
    page = render_report("t", [TaskReport("pos", POS, {}, [])], tmp_path)
    assert "<th>paper</th>" not in page and "Δ" not in page
    assert "<table class='comparison'" not in page


def test_reference_delta(tmp_path: Path) -> None:
    refs = [{"task": "pos", "method": "lt-sft", "lang": "avg", "metric": "accuracy", "value": 71.5, "source": "T2"},
            {"task": "pos", "method": "lt-sft", "lang": "tr", "metric": "accuracy", "value": 82.0, "source": "T2"},
            {"task": "pos", "method": "madx", "lang": "ja", "metric": "accuracy", "value": 50.0, "source": "T2"},
            {"task": "dp", "method": "lt-sft", "lang": "avg", "metric": "las", "value": 1.0, "source": "T3"}]
    frame = reference_comparison(POS, refs, "pos", "accuracy")
    assert list(frame[["method", "lang"]].itertuples(index=False, name=None)) == [("lt-sft", "tr"), ("lt-sft", "avg")]
    assert frame["delta"].tolist() == pytest.approx([80.0 - 82.0, 75.0 - 71.5])
    page = render_report("t", [TaskReport("pos", POS, {}, refs)], tmp_path)
    comparison = re.search(r"<table class='comparison'.*?</table>", page, flags=re.S).group(0)
    assert "<th>paper</th>" in comparison and "<th>Δ</th>" in comparison
    assert "+3.5" in comparison and "-2.0" in comparison and "ja" not in comparison


# --- the page -------------------------------------------------------------------------------

def full_report(tmp_path: Path) -> tuple[str, Path]:
    rows = POS + [row(m, lang, 0.6, k=k, ablation="sparsity") for k in (100_000, 1_000_000)
                  for m in ("lt-sft-task-only", "rand-sft") for lang in ("he", "tr")]
    overlap = {"layers": ["embeddings", "layer 0"],
               "langs": {"tr": {"lang_entries": [10, 20], "task_entries": [40, 0], "shared": [10, 0],
                                "expected": [2.5, 0.0]},
                         "he": {"lang_entries": [5, 5], "task_entries": [40, 0], "shared": [4, 0],
                                "expected": [2.0, 0.0]}}}
    provenance = {"source": "en", "preset": "demo", "git revision": "abc123 <dirty>"}
    plots_dir = tmp_path / "plots"
    page = render_report("Report & <test>", [TaskReport("pos", rows, provenance, [], overlap),
                                             TaskReport("dp", dp_rows(), {})], plots_dir, intro="Hello.\n\nWorld.")
    return page, plots_dir


def test_html_is_self_contained(tmp_path: Path) -> None:
    page, _ = full_report(tmp_path)
    assert page.startswith("<!doctype html>")
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert not re.search(r"<script[^>]*\bsrc\b", page, flags=re.I)
    assert not re.search(r"<link[^>]*\bhref\b", page, flags=re.I)
    assert "@import" not in page and "url(" not in page
    assert "Report &amp; &lt;test&gt;" in page and "abc123 &lt;dirty&gt;" in page  # escaped
    assert "zero-shot transfer en → he, tr" in page
    assert "<p class='intro'>World.</p>" in page
    other = render_report("t", [TaskReport("pos", POS, {"source → targets": "en → he, tr"})], tmp_path / "o")
    assert "zero-shot transfer en → he, tr" in other


def test_csvs_written_with_their_columns(tmp_path: Path) -> None:
    _, plots_dir = full_report(tmp_path)
    expected = {"sparsity_pos.csv": ["k", "method", "score"], "interference_pos.csv": ["lang", "diffs", "gain"],
                "overlap_pos.csv": ["layer", "lang", "shared_fraction", "ratio_to_chance"]}
    for name, columns in expected.items():
        assert list(pd.read_csv(plots_dir / name).columns) == columns, name
        assert (plots_dir / name.replace(".csv", ".png")).read_bytes()[:4] == b"\x89PNG"
    # dp has one K only (none at all), no dense/sparse pairs, no overlap: nothing written
    assert not any(plots_dir.glob("*_dp.*"))


def test_sparsity_points_and_skip_with_one_k(tmp_path: Path) -> None:
    data = plots.sparsity_data(POS, "pos")
    assert data["k"].unique().tolist() == [100_000, 7_667_712]  # ablation rows and main rows with K
    assert data[(data["method"] == "lt-sft") & (data["k"] == 100_000)]["score"].item() == pytest.approx(98.0)
    assert data[(data["method"] == "lt-sft") & (data["k"] == 7_667_712)]["score"].item() == pytest.approx(75.0)
    assert plots.sparsity_plot(POS, "pos", tmp_path) is not None
    one_k = [r for r in POS if not r.get("ablation")]
    stale = tmp_path / "sparsity_pos.csv"
    assert stale.exists()
    assert plots.sparsity_plot(one_k, "pos", tmp_path) is None
    assert not stale.exists() and not (tmp_path / "sparsity_pos.png").exists()
    page = render_report("t", [TaskReport("pos", one_k, {})], tmp_path / "p")
    assert "vs K" not in page and not (tmp_path / "p" / "sparsity_pos.csv").exists()


def test_sparsity_uses_the_headline_metric(tmp_path: Path) -> None:
    rows = [row("lt-sft", "ar", v, task="dp", metric=m, k=k, ablation="sparsity")
            for k, v in ((10, 0.5), (100, 0.6)) for m in ("uas", "las")]
    rows[0]["value"] = 0.9  # uas at K=10: must not count
    data = plots.sparsity_data(rows, "dp")
    assert data["score"].tolist() == pytest.approx([50.0, 60.0])


def test_interference_gains(tmp_path: Path) -> None:
    _, plots_dir = full_report(tmp_path)
    data = pd.read_csv(plots_dir / "interference_pos.csv")
    gains = {(r.lang, r.diffs): r.gain for r in data.itertuples()}
    assert gains == pytest.approx({("he", "sparse"): -2.0, ("tr", "sparse"): 5.0, ("avg", "sparse"): 1.5,
                                   ("he", "dense"): 1.0, ("tr", "dense"): -10.0, ("avg", "dense"): -4.5})
    assert plots.interference_plot([r for r in POS if not r["method"].startswith(("lt-sft", "dense"))],
                                   "pos", tmp_path / "none") is None


def test_overlap_fractions(tmp_path: Path) -> None:
    _, plots_dir = full_report(tmp_path)
    data = pd.read_csv(plots_dir / "overlap_pos.csv")
    got = {(r.layer, r.lang): (r.shared_fraction, r.ratio_to_chance) for r in data.itertuples()}
    assert got[("embeddings", "tr")] == pytest.approx((0.25, 4.0))
    assert got[("embeddings", "he")] == pytest.approx((0.1, 2.0))
    assert all(pd.isna(v) for v in got[("layer 0", "tr")])  # no task entries, nothing expected
    assert list(data["layer"].unique()) == ["embeddings", "layer 0"]


def test_l1_ablation_table_sits_beside_the_main_run_and_stays_out_of_the_main_tables():
    from pipeline.report import l1_rows

    ablated = [row("lt-sft", lang, value, ablation="l1", l1_lambda=0.0) for lang, value in (("tr", 0.9), ("he", 0.5))]
    rows = POS + ablated
    assert task_table(rows, "pos", "accuracy").at["lt-sft", "tr"] == pytest.approx(0.80)  # main rows only
    table = task_table(l1_rows(rows, "pos"), "pos", "accuracy")
    assert list(table.index) == ["lt-sft (main run)", "lt-sft, λ = 0.0"]
    assert table.at["lt-sft, λ = 0.0", "avg"] == pytest.approx(0.7)
    assert table.at["lt-sft (main run)", "he"] == pytest.approx(0.70)
    assert l1_rows(POS, "pos") == []  # no ablation rows: no table
    page = render_report("t", [TaskReport("pos", rows)], Path("/nonexistent"))
    assert "L1 towards θ0" in page and "λ = 0.0" in page
