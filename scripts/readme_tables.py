"""Print a finished run's report tables and Claims as Markdown, for the README.

The numbers are the report's own (pipeline.report: the same rows, the same mean ± sd over
seeds, the same bold rule and the same claims), only rendered as Markdown instead of HTML, so
the README's tables are copied from a run, never typed. Run it in the run's working copy,
after `dvc repro`:

    python scripts/readme_tables.py            # every task, then the claims
    python scripts/readme_tables.py --results DIR
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.claims import RULE
from pipeline.plots import metric_label
from pipeline.report import (
    PARAM_COLUMNS,
    _bold,
    _main,
    cell_text,
    format_count,
    parameter_counts,
    report_claims,
    task_metrics,
    task_stats,
    verdict_text,
)
from stages.report import read_rows


def _cell(stats, method: str, column: str, bold: bool) -> str:
    if pd.isna(stats.mean.at[method, column]):  # a method without this language
        return "–"
    text = cell_text(stats, method, column)
    return f"**{text}**" if bold else text


def task_markdown(rows: Sequence[Mapping[str, Any]], task: str) -> str:
    out = []
    for metric in task_metrics(rows, task):
        stats = task_stats(rows, task, metric)
        if stats.mean.empty:
            continue
        bold = _bold(stats)
        counts = parameter_counts(rows, task)
        columns = list(stats.mean.columns)
        n = int(stats.n.max().max())
        out.append(f"**{task.upper()} {metric_label(metric)} (%), mean ± sd over {n} seeds**"
                   if n > 1 else f"**{task.upper()} {metric_label(metric)} (%)**")
        out.append("")
        params = {column: what for column, what in PARAM_COLUMNS.items() if column in counts.columns}
        head = ["method", *columns, *(f"params / {what}" for what in params.values())]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for method in stats.mean.index:
            cells = [_cell(stats, method, c, bool(bold.at[method, c])) for c in columns]
            sizes = [format_count(counts.at[method, column] if method in counts.index else None) for column in params]
            out.append("| " + " | ".join([f"`{method}`", *cells, *sizes]) + " |")
        out.append("")
    return "\n".join(out)


def claims_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    claims = report_claims(rows)
    out = ["| claim | compares | tasks | n | mean diff (points) | std. error | verdict |", "|---|---|---|---|---|---|---|"]
    for claim in claims:
        mean = "–" if claim.mean_diff is None else f"{claim.mean_diff:+.2f}"
        stderr = "–" if claim.stderr is None else f"{claim.stderr:.2f}"
        verdict = verdict_text(claim)
        out.append(f"| {claim.statement} | {claim.compares} | {', '.join(claim.tasks) or '–'} | {claim.n} | {mean} | "
                   f"{stderr} | **{verdict}** |")
    out += ["", f"Rule: {RULE}."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="The results folder (default: results).")
    args = parser.parse_args()
    files = sorted(p for p in args.results.glob("*/**/*.json") if p.name != "overlap.json")
    rows = [row for path in files for row in read_rows(path)]
    for task in sorted({r["task"] for r in _main(rows)}):
        print(task_markdown(rows, task))
    print(claims_markdown(rows))


if __name__ == "__main__":
    main()
