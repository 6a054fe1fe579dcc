"""Result rows → the paper-style tables (methods × target languages + average) as HTML.

Rows are dicts {task, method, lang, metric, value, params_lang, params_task}; the report
is a self-contained HTML page (inline CSS, nothing loaded from the network).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

METHOD_ORDER = ["lt-sft-published", "lt-sft", "lt-sft-task-only", "rand-sft", "madx", "madx-task-only",
                "full-ft", "dense-composed", "head-only"]

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ccc; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
.provenance { color: #555; font-size: 0.9em; }
"""


def task_table(rows: Iterable[Mapping[str, Any]], task: str, metric: str) -> pd.DataFrame:
    """Methods as rows, target languages as columns, plus their unweighted average."""
    frame = pd.DataFrame([r for r in rows if r["task"] == task and r["metric"] == metric])
    if frame.empty:
        return frame
    table = frame.pivot_table(index="method", columns="lang", values="value", aggfunc="first")
    table = table[sorted(table.columns)]
    table["avg"] = table.mean(axis=1)
    order = [m for m in METHOD_ORDER if m in table.index] + sorted(set(table.index) - set(METHOD_ORDER))
    return table.loc[order]


def parameter_counts(rows: Iterable[Mapping[str, Any]], task: str) -> pd.DataFrame:
    """Trainable parameters per method: per language component and per task component
    (the largest seen over targets; they are the same for every target)."""
    frame = pd.DataFrame([r for r in rows if r["task"] == task and "params_task" in r])
    if frame.empty:
        return pd.DataFrame()
    return frame.groupby("method")[["params_lang", "params_task"]].max()


def headline_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {method: {lang…, avg}}} for `dvc metrics show`."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task in sorted({r["task"] for r in rows}):
        metric = next(r["metric"] for r in rows if r["task"] == task)
        table = task_table(rows, task, metric)
        out[task] = {method: {lang: round(float(v), 6) for lang, v in values.items()}
                     for method, values in table.to_dict(orient="index").items()}
    return out


def _count(value: Any) -> str:
    """Parameter counts as the paper gives them: 7.7M, 150k, or a dash for none."""
    if value is None or pd.isna(value) or value == 0:
        return "–"
    value = float(value)
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def render_html(rows: Sequence[Mapping[str, Any]], title: str, provenance: Mapping[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for task in sorted({r["task"] for r in rows}):
        metric = next(r["metric"] for r in rows if r["task"] == task)
        scale = 100.0 if metric == "accuracy" else 1.0  # accuracies in percent, as in the paper
        table = task_table(rows, task, metric) * scale
        shown = table.map(lambda v: f"{v:.1f}" if scale == 100.0 else f"{v:.3f}")
        counts = parameter_counts(rows, task)
        if not counts.empty:
            shown["params / language"] = [_count(counts["params_lang"].get(m)) for m in shown.index]
            shown["params / task"] = [_count(counts["params_task"].get(m)) for m in shown.index]
        parts.append(f"<h2>{html.escape(task.upper())}: zero-shot {html.escape(metric)} on target languages</h2>")
        parts.append(shown.to_html(border=0, index_names=False))
    items = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in provenance.items())
    parts.append(f"<div class='provenance'><h2>Provenance</h2><ul>{items}</ul></div></body></html>")
    return "\n".join(parts)
