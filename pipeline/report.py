"""Result rows → the paper-style report: one self-contained HTML page (inline CSS, figures
embedded as base64 PNGs, nothing loaded from the network) plus CSVs for `dvc plots`.

Inputs (the stage `report` gathers them; nothing here knows the results layout):
- result rows, dicts {task, method, lang, metric, value, params_lang, params_task} and
  optionally "seed" (rows of several seeds: the tables show mean ± standard deviation),
  "k" (the task diff's K) and "ablation" (e.g. "sparsity"); values are fractions
  in [0, 1]. Rows with an "ablation" only feed the figures, never the main tables.
- per task: provenance (label → value, shown under the task's tables; an entry "source"
  (or "source → targets", as "en → he, tr")
  names the source language in the captions), reference figures from the paper
  (``read_references``), and optionally the per-layer overlap of the task diff with each
  language diff (see ``pipeline.plots.overlap_data``).

Reference values (``references/paper.csv``) are in percent, as printed in the paper.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import plots
from pipeline.claims import NO_EVIDENCE, NOT_SUPPORTED, RULE, SUPPORTED, Claim, claims_metrics, evaluate_claims
from pipeline.methods import reported_order
from pipeline.plots import metric_label, task_metrics as known_metrics

__all__ = ["METHOD_ORDER", "SPREAD_RULE", "SeedStats", "TaskReport", "report_claims", "report_metrics", "task_table",
           "task_stats", "parameter_counts", "headline_metrics",
           "read_references", "reference_comparison", "render_report", "render_table", "format_count"]

METHOD_ORDER = reported_order()  # the registry's order, each method's composed variant first
REFERENCE_COLUMNS = ("task", "method", "lang", "metric", "value", "source")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 78em; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
nav { font-size: 0.95em; } nav a { margin-right: 1em; }
.intro { color: #333; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-variant-numeric: tabular-nums; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; text-align: right; white-space: nowrap; }
thead th { border-bottom: 1.5px solid #444; border-top: 1.5px solid #444; }
tbody tr:last-child td { border-bottom: 1.5px solid #444; }
tbody tr:nth-child(even) { background: #f6f6f6; }
th:first-child, td:first-child { text-align: left; }
.results td.method { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.95em; }
.results .avg { border-left: 1px solid #bbb; }
.results .params { border-left: 1px solid #bbb; color: #555; }
.results td.params + td.params, .results th.params + th.params { border-left: none; }
.provenance { font-size: 0.85em; color: #444; }
.provenance th { text-align: left; font-weight: normal; color: #666; padding-right: 1.5em; }
.provenance td { text-align: left; white-space: normal; }
.provenance tbody tr:nth-child(even) { background: none; }
.provenance thead th, .provenance tbody tr:last-child td { border: none; }
figure { margin: 0.5em 0; flex: 0 1 600px; } figure.wide { flex: 0 1 auto; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #555; }
.tablenote { font-size: 0.88em; color: #444; margin: 0.2em 0 0.3em; max-width: 50em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.note { font-size: 0.85em; color: #666; }
.pos { color: #1a7f37; } .neg { color: #b3261e; }
.claims td { white-space: normal; } .claims td.verdict { font-weight: 600; white-space: nowrap; }
.claims td.compares { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
.claims td.none { color: #888; font-weight: normal; }
"""


# --- data -----------------------------------------------------------------------------------

def _main(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The main evaluation's rows (not the ablations')."""
    return [r for r in rows if not r.get("ablation")]


def task_title(task: str) -> str:
    """The task's own title (its section heading), or its name for a task this code lacks."""
    from pipeline.tasks import TASKS

    return TASKS[task].title if task in TASKS else task


def _method_order(methods: Iterable[str]) -> list[str]:
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def _usable(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def task_metrics(rows: Iterable[Mapping[str, Any]], task: str) -> list[str]:
    """The metrics a task's tables show: the task's own order for those present in the rows,
    then any other metric the rows carry (alphabetically)."""
    present = {r["metric"] for r in _main(rows) if r.get("task") == task}
    known = [m for m in known_metrics(task) if m in present]
    return known + sorted(present - set(known))


@dataclass(frozen=True)
class SeedStats:
    """A task table over seeds: ``mean``, ``sd`` (sample standard deviation; NaN with one
    seed) and ``n`` (seeds behind the cell), each methods × languages + "avg"."""

    mean: pd.DataFrame
    sd: pd.DataFrame
    n: pd.DataFrame

    @property
    def several(self) -> bool:
        """Whether any cell stands on more than one seed (else the tables look as they always did)."""
        return bool(not self.n.empty and (self.n.max().max() > 1))


_NO_SEED = -1  # rows of results written before rows carried their seed: one seed


def task_stats(rows: Iterable[Mapping[str, Any]], task: str, metric: str) -> SeedStats:
    """``task_table`` with each cell's spread over seeds. A seed's "avg" is its own mean over
    the languages, so the avg column's spread is that of whole runs, not of single cells."""
    picked = [r for r in _main(rows) if r.get("task") == task and r.get("metric") == metric and _usable(r.get("value"))]
    if not picked:
        return SeedStats(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    frame = pd.DataFrame(picked)
    frame["seed"] = frame["seed"].fillna(_NO_SEED) if "seed" in frame else _NO_SEED
    per_seed = frame.pivot_table(index=["method", "seed"], columns="lang", values="value", aggfunc="mean")
    per_seed = per_seed[sorted(per_seed.columns)]
    per_seed["avg"] = per_seed.mean(axis=1, skipna=False)
    grouped = per_seed.groupby(level="method")
    order = _method_order(per_seed.index.get_level_values("method").unique())
    stats = []
    for table in (grouped.mean(), grouped.std(ddof=1), grouped.count()):
        table = table.loc[order]
        table.index.name, table.columns.name = "method", None
        stats.append(table)
    return SeedStats(*stats)


def task_table(rows: Iterable[Mapping[str, Any]], task: str, metric: str) -> pd.DataFrame:
    """Methods × sorted target languages + "avg" (unweighted mean over the languages), values
    as fractions; main rows only. A method missing a language gets NaN there and as its avg
    (an average over fewer languages would not be comparable). With several seeds, the mean
    over seeds (``task_stats``: with the spread); repeated rows of one seed are averaged."""
    return task_stats(rows, task, metric).mean


# The parameter-count columns of a results table, as headed "params / <what>".
PARAM_COLUMNS = {"params_lang": "language", "params_task": "task", "params_shared": "shared (once)"}


def parameter_counts(rows: Iterable[Mapping[str, Any]], task: str) -> pd.DataFrame:
    """Per method: trainable parameters of its language component (params_lang), task
    component (params_task) and, where any method has one, what it trains once for every
    language (params_shared), the largest seen over targets (they are the same for every
    target); main rows only. NaN where a method's rows lack the count; empty when no row does."""
    picked = [r for r in _main(rows) if r.get("task") == task]
    if not any("params_lang" in r or "params_task" in r for r in picked):
        return pd.DataFrame(columns=["params_lang", "params_task"])
    # params_shared: what one method trains once for every language (mad-g's generator); a
    # column only where some row has it.
    columns = ["params_lang", "params_task"] + (["params_shared"] if any("params_shared" in r for r in picked) else [])
    frame = pd.DataFrame([{"method": r["method"], **{column: r.get(column) for column in columns}} for r in picked])
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    counts = frame.groupby("method")[columns].max()
    return counts.loc[_method_order(counts.index)]


def headline_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """For `dvc metrics show`: {key: {method: {lang: v, "avg": v}}}, key = the task, or
    "<task>_<metric>" for a task with several metrics (dp_uas, dp_las); v is the mean over
    seeds. With several seeds also "<key>_sd" (the standard deviation over seeds) and
    "<key>_n" (the seeds behind each value), so that `dvc exp show` compares means and spreads.
    Fractions rounded to 6 digits; missing values (NaN) left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}

    def cells(table: pd.DataFrame) -> dict[str, dict[str, float]]:
        return {method: {lang: round(float(v), 6) for lang, v in values.items() if pd.notna(v)}
                for method, values in table.to_dict(orient="index").items()}

    for task in sorted({r["task"] for r in _main(rows)}):
        metrics = task_metrics(rows, task)
        several = len(set(known_metrics(task)) | set(metrics)) > 1
        for metric in metrics:
            stats = task_stats(rows, task, metric)
            key = f"{task}_{metric}" if several else task
            out[key] = cells(stats.mean)
            if stats.several:
                out[f"{key}_sd"], out[f"{key}_n"] = cells(stats.sd), cells(stats.n)
    return out


def report_claims(rows: Sequence[Mapping[str, Any]]) -> list[Claim]:
    """The paper's claims decided from the rows (pipeline.claims), each task judged on the
    headline metric its figures use (dp: LAS)."""
    tasks = sorted({r["task"] for r in rows})
    return evaluate_claims(rows, {task: plots.headline_metric(task, rows) for task in tasks})


def report_metrics(rows: Sequence[Mapping[str, Any]], claims: Sequence[Claim]) -> dict[str, Any]:
    """reports/metrics.json: the main rows' ``headline_metrics`` and, under "claims", each
    claim's evidence (``pipeline.claims.claims_metrics``) for `dvc exp show`."""
    return headline_metrics([r for r in rows if not r.get("ablation")]) | {"claims": claims_metrics(claims)}


def read_references(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a references CSV (header task,method,lang,metric,value,source; value in percent
    as printed in the paper; lang may be "avg"). An empty or missing file gives []; blank lines
    and lines starting with "#" are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    reader = csv.DictReader(lines)
    missing = set(REFERENCE_COLUMNS[:5]) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))} (want {','.join(REFERENCE_COLUMNS)})")
    out = []
    for number, row in enumerate(reader, start=2):
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}, data line {number}: value {row['value']!r} is not a number") from None
        out.append({key: (row.get(key) or "").strip() for key in REFERENCE_COLUMNS} | {"value": value})
    return out


def reference_comparison(rows: Iterable[Mapping[str, Any]], references: Iterable[Mapping[str, Any]],
                         task: str, metric: str) -> pd.DataFrame:
    """Columns method, lang, ours, paper, delta (percent, points): every reference of this task
    and metric for which we have the same method and language (or "avg")."""
    columns = ["method", "lang", "ours", "paper", "delta", "source"]
    table = task_table(rows, task, metric)
    records = []
    for ref in references:
        if ref.get("task") != task or ref.get("metric") != metric:
            continue
        method, lang = ref.get("method"), ref.get("lang")
        if table.empty or method not in table.index or lang not in table.columns or pd.isna(table.at[method, lang]):
            continue
        ours = float(table.at[method, lang]) * 100.0
        paper = float(ref["value"])
        records.append({"method": method, "lang": lang, "ours": ours, "paper": paper, "delta": ours - paper,
                        "source": ref.get("source", "")})
    if not records:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(records, columns=columns)
    methods = {m: i for i, m in enumerate(_method_order(frame["method"]))}
    langs = {lang: (lang == "avg", lang) for lang in frame["lang"]}
    frame = frame.sort_values(["method", "lang"], key=lambda s: s.map(methods if s.name == "method" else langs))
    return frame.reset_index(drop=True)


# --- formatting -----------------------------------------------------------------------------

def format_count(value: Any) -> str:
    """Parameter counts as the paper gives them: 7.67M, 150.7k, 1.20B; a dash for none (0),
    "n/a" when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if value == 0:
        return "–"
    if value >= 1e9:
        return f"{value / 1e9:.2f}B"
    if value >= 1e6:
        return f"{value / 1e6:.{2 if value < 1e7 else 1 if value < 1e8 else 0}f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _esc(value: Any) -> str:
    return html.escape(str(value))


# How the tables bold a cell when they stand on several seeds (stated under each such table).
SPREAD_RULE = ("cells: mean ± standard deviation over seeds, n = seeds; bold: the best mean of a column, only where "
               "it exceeds the next best mean by more than the sum of their two standard deviations")


def _bold(stats: SeedStats) -> pd.DataFrame:
    """Which cells are bold. One seed everywhere: the best of each column as shown (one
    decimal; ties all bold). Several seeds: the best mean, only where it beats the next best
    by more than their spreads added (SPREAD_RULE; a single-seed cell's spread counts as 0)."""
    if not stats.several:
        shown = (stats.mean * 100.0).round(1)
        return shown.eq(shown.max(axis=0, skipna=True), axis=1) & shown.notna()
    bold = pd.DataFrame(False, index=stats.mean.index, columns=stats.mean.columns)
    for column in stats.mean.columns:
        ranked = stats.mean[column].dropna().sort_values(ascending=False)
        if ranked.empty:
            continue
        best = ranked.index[0]
        if len(ranked) == 1:
            bold.at[best, column] = True
            continue
        second = ranked.index[1]
        spread = sum(float(v) if pd.notna(v) else 0.0 for v in (stats.sd.at[best, column], stats.sd.at[second, column]))
        bold.at[best, column] = bool(ranked.iloc[0] - ranked.iloc[1] > spread)
    return bold


def cell_text(stats: SeedStats, method: str, column: str) -> str:
    """A cell's value: percent with one decimal; with several seeds, ± the standard deviation."""
    mean = float(stats.mean.at[method, column]) * 100.0
    if int(stats.n.at[method, column]) <= 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {float(stats.sd.at[method, column]) * 100.0:.1f}"


def _cell(stats: SeedStats, method: str, column: str) -> str:
    """A cell's HTML: ``cell_text`` and, with several seeds, n."""
    n = int(stats.n.at[method, column])
    return cell_text(stats, method, column) + (f" <small>n={n}</small>" if n > 1 else "")


def verdict_text(claim: Claim) -> str:
    """A claim's verdict as the page words it ("inconclusive at this budget")."""
    if claim.verdict in (SUPPORTED, NOT_SUPPORTED, NO_EVIDENCE):
        return claim.verdict
    return f"{claim.verdict} at this budget"


def render_table(rows: Sequence[Mapping[str, Any]], task: str, metric: str, caption: str = "") -> str:
    """One results table as HTML: methods × target languages + avg, percent with one decimal,
    the best value of each column in bold (ties all bold), then the parameter columns. Over
    several seeds: mean ± standard deviation (n) per cell, and bold by SPREAD_RULE."""
    stats = task_stats(rows, task, metric)
    if stats.mean.empty:
        return ""
    shown = (stats.mean * 100.0).round(1)
    bold = _bold(stats)
    counts = parameter_counts(rows, task)
    with_params = not counts.empty
    head = ["<th scope='col'>method</th>"]
    for column in shown.columns:
        css = " class='avg'" if column == "avg" else ""
        head.append(f"<th scope='col'{css}>{_esc(column)}</th>")
    param_columns = {column: what for column, what in PARAM_COLUMNS.items() if column in counts.columns}
    if with_params:
        head += [f"<th scope='col' class='params'>params / {what}</th>" for what in param_columns.values()]
    body = []
    for method in shown.index:
        cells = [f"<td class='method'>{_esc(method)}</td>"]
        for column in shown.columns:
            value = shown.at[method, column]
            css = " class='avg'" if column == "avg" else ""
            if pd.isna(value):
                cells.append(f"<td{css}>–</td>")
            elif bold.at[method, column]:
                cells.append(f"<td{css}><b>{_cell(stats, method, column)}</b></td>")
            else:
                cells.append(f"<td{css}>{_cell(stats, method, column)}</td>")
        if with_params:
            for column in param_columns:
                count = counts.at[method, column] if method in counts.index else None
                cells.append(f"<td class='params'>{_esc(format_count(count))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # the caption as a paragraph: a <caption> would wrap to the width of a narrow table
    caption_html = f"<p class='tablenote'>{_esc(caption)}</p>" if caption else ""
    return (f"{caption_html}<div class='scroll'><table class='results' data-task='{_esc(task)}' "
            f"data-metric='{_esc(metric)}'><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _render_skipped(skipped: Mapping[str, Mapping[str, str]]) -> str:
    """One line per method that was not evaluated on some targets (its averages show –)."""
    lines = [f"{_esc(method)}: not evaluated on {_esc(lang)} — {_esc(reason)}"
             for method, langs in sorted(skipped.items()) for lang, reason in sorted(langs.items())]
    return "".join(f"<p class='tablenote'>{line}</p>" for line in lines)


def l1_rows(rows: Iterable[Mapping[str, Any]], task: str) -> list[dict[str, Any]]:
    """The L1 ablation as rows render_table reads: each λ as a "method", beside the main
    run's composed LT-SFT (whose λ is lang_sft.l1_lambda)."""
    ablated = [r for r in rows if r.get("task") == task and r.get("ablation") == "l1"]
    if not ablated:
        return []
    relabelled = [dict(r, method=f"{r['method']}, λ = {r['l1_lambda']}", ablation=None) for r in ablated]
    seeds = {r.get("seed") for r in ablated}  # the ablation runs on the first seed: compare with that seed's run
    main = [dict(r, method="lt-sft (main run)") for r in _main(rows) if r.get("task") == task
            and r.get("method") == "lt-sft" and r.get("seed") in seeds]
    return main + relabelled


def _render_l1(rows: Sequence[Mapping[str, Any]], task: str, metric: str | None) -> str:
    table_rows = l1_rows(rows, task)
    if not table_rows or metric is None:
        return ""
    caption = (f"L1 ablation, {metric_label(metric)} (%): every target language's LT-SFT diff retrained with L1 "
               "weight λ and composed with the main run's task diff (the main run's λ is lang_sft.l1_lambda).")
    return "<h3>L1 towards θ0 (language diffs)</h3>" + render_table(table_rows, task, metric, caption)


def _render_comparison(frame: pd.DataFrame, task: str, metric: str) -> str:
    if frame.empty:
        return ""
    body = []
    for record in frame.to_dict(orient="records"):
        sign = "pos" if record["delta"] > 0.05 else "neg" if record["delta"] < -0.05 else ""
        body.append(f"<tr><td>{_esc(record['method'])}</td><td>{_esc(record['lang'])}</td>"
                    f"<td>{record['ours']:.1f}</td><td>{record['paper']:.1f}</td>"
                    f"<td class='{sign}'>{record['delta']:+.1f}</td><td>{_esc(record['source'])}</td></tr>")
    note = (f"{task.upper()} {metric_label(metric)}: ours vs. the paper (percent; Δ = ours − paper, in points). "
            "Our avg is over the languages in the table above, which may differ from the paper's.")
    return (f"<p class='tablenote'>{_esc(note)}</p>"
            f"<div class='scroll'><table class='comparison' data-task='{_esc(task)}' data-metric='{_esc(metric)}'>"
            f"<thead><tr><th>method</th><th>lang</th><th>ours</th>"
            f"<th>paper</th><th>Δ</th><th>source</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _render_claims(claims: Sequence[Claim], rows: Sequence[Mapping[str, Any]]) -> str:
    """The Claims section: one row per claim with its evidence, the verdict and the rule."""
    if not claims:
        return ""
    body = []
    for claim in claims:
        mean = "–" if claim.mean_diff is None else f"{claim.mean_diff:+.2f}"
        stderr = "–" if claim.stderr is None else f"{claim.stderr:.2f}"
        css = {SUPPORTED: "verdict pos", NOT_SUPPORTED: "verdict neg", NO_EVIDENCE: "verdict none"}.get(claim.verdict,
                                                                                                     "verdict")
        verdict = verdict_text(claim)
        body.append(f"<tr data-claim='{_esc(claim.id)}'><td>{_esc(claim.statement)}</td>"
                    f"<td class='compares'>{_esc(claim.compares)}</td><td>{_esc(', '.join(claim.tasks) or '–')}</td>"
                    f"<td>{claim.n}</td><td>{mean}</td><td>{stderr}</td>"
                    f"<td class='{css}'>{_esc(verdict)}</td><td>{_esc(claim.reason)}</td></tr>")
    tasks = sorted({r["task"] for r in rows})
    judged = ", ".join(f"{task.upper()} {metric_label(m)}" for task in tasks if (m := plots.headline_metric(task, rows)))
    note = (f"Each claim is a difference of scores in points, taken per pair of runs matched by task, seed and target "
            f"language (n pairs; claim 1 per task, the others pooled over the tasks listed), on each task's headline "
            f"metric, as in the figures: {judged}. Verdict: {RULE}. Claim 5 compares, per pair, the best smaller K of "
            f"the sparsity sweep (by mean over the pairs) with its largest K.")
    return ("<section id='claims'><h2>Claims</h2>"
            f"<p class='tablenote'>{_esc(note)}</p><div class='scroll'><table class='claims'><thead><tr>"
            "<th>claim</th><th>compares</th><th>tasks</th><th>n</th><th>mean diff (points)</th><th>std. error</th>"
            f"<th>verdict</th><th>note</th></tr></thead><tbody>{''.join(body)}</tbody></table></div></section>")


def _render_provenance(provenance: Mapping[str, Any]) -> str:
    if not provenance:
        return ""
    items = "".join(f"<tr><th scope='row'>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in provenance.items())
    return f"<h3>Provenance</h3><table class='provenance'><tbody>{items}</tbody></table>"


def _figure(path: Path, alt: str, caption: str, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    css = " class='wide'" if wide else ""
    return (f"<figure{css}><img src=\"data:image/png;base64,{data}\" alt=\"{_esc(alt)}\">"
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


# --- the page -------------------------------------------------------------------------------

@dataclass
class TaskReport:
    task: str
    rows: list[dict]
    provenance: dict[str, str] = field(default_factory=dict)
    references: list[dict] = field(default_factory=list)
    overlap: dict | None = None
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> {target: why not evaluated}


def _render_task(report: TaskReport, plots_dir: Path) -> str:
    task = report.task
    rows = [r for r in report.rows if r.get("task") == task]
    parts = [f"<section id='{_esc(task)}'><h2>{_esc(task_title(task))}</h2>"]
    langs = sorted({r["lang"] for r in _main(rows)})
    provenance = report.provenance or {}
    source = provenance.get("source") or str(provenance.get("source → targets", "")).partition(" → ")[0] or None
    route = f"{source} → {', '.join(langs)}" if source else f"to {', '.join(langs)}"
    metrics = task_metrics(rows, task)
    if not metrics:
        parts.append("<p class='note'>No results for this task.</p>")
    for metric in metrics:
        rule = SPREAD_RULE if task_stats(rows, task, metric).several else "best per column in bold"
        caption = (f"{task.upper()}, {metric_label(metric)} (%): zero-shot transfer {route}; "
                   f"{rule}; avg = unweighted mean over the target languages.")
        label = metric_label(metric)
        parts.append(f"<h3>{_esc(label[:1].upper() + label[1:])}</h3>")
        parts.append(render_table(rows, task, metric, caption))
        parts.append(_render_comparison(reference_comparison(rows, report.references, task, metric), task, metric))
    parts.append(_render_skipped(report.skipped))
    headline = plots.headline_metric(task, rows)
    label = metric_label(headline) if headline else "score"
    parts.append(_render_l1(rows, task, headline))
    figures = []
    path = plots.sparsity_plot(rows, task, plots_dir)
    if path:
        figures.append(_figure(path, f"{task} {label} vs K", f"Mean zero-shot {label} over the target languages for "
                               "the sparse methods at each task-diff K (log scale). Points from the sparsity sweep and "
                               "the main evaluation."))
    path = plots.interference_plot(rows, task, plots_dir)
    if path:
        kinds = set(plots.interference_data(rows, task)["diffs"])
        which = " and ".join(k for k in ("sparse (LT-SFT)", "dense") if k.split()[0] in kinds)
        figures.append(_figure(path, f"{task} gain from the language diff", f"Gain in {label} (points) from adding the "
                               f"target language's diff to the task diff, for {which} diffs; below zero, composing "
                               "hurts (interference)."))
    path = plots.overlap_plot(report.overlap, task, plots_dir)
    if path:
        figures.append(_figure(path, f"{task} overlap of task and language diffs", "Per layer, the share of the task "
                               "diff's entries that each target's language diff also changes; in brackets, the "
                               "ratio to what two independent random diffs of the same sizes would share.", wide=True))
    if figures:
        parts.append("<h3>Figures</h3><div class='figures'>" + "".join(figures) + "</div>")
    parts.append(_render_provenance(report.provenance))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _render_curves(curves: Mapping[str, Mapping[str, Any]], plots_dir: Path) -> str:
    """One figure of training loss against step per family of components."""
    figures = []
    for family, components in curves.items():
        path = plots.curves_plot(components, family, plots_dir)
        if path:
            figures.append(_figure(path, f"training loss: {family}", f"{family[:1].upper()}{family[1:]}: training "
                                   "loss (mean over each logging window) against optimizer step, one line per "
                                   "component and phase (earlier phases of a run dashed, e.g. LT-SFT's phase 1); dots: the "
                                   "dev loss, where a run scored one (the MLM-head warm-up from step 0). "
                                   "Every logged curve: `dvc plots show`."))
    if not figures:
        return ""
    return ("<section id='curves'><h2>Training curves</h2><div class='figures'>" + "".join(figures)
            + "</div></section>")


def render_report(title: str, reports: list[TaskReport], plots_dir: Path, intro: str = "",
                  curves: Mapping[str, Mapping[str, Any]] | None = None,
                  claims: Sequence[Claim] | None = None) -> str:
    """The whole page as one self-contained HTML string. Writes into ``plots_dir`` the PNGs
    and the CSVs for `dvc plots`: sparsity_<task>.csv (k, method, score), interference_<task>.csv
    (lang, diffs, gain) and overlap_<task>.csv (layer, lang, shared_fraction, ratio_to_chance),
    each only when there is something to plot; with ``curves`` (family → {component label:
    its curves, as pipeline.core.curves reads them}), curves_<family>.csv (component, phase,
    step, loss) for each family. ``intro`` is plain text (blank lines separate paragraphs).
    The Claims section comes first, from ``claims`` (default: ``report_claims`` of the rows)."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>"]
    for paragraph in (p.strip() for p in intro.split("\n\n")):
        if paragraph:
            parts.append(f"<p class='intro'>{_esc(paragraph)}</p>")
    rows = [row for report in reports for row in report.rows]
    parts.append(_render_claims(report_claims(rows) if claims is None else claims, rows))
    if len(reports) > 1:
        links = " ".join(f"<a href='#{_esc(r.task)}'>{_esc(r.task.upper())}</a>" for r in reports)
        parts.append(f"<nav>Tasks: {links}</nav>")
    parts += [_render_task(report, plots_dir) for report in reports]
    parts += [section for section in [_render_curves(curves or {}, plots_dir)] if section]
    parts.append("</body></html>")
    return "\n".join(parts)
