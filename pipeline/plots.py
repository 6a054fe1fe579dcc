"""The report's figures: what each one plots (as a table, also written as CSV for `dvc plots`)
and the matplotlib rendering (Agg, small PNGs meant to be embedded in the HTML report).

Every ``*_data`` function is pure (rows in, DataFrame out); every ``*_plot`` function writes
``<name>_<task>.csv`` and ``<name>_<task>.png`` into a folder and returns the PNG's path, or
returns None (and removes stale files of that name) when there is nothing to plot.

Scores and gains are in percent / percentage points, as the paper reports them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from pipeline.methods import interference_pairs, swept_variants  # noqa: E402

METRIC_LABELS = {"accuracy": "accuracy", "uas": "UAS", "las": "LAS", "f1": "F1"}
# Which methods each figure shows comes from the method registry; which metrics, from the tasks.
SPARSITY_METHODS = tuple(swept_variants())  # lt-sft, lt-sft-task-only, rand-sft
INTERFERENCE_PAIRS = tuple(interference_pairs())  # (label, composed variant, its task-only counterpart)
FIGSIZE = (6.0, 3.5)
DPI = 100
COLOURS = {"lt-sft": "#1f77b4", "lt-sft-task-only": "#7fb3df", "rand-sft": "#d62728",
           "sparse": "#1f77b4", "dense": "#ff7f0e"}


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics the task reports, headline last (dp: UAS, LAS); () for a task this code
    base does not know (its rows are still shown)."""
    from pipeline.tasks import TASKS

    return TASKS[task].reported_metrics() if task in TASKS else ()


def headline_metric(task: str, rows: Iterable[Mapping[str, Any]] = ()) -> str | None:
    """The metric the figures use: the task's headline (LAS for dp), else the last metric
    (alphabetically) that the task's rows carry."""
    if task_metrics(task):
        return task_metrics(task)[-1]
    found = sorted({r["metric"] for r in rows if r.get("task") == task})
    return found[-1] if found else None


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _frame(rows: Iterable[Mapping[str, Any]], task: str, metric: str | None) -> pd.DataFrame:
    picked = [dict(r) for r in rows if r.get("task") == task and r.get("metric") == metric
              and r.get("value") is not None and not _isnan(r.get("value"))]
    return pd.DataFrame(picked)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _legend_below(ax: Any, ncol: int) -> None:
    """The legend under the x-axis label, where it cannot hide data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize="small", frameon=False)


def format_k(k: float) -> str:
    """10000 → 10k, 1500000 → 1.5M."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if k >= size:
            return f"{k / size:.3g}{suffix}"
    return f"{k:.0f}"


# --- sparsity sweep -------------------------------------------------------------------------

def sparsity_data(rows: Iterable[Mapping[str, Any]], task: str) -> pd.DataFrame:
    """Columns k, method, score: the mean zero-shot headline score (percent) over target
    languages for each sparse method at each task-diff K. Points come from every row that
    carries a K (the sparsity sweep's and the main evaluation's). Only the target languages
    present at every point are averaged, so that the points stay comparable."""
    rows = list(rows)
    frame = _frame(rows, task, headline_metric(task, rows))
    columns = ["k", "method", "score"]
    if frame.empty or "k" not in frame:
        return pd.DataFrame(columns=columns)
    frame = frame[frame["method"].isin(SPARSITY_METHODS) & frame["k"].notna()]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(k=frame["k"].astype("int64"))
    per_lang = frame.groupby(["method", "k", "lang"], as_index=False)["value"].mean()
    lang_sets = [set(group["lang"]) for _, group in per_lang.groupby(["method", "k"])]
    common = set.intersection(*lang_sets)
    if common:
        per_lang = per_lang[per_lang["lang"].isin(common)]
    out = per_lang.groupby(["method", "k"], as_index=False)["value"].mean()
    out["score"] = out.pop("value") * 100.0
    order = {m: i for i, m in enumerate(SPARSITY_METHODS)}
    out = out.sort_values(["method", "k"], key=lambda s: s.map(order) if s.name == "method" else s)
    return out[columns].reset_index(drop=True)


def sparsity_plot(rows: Iterable[Mapping[str, Any]], task: str, out_dir: Path) -> Path | None:
    """Score vs K (log x-axis); None when fewer than two distinct K values."""
    rows = list(rows)
    csv, png = out_dir / f"sparsity_{task}.csv", out_dir / f"sparsity_{task}.png"
    data = sparsity_data(rows, task)
    if data["k"].nunique() < 2:
        _remove(csv, png)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    data.to_csv(csv, index=False, float_format="%.4f")
    metric = metric_label(headline_metric(task, rows) or "score")
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    for method in SPARSITY_METHODS:
        points = data[data["method"] == method]
        if not points.empty:
            ax.plot(points["k"], points["score"], marker="o", label=method, color=COLOURS.get(method))
    ks = sorted(data["k"].unique())
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([format_k(k) for k in ks])
    ax.set_xlabel("K: entries the task diff may change (log scale)")
    ax.set_ylabel(f"mean {metric} (%)")
    ax.set_title(f"{task.upper()}: zero-shot {metric} vs. sparsity")
    ax.grid(True, alpha=0.3)
    _legend_below(ax, ncol=3)
    return _save(fig, png)


# --- interference ---------------------------------------------------------------------------

def interference_data(rows: Iterable[Mapping[str, Any]], task: str) -> pd.DataFrame:
    """Columns lang, diffs, gain: per target language (and their mean, lang "avg"), the gain
    in points of the headline metric from composing the language diff onto the task diff:
    sparse = lt-sft − lt-sft-task-only, dense = dense-composed − dense-composed-task-only.
    Main-evaluation rows only (no ablation rows)."""
    rows = [r for r in rows if not r.get("ablation")]
    frame = _frame(rows, task, headline_metric(task, rows))
    columns = ["lang", "diffs", "gain"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    table = frame.pivot_table(index="lang", columns="method", values="value", aggfunc="mean")
    parts = []
    for label, composed, alone in INTERFERENCE_PAIRS:
        if composed in table and alone in table:
            gain = ((table[composed] - table[alone]) * 100.0).dropna()
            if not gain.empty:
                gain = pd.concat([gain.sort_index(), pd.Series({"avg": gain.mean()})])
                parts.append(pd.DataFrame({"lang": gain.index, "diffs": label, "gain": gain.to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def interference_plot(rows: Iterable[Mapping[str, Any]], task: str, out_dir: Path) -> Path | None:
    """Grouped bars of the gains per language; None when neither pair of methods is present."""
    rows = list(rows)
    csv, png = out_dir / f"interference_{task}.csv", out_dir / f"interference_{task}.png"
    data = interference_data(rows, task)
    if data.empty:
        _remove(csv, png)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    data.to_csv(csv, index=False, float_format="%.4f")
    metric = metric_label(headline_metric(task, rows) or "score")
    langs = [lang for lang in dict.fromkeys(data["lang"]) if lang != "avg"] + ["avg"]
    groups = [label for label, _, _ in INTERFERENCE_PAIRS if label in set(data["diffs"])]
    width = 0.8 / len(groups)
    x = np.arange(len(langs))
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    legend = {"sparse": "sparse: LT-SFT − LT-SFT task only", "dense": "dense: composed − dense task only"}
    for i, label in enumerate(groups):
        gains = data[data["diffs"] == label].set_index("lang")["gain"].reindex(langs)
        bars = ax.bar(x + (i - (len(groups) - 1) / 2) * width, gains.to_numpy(), width,
                      label=legend[label], color=COLOURS[label])
        if len(langs) * len(groups) <= 24:
            ax.bar_label(bars, fmt="%+.1f", fontsize=7, padding=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(len(langs) - 1.5, color="grey", linewidth=0.8, linestyle=":")  # languages | their mean
    ax.set_xticks(x, langs)
    ax.set_xlabel("target language")
    ax.set_ylabel(f"gain in {metric} (points)")
    ax.set_title(f"{task.upper()}: effect of adding the language diff")
    ax.margins(y=0.2)
    ax.grid(True, axis="y", alpha=0.3)
    _legend_below(ax, ncol=len(groups))
    return _save(fig, png)


# --- overlap --------------------------------------------------------------------------------

def overlap_data(overlap: Mapping[str, Any] | None) -> pd.DataFrame:
    """Columns layer, lang, shared_fraction, ratio_to_chance: per layer and target language,
    the fraction of the task diff's entries in that layer that the language diff changes too
    (shared / task_entries), and how many times more that is than independent random diffs
    would share (shared / expected). NaN where a denominator is 0."""
    columns = ["layer", "lang", "shared_fraction", "ratio_to_chance"]
    if not overlap or not overlap.get("langs"):
        return pd.DataFrame(columns=columns)
    layers = list(overlap["layers"])
    records = []
    for lang in sorted(overlap["langs"]):
        found = overlap["langs"][lang]
        for i, layer in enumerate(layers):
            shared, task_n, expected = found["shared"][i], found["task_entries"][i], found["expected"][i]
            records.append({"layer": layer, "lang": lang,
                            "shared_fraction": shared / task_n if task_n else float("nan"),
                            "ratio_to_chance": shared / expected if expected else float("nan")})
    return pd.DataFrame(records, columns=columns)


def overlap_plot(overlap: Mapping[str, Any] | None, task: str, out_dir: Path) -> Path | None:
    """Heatmap layers × target languages of the shared fraction; None without overlap data."""
    csv, png = out_dir / f"overlap_{task}.csv", out_dir / f"overlap_{task}.png"
    data = overlap_data(overlap)
    if data.empty:
        _remove(csv, png)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    data.to_csv(csv, index=False, float_format="%.6g")
    layers = list(dict.fromkeys(data["layer"]))
    langs = list(dict.fromkeys(data["lang"]))
    fraction = data.pivot(index="layer", columns="lang", values="shared_fraction").reindex(index=layers, columns=langs)
    ratio = data.pivot(index="layer", columns="lang", values="ratio_to_chance").reindex(index=layers, columns=langs)
    values = fraction.to_numpy(dtype=float) * 100.0
    height = max(FIGSIZE[1], 0.32 * len(layers) + 1.3)
    width = min(max(FIGSIZE[0], 1.1 * len(langs) + 2.5), 12.0)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="Blues", vmin=0.0, vmax=max(top, 1e-9))
    for i in range(len(layers)):
        for j in range(len(langs)):
            value, times = values[i, j], ratio.iat[i, j]
            if not np.isfinite(value):
                text = "–"
            else:
                text = f"{value:.1f}%" + (f" (×{times:.1f})" if np.isfinite(times) else "")
            dark = np.isfinite(value) and value > 0.6 * top
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel("target language (its language diff)")
    ax.set_ylabel("layer")
    ax.set_title(f"{task.upper()}: task-diff entries the language diff also changes\n"
                 "(in brackets: × what random diffs would share)", fontsize=10)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("shared / task-diff entries in layer (%)")
    return _save(fig, png)


# --- training curves ------------------------------------------------------------------------

def curves_data(components: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "loss") -> pd.DataFrame:
    """Columns component, phase, step, <metric>: every logged point of ``metric`` of every
    phase of every component (``components``: label → curves as pipeline.core.curves reads
    them, phase → metric → [(step, value)]), in the given order."""
    columns = ["component", "phase", "step", metric]
    records = [{"component": label, "phase": phase, "step": step, metric: value}
               for label, curves in components.items() for phase, metrics in curves.items()
               for step, value in metrics.get(metric, [])]
    return pd.DataFrame(records, columns=columns)


def curves_plot(components: Mapping[str, Mapping[str, Mapping[str, Any]]], family: str, out_dir: Path,
                metric: str = "loss") -> Path | None:
    """``metric`` against step for one family of components (language diffs, task adapters,
    …): one line per component and phase (a run's earlier phases dashed, e.g. LT-SFT's
    phase 1); None when no component logged it."""
    slug = re.sub(r"[^a-z0-9]+", "-", family.lower()).strip("-")
    csv, png = out_dir / f"curves_{slug}.csv", out_dir / f"curves_{slug}.png"
    data = curves_data(components, metric)
    dev_metric = f"eval_{metric}"
    dev = curves_data(components, dev_metric)
    if data.empty:
        _remove(csv, png)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    data.to_csv(csv, index=False, float_format="%.6g")
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    labels = list(dict.fromkeys(data["component"]))
    colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    lines = 0
    for i, label in enumerate(labels):
        mine = data[data["component"] == label]
        phases = list(dict.fromkeys(mine["phase"]))
        for j, phase in enumerate(phases):
            points = mine[mine["phase"] == phase]
            ax.plot(points["step"], points[metric], color=colours(i % colours.N),
                    linestyle="-" if j == len(phases) - 1 else "--", linewidth=1.2,
                    label=label if len(phases) == 1 else f"{label} {phase}")
            lines += 1
        # The dev score of the same metric, where the run scored one (eval_every; the MLM-head
        # warm-up also at step 0): dots on a dotted line in the component's colour.
        for phase, points in dev[dev["component"] == label].groupby("phase", sort=False):
            ax.plot(points["step"], points[dev_metric], color=colours(i % colours.N), linestyle=":", marker="o",
                    markersize=3, linewidth=1.0, label=f"{label} dev" if len(phases) == 1 else f"{label} {phase} dev")
            lines += 1
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("optimizer step (within each phase)")
    ax.set_ylabel(f"training {metric}" + (" (dots: dev)" if not dev.empty else ""))
    ax.set_title(f"Training {metric}: {family}")
    ax.grid(True, alpha=0.3)
    if lines <= 16:  # beyond that a legend hides the figure; the CSV names every line
        _legend_below(ax, ncol=2)
    return _save(fig, png)
