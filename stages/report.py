"""Stage `report`: every results/**.json row → reports/index.html and reports/metrics.json."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone

from pipeline.atomic import atomic_file, write_json
from pipeline.report import headline_metrics, render_html
from stages import layout
from stages.common import git_revision, params_hash
from stages.config import Params, UserError


def run(params: Params) -> None:
    files = sorted(layout.RESULTS.glob("**/*.json"))
    if not files:
        raise UserError(f"{layout.RESULTS}: no results to report (run the evaluate stages first)")
    rows = [row for path in files for row in json.loads(path.read_text(encoding="utf-8"))]
    provenance = {
        "preset": params.preset, "model": params.model.get("name", ""), "K (language)": params.lang_k,
        "K (task)": params.task_k, "seed": params.seed, "git revision": git_revision(),
        "params hash": params_hash(params.raw), "hardware": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    page = render_html(rows, f"LT-SFT reproduction — preset {params.preset}", provenance)
    with atomic_file(layout.REPORTS / "index.html") as handle:
        handle.write(page)
    write_json(layout.REPORTS / "metrics.json", headline_metrics(rows))
    print(f"{layout.REPORTS / 'index.html'}: {len(rows)} result rows from {len(files)} files")
