"""Stage `report`: results/ and curves/ → reports/index.html (the claims' verdicts, the paper's
tables, the ablation plots and the training curves, self-contained), reports/plots/*.png|csv
(also DVC plots) and reports/metrics.json (headline scores and each claim's evidence)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_dir, atomic_file, write_json
from pipeline.report import TaskReport, read_references, render_report, report_claims, report_metrics
from pipeline.core.runs import params_hash
from stages import layout
from pipeline.core.config import Params, UserError

REFERENCES = Path("references/paper.csv")  # published figures for the paper preset (empty until filled)
PLOTS = layout.REPORTS / "plots"  # PNGs: what `dvc plots show` renders
PLOT_DATA = layout.REPORTS / "plot-data"  # the numbers behind each plot, as CSV


def read_skipped(path: Path) -> dict[str, dict[str, str]]:
    """Targets a results file's method was not evaluated on: {method: {lang: reason}}."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("skipped", {}) if isinstance(data, dict) else {}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one results file (older files were a bare list of rows)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else data["rows"]


def read_log(output: Path | str) -> dict[str, Any]:
    """An output's run log (wall time, host, revision), or {} where none was kept (e.g. an
    output pulled from a DVC remote): run facts are never part of an output itself."""
    path = layout.run_log(output)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_curves() -> dict[str, dict[str, Any]]:
    """Every output's training curves (curves/), by the report's family: {family: {label: curves}}."""
    from pipeline.core import curves

    found: dict[str, dict[str, Any]] = {}
    for output in layout.curve_outputs():
        family, label = layout.curve_family(output)
        found.setdefault(family, {})[label] = curves.read(layout.curves_dir(output))
    order = [family for family, _ in layout.CURVE_FAMILIES]
    return dict(sorted(found.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def run(params: Params) -> None:
    rows_by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    components: dict[str, dict[str, float]] = defaultdict(dict)
    evaluation: dict[str, float] = defaultdict(float)
    skipped: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    logs = []
    files = sorted(p for p in layout.RESULTS.glob("*/**/*.json") if p != layout.overlap_file(p.parent.name))
    for path in files:
        for row in read_rows(path):
            rows_by_task[row["task"]].append(row)
        task = path.relative_to(layout.RESULTS).parts[0]
        skipped[task].update(read_skipped(path))
        log = read_log(path)
        evaluation[task] += float(log.get("wall_seconds") or 0)
        for component in log.get("components", []):
            component_log = read_log(component)
            components[task][component] = float(component_log.get("wall_seconds") or 0)
            logs.append(component_log)
        logs.append(log)
    if not rows_by_task:
        raise UserError(f"{layout.RESULTS}: no results to report (run the evaluate stages first)")

    logs = [log for log in logs if log]
    def seen(key: str) -> str:
        return ", ".join(sorted({str(log[key]) for log in logs if key in log})) or "unknown (no run logs)"

    references = read_references(REFERENCES) if REFERENCES.is_file() else []
    common = {
        "preset": params.preset, "model": params.model.name,
        "K (language, task)": f"{params.lang_k:,} / {params.task_k:,}",
        **({"seed": str(params.seed)} if len(params.seeds) == 1 else
           {"seeds": f"{', '.join(map(str, params.seeds))} (data split and θ0: {params.seed})"}),
        "params hash": params_hash(params.raw),
        # From the run logs of the results and the components behind them (runs/): the
        # report is then a function of its inputs, and re-rendering it changes no byte.
        "git revision": seen("git_revision"), "hardware": seen("hardware"),
        "last run finished": max((log["finished"] for log in logs if "finished" in log), default="unknown"),
    }
    reports = []
    for task in sorted(rows_by_task):
        spec = params.tasks.get(task)
        provenance = dict(common)
        if spec is not None:
            provenance["source → targets"] = f"{spec.source} → {', '.join(spec.targets)}"
        train_seconds = sum(components[task].values())
        provenance["wall time"] = (f"{_minutes(train_seconds + evaluation[task])} (training of the "
                                   f"{len(components[task])} components behind this table: {_minutes(train_seconds)}; "
                                   f"evaluation: {_minutes(evaluation[task])})")
        overlap_path = layout.overlap_file(task)
        overlap = json.loads(overlap_path.read_text(encoding="utf-8")) if overlap_path.is_file() else None
        reports.append(TaskReport(task=task, rows=rows_by_task[task], provenance=provenance,
                                  references=[r for r in references if r["task"] == task], overlap=overlap,
                                  skipped=skipped[task]))

    all_rows = [row for rows in rows_by_task.values() for row in rows]
    with atomic_dir(PLOTS) as plots, atomic_dir(PLOT_DATA) as plot_data:
        claims = report_claims(all_rows)  # decided from every row, the sparsity sweep's included
        page = render_report(f"LT-SFT reproduction — preset {params.preset}", reports, plots, curves=read_curves(),
                             claims=claims)
        for csv in plots.glob("*.csv"):
            csv.rename(plot_data / csv.name)
    with atomic_file(layout.REPORTS / "index.html") as handle:
        handle.write(page)
    write_json(layout.REPORTS / "metrics.json", report_metrics(all_rows, claims))
    print(f"{layout.REPORTS / 'index.html'}: {len(all_rows)} result rows from {len(files)} files")

